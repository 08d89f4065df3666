//! Schedules (DESIGN.md, *Schedules*) against the real broker, with
//! `warren supervise` processes: a schedule ticking every second for about
//! a minute while the leading supervisor is SIGKILLed twice around ticks
//! fires every tick, each once downstream (ids `{schedule}.{tick}`, checked
//! in a sink file); after ten minutes with no keeper, `missed: once` fires
//! one catch-up tick and `missed: skip` none; `warren schedule` shows the
//! last and next ticks.
//!
//! A tick every second needs a sixth cron field, seconds, which the
//! contract does not have: the supervisors here get
//! `WARREN_TEST_CRON_SECONDS=1`, the documented switch for tests.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::*;
use serde_json::Value;

/// An exec stage that emits `{"tick": ID}` for each message (emitted id
/// `{ID}.0`, so a tick sent twice is written once by the sink).
const TICK_STAGE: &str = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    print(json.dumps({"id": m["id"], "emit": {"tick": m["id"]}}), flush=True)
    print(json.dumps({"id": m["id"], "done": True}), flush=True)
"#;

fn pipeline(schedules: &str, script: &Path) -> String {
    format!(
        "
pipeline: {{name}}
jobs: {{ track: true, keep: 1h }}
schedules:
{schedules}
defaults:
  timeout: 10s
  retry: {{ attempts: 5, backoff: [1s] }}
stages:
  tick:
    exec: [python3, {script}]
    outputs: [results]
  results:
    sink: {{ path: results.jsonl }}
",
        script = script.display()
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `warren supervise FILE --stages STAGES` in `dir` with a tick every
/// second allowed, logging to `log` (appended) beside the file.
fn supervise_seconds(file: &PipelineFile, dir: &Path, log: &str, stages: &str) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", file.path.to_str().unwrap(), "--poll", "500ms"])
            .args(["--stages", stages])
            .env("AMQP_URL", amqp_url())
            .env("WARREN_TEST_CRON_SECONDS", "1")
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file(log)))
            .spawn()
            .expect("start warren supervise"),
    )
}

/// The sink's lines: the tick ids written.
fn written(file: &PipelineFile) -> Vec<String> {
    std::fs::read_to_string(file.file("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("a JSON line");
            value["tick"].as_str().expect("a tick id").to_string()
        })
        .collect()
}

/// `warren status FILE --json`, with a tick every second allowed.
fn status_json(file: &PipelineFile) -> Value {
    let out = warren_env(
        &["status", file.path.to_str().unwrap(), "--json"],
        &[("WARREN_TEST_CRON_SECONDS", "1")],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The pid of the supervisor that leads (holds the keeper token), once
/// one does.
async fn leader(file: &PipelineFile) -> u32 {
    let mut found = None;
    let led = eventually(Duration::from_secs(60), || {
        let status = status_json(file);
        found = status["supervisors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["keeper"]["leader"] == true)
            .and_then(|s| s["pid"].as_u64());
        async move { found.is_some() }
    })
    .await;
    assert!(led, "no keeper leads: {}", status_json(file));
    found.unwrap() as u32
}

/// `every.2026-12-06T04:00:01Z` -> its second since the epoch.
fn second_of(id: &str) -> u64 {
    let text = id.strip_prefix("every.").expect("a tick of `every`");
    let at = chrono::DateTime::parse_from_rfc3339(text).expect("a tick time");
    at.timestamp() as u64
}

#[tokio::test]
async fn every_tick_fires_once_through_two_killed_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tick.py");
    std::fs::write(&script, TICK_STAGE).unwrap();
    // Declared and cleaned up from a five-field twin of the file.
    let every_minute = "  every:\n    cron: \"* * * * *\"\n    stage: tick\n    body: {}\n";
    let file = PipelineFile::new("schedkill", &pipeline(every_minute, &script));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    declare(&load(&file.path)).await;
    let text = std::fs::read_to_string(&file.path)
        .unwrap()
        .replace("\"* * * * *\"", "\"* * * * * *\"");
    std::fs::write(&file.path, text).unwrap();

    let sink_log = file.file("sink.log");
    let _sink = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "results"])
            .env("AMQP_URL", amqp_url())
            .env("WARREN_TEST_CRON_SECONDS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&sink_log))
            .spawn()
            .unwrap(),
    );
    let boxes = [file.file("a"), file.file("b")];
    for dir in &boxes {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut supervisors: Vec<(ChildGuard, usize)> = vec![
        (supervise_seconds(&file, &boxes[0], "a.log", "tick"), 0),
        (supervise_seconds(&file, &boxes[1], "b.log", "tick"), 1),
    ];
    let first = eventually(Duration::from_secs(90), || async {
        !written(&file).is_empty()
    })
    .await;
    assert!(
        first,
        "no tick reached the sink\na.log: {}\nsink.log: {}",
        std::fs::read_to_string(file.file("a.log")).unwrap_or_default(),
        std::fs::read_to_string(&sink_log).unwrap_or_default()
    );
    let started = now_ms();

    for kill in 0..2 {
        tokio::time::sleep(Duration::from_secs(18)).await;
        let pid = leader(&file).await;
        let index = supervisors
            .iter()
            .position(|(child, _)| child.0.id() == pid)
            .unwrap_or_else(|| panic!("the leader {pid} is none of ours"));
        // Around a tick: within the first 50 ms of a second.
        while now_ms() % 1000 > 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (mut killed, box_index) = supervisors.remove(index);
        killed.signal("KILL");
        killed.wait();
        eprintln!("kill {kill}: leader {pid} at {}", now_ms());
        // A new supervisor in its box, so that two stay.
        let log = if box_index == 0 { "a.log" } else { "b.log" };
        supervisors.push((
            supervise_seconds(&file, &boxes[box_index], log, "tick"),
            box_index,
        ));
    }
    tokio::time::sleep(Duration::from_secs(
        60u64.saturating_sub((now_ms() - started) / 1000),
    ))
    .await;

    // Every second from the first tick written to a moment ago.
    let until = now_ms() / 1000 - 3;
    let complete = eventually(Duration::from_secs(60), || async {
        let seconds: BTreeSet<u64> = written(&file).iter().map(|id| second_of(id)).collect();
        let first = *seconds.first().unwrap();
        (first..=until).all(|s| seconds.contains(&s))
    })
    .await;
    let ids = written(&file);
    let seconds: BTreeSet<u64> = ids.iter().map(|id| second_of(id)).collect();
    let first = *seconds.first().unwrap();
    let missing: Vec<u64> = (first..=until).filter(|s| !seconds.contains(s)).collect();
    assert!(
        complete && missing.is_empty(),
        "ticks never fired: {missing:?} (first {first}, until {until})"
    );
    assert!(until - first >= 55, "only {} s of ticks", until - first);
    // Each once downstream.
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a tick written twice: {ids:?}");
    // Each fired by one keeper: a tick is said `fired` in the logs of one
    // supervisor only, except at most one per kill (a keeper killed
    // between recording a tick and saying so).
    let mut said: BTreeMap<String, usize> = BTreeMap::new();
    for log in ["a.log", "b.log"] {
        let text = std::fs::read_to_string(file.file(log)).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" fired: ")) {
            if let Some(job) = line.split("job=").nth(1) {
                let job = job.split_whitespace().next().unwrap_or("").to_string();
                *said.entry(job).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = said.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() <= 2, "ticks fired more than once: {twice:?}");
    // How late the ticks were fired (the keepers' log time of `fired`
    // against the tick), for BENCHMARKS.md; the largest come from the
    // takeovers after the kills.
    let mut late: Vec<i64> = Vec::new();
    for log in ["a.log", "b.log"] {
        let text = std::fs::read_to_string(file.file(log)).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" fired: ")) {
            let logged = line.split_whitespace().next().unwrap_or("");
            let tick = line
                .split("INFO tick ")
                .nth(1)
                .and_then(|t| t.split(' ').next());
            if let (Ok(logged), Some(Ok(tick))) = (
                chrono::DateTime::parse_from_rfc3339(logged),
                tick.map(chrono::DateTime::parse_from_rfc3339),
            ) {
                late.push((logged - tick).num_milliseconds());
            }
        }
    }
    late.sort_unstable();
    let at = |q: f64| late[((late.len() - 1) as f64 * q) as usize];
    eprintln!(
        "schedule ticks: {} fired, lateness p50 {} ms, p99 {} ms, max {} ms (two leaders killed)",
        late.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

#[tokio::test]
async fn after_ten_minutes_down_once_fires_one_catch_up_and_skip_none() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tick.py");
    std::fs::write(&script, TICK_STAGE).unwrap();
    // A daily tick ten minutes ago; the one a day before was fired, and no
    // keeper ran since.
    let tick_s = (now_ms() / 60_000) * 60 - 600;
    let tick = chrono::DateTime::from_timestamp(tick_s as i64, 0).unwrap();
    let cron = tick.format("%M %H * * *").to_string();
    let schedules = format!(
        "  once:\n    cron: \"{cron}\"\n    stage: tick\n    body: {{}}\n    missed: once\n  skip:\n    cron: \"{cron}\"\n    stage: tick\n    body: {{}}\n    missed: skip\n"
    );
    let file = PipelineFile::new("schedmissed", &pipeline(&schedules, &script));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file.path);
    declare(&pipeline).await;
    let conn = connect().await;
    let stream = warren::names::job_stream(&pipeline.name);
    let yesterday = (tick_s - 86_400) * 1000;
    for schedule in ["once", "skip"] {
        let id = format!("schedule-tick.fired.{yesterday}.{schedule}");
        publish_raw(&conn, "", &stream, b"[]", Some(&id)).await;
    }
    let _ = conn.close(200, "".into()).await;

    let _supervisor = supervise_in(&file, file.dir.path(), "supervisor.log", &[]);
    let tick_text = tick.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let caught_up = format!("once.{tick_text}");
    let fired = eventually(Duration::from_secs(90), || async {
        written(&file).contains(&caught_up)
    })
    .await;
    assert!(fired, "no catch-up tick: {:?}", written(&file));
    // `warren schedule` says where each stands: `once` fired the tick,
    // `skip` passed over it; both wait for the same time tomorrow.
    let shown = warren(&["schedule", file.path.to_str().unwrap(), "--json"]);
    assert!(shown.status.success(), "{}", text(&shown).1);
    let rows: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["schedule"] == name)
            .unwrap()
            .clone()
    };
    let tomorrow = (tick_s + 86_400) * 1000;
    assert_eq!(row("once")["last"]["phase"], "fired", "{rows}");
    assert_eq!(row("once")["last"]["job"], caught_up.as_str(), "{rows}");
    assert_eq!(row("skip")["last"]["phase"], "armed", "{rows}");
    assert_eq!(row("skip")["last"]["tick_ms"], tick_s * 1000, "{rows}");
    assert_eq!(row("once")["next"]["tick_ms"], tomorrow, "{rows}");
    assert_eq!(row("skip")["next"]["tick_ms"], tomorrow, "{rows}");
    let listing = text(&warren(&["schedule", file.path.to_str().unwrap()])).0;
    assert!(
        listing.contains("(fired)") && listing.contains("once"),
        "{listing}"
    );
    // The dashboard's overview shows the same.
    let (_server, base) = serve(&file).await;
    let started = std::time::Instant::now();
    let page = loop {
        let page = reqwest::get(format!("{base}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("(fired)") || started.elapsed() > Duration::from_secs(30) {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let shown = page.contains("(fired)");
    assert!(shown, "{page}");
    let section = &page[page
        .find("<h2>Schedules</h2>")
        .expect("a schedules section")..];
    let once = &section[section.find(r#"data-schedule="once""#).unwrap()..];
    let skip = &section[section.find(r#"data-schedule="skip""#).unwrap()..];
    assert!(
        once[..once.find("</tr>").unwrap()].contains("(fired)"),
        "{section}"
    );
    assert!(
        skip[..skip.find("</tr>").unwrap()].contains("none yet"),
        "{section}"
    );
    // And /metrics counts the tick this box's keeper fired.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |schedule: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("warren_schedule_ticks_total{")
                    && l.contains(&format!("schedule=\"{schedule}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(count("once").as_deref(), Some("1"), "{metrics}");
    assert_eq!(count("skip").as_deref(), Some("0"), "{metrics}");
    // Nothing more comes: one line, the catch-up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(written(&file), std::slice::from_ref(&caught_up));
    // The tick is a job of its own, done once its message is written.
    let job = warren(&[
        "job",
        file.path.to_str().unwrap(),
        &caught_up,
        "--wait",
        "30s",
    ]);
    assert!(job.status.success(), "{}", text(&job).0);
}

#[test]
fn the_grading_example_validates_with_its_nightly_schedule() {
    let out = warren(&["validate", "../examples/grading/nightly.yaml"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("schedule nightly: `0 3 * * *` in Europe/Berlin -> lookup, next tick ")
            && stdout.contains(" 03:00:00 CE"),
        "{stdout}"
    );
}

#[tokio::test]
async fn sighup_applies_a_changed_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tick.py");
    std::fs::write(&script, TICK_STAGE).unwrap();
    let nightly = "  hup:\n    cron: \"0 3 * * *\"\n    stage: tick\n    body: {}\n";
    let file = PipelineFile::new("schedhup", &pipeline(nightly, &script));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    declare(&load(&file.path)).await;
    let supervisor = supervise_seconds(&file, file.dir.path(), "supervisor.log", "tick,results");
    let armed = eventually(Duration::from_secs(60), || async {
        std::fs::read_to_string(file.file("supervisor.log"))
            .unwrap_or_default()
            .contains("now the job keeper")
    })
    .await;
    assert!(armed, "no keeper");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(written(&file).is_empty(), "{:?}", written(&file));
    let text = std::fs::read_to_string(&file.path)
        .unwrap()
        .replace("\"0 3 * * *\"", "\"* * * * * *\"");
    std::fs::write(&file.path, text).unwrap();
    supervisor.signal("HUP");
    let ticking = eventually(Duration::from_secs(60), || async {
        written(&file).iter().any(|id| id.starts_with("hup."))
    })
    .await;
    assert!(
        ticking,
        "no tick after SIGHUP: {}",
        std::fs::read_to_string(file.file("supervisor.log")).unwrap_or_default()
    );
}
