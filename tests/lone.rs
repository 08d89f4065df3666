//! Workers without a supervisor, as a Kubernetes pod runs them: `warren
//! worker` processes of one rate-limited stage share its limit through the
//! broker's consumer count, answer health probes, and drain within the
//! grace period they are given. Real broker, real binary.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use warren::Producer;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py")
}

/// A pipeline whose stage `step` runs the test exec program with
/// `settings`; the program records each message it starts in
/// `record.txt`.
fn pipeline(prefix: &str, settings: &str) -> PipelineFile {
    let file = PipelineFile::new(prefix, "");
    let yaml = format!(
        "
pipeline: {name}
stages:
  step:
    exec: {{ command: [python3, {script}], env: {{ MODE: \"normal\", WARREN_TEST_RECORD: \"{record}\" }} }}
{settings}
",
        name = file.name,
        script = script().display(),
        record = file.file("record.txt").display(),
    );
    std::fs::write(&file.path, yaml).unwrap();
    file
}

/// `warren worker FILE --stage step EXTRA`, alone (no supervisor), logging
/// to `log`.
fn lone_worker(file: &PipelineFile, log: &str, extra: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "step"])
            .args(extra)
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .env_remove("WARREN_SUPERVISOR_SOCKET")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file(&file.file(log)))
            .spawn()
            .expect("start warren worker"),
    )
}

fn read(file: &PipelineFile, name: &str) -> String {
    std::fs::read_to_string(file.file(name)).unwrap_or_default()
}

/// The messages the program started, and by how many processes.
fn started(file: &PipelineFile) -> (usize, usize) {
    let record = read(file, "record.txt");
    let mut pids: Vec<&str> = record
        .lines()
        .filter_map(|line| line.split(' ').nth(2))
        .collect();
    pids.sort();
    pids.dedup();
    (record.lines().count(), pids.len())
}

async fn send(file: &PipelineFile, count: usize) {
    let pipeline = load(&file.path);
    let producer = Producer::connect(&pipeline).await.unwrap();
    for i in 0..count {
        producer
            .send_with_id("step", &format!("m{i}"), &serde_json::json!({}))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn three_lone_workers_hold_the_stage_s_rate_limit_together() {
    let file = pipeline(
        "lonerate",
        "    rate_limit: 30/s\n    prefetch: 10\n    concurrency: 5",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let declared = warren(&["declare", file.path.to_str().unwrap()]);
    assert!(declared.status.success(), "{:?}", text(&declared));
    // Enough for the warm-up and the measured window at 30/s, with room to
    // spare: the queue never runs dry while measuring.
    send(&file, 2400).await;
    let mut workers: Vec<ChildGuard> = (0..3)
        .map(|i| lone_worker(&file, &format!("worker{i}.log"), &[], &[]))
        .collect();
    let logs = || {
        (0..3)
            .map(|i| read(&file, &format!("worker{i}.log")))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    // Warm-up: every worker handles messages and has seen the other two
    // consumers (its share is a third).
    let warm = eventually(Duration::from_secs(60), || async {
        started(&file).1 == 3
            && (0..3).all(|i| read(&file, &format!("worker{i}.log")).contains("taking 1/3"))
    })
    .await;
    assert!(warm, "the three workers did not all start: {}", logs());
    // One more re-read of the consumer count, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (first, _) = started(&file);
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (last, _) = started(&file);
    let seconds = from.elapsed().as_secs_f64();
    let rate = (last - first) as f64 / seconds;
    eprintln!("three lone workers of a 30/s stage: {rate:.2}/s over {seconds:.1}s");
    assert!(
        last < 2400,
        "the queue ran dry while measuring: {last} started"
    );
    assert!(
        (27.0..=33.0).contains(&rate),
        "three lone workers of a 30/s stage started {} messages in {seconds:.1}s: {rate:.1}/s\n{}",
        last - first,
        logs()
    );
    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        assert!(worker.wait().success(), "{}", logs());
    }
}

/// A health client: the status of `GET url`, or none while nothing
/// answers.
async fn status(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn health_probes_say_live_always_and_ready_only_while_consuming() {
    let file = pipeline("lonehealth", "");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    // No broker on port 1: the worker runs, retrying, and is not ready.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut away = lone_worker(
        &file,
        "away.log",
        &["--health", &addr],
        &[
            ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
            ("WARREN_LOG", "json"),
        ],
    );
    let base = format!("http://{addr}");
    let live = eventually(Duration::from_secs(30), || async {
        status(&format!("{base}/healthz")).await == Some(200)
    })
    .await;
    assert!(live, "no /healthz: {}", read(&file, "away.log"));
    assert_eq!(status(&format!("{base}/readyz")).await, Some(503));
    assert_eq!(status(&format!("{base}/other")).await, Some(404));
    away.signal("TERM");
    assert!(away.wait().success(), "{}", read(&file, "away.log"));
    // WARREN_LOG=json: every line is a JSON object, the broker's absence
    // among them.
    let log = read(&file, "away.log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("retrying"))),
        "{log}"
    );

    // With the broker: ready once consuming.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut worker = lone_worker(
        &file,
        "worker.log",
        &["--health", &format!("127.0.0.1:{port}")],
        &[],
    );
    let ready = eventually(Duration::from_secs(60), || async {
        status(&format!("{base}/readyz")).await == Some(200)
    })
    .await;
    assert!(ready, "never ready: {}", read(&file, "worker.log"));
    assert_eq!(status(&format!("{base}/healthz")).await, Some(200));
    worker.signal("TERM");
    assert!(worker.wait().success(), "{}", read(&file, "worker.log"));
}

#[tokio::test]
async fn the_grace_period_is_the_one_given() {
    let file = pipeline("lonegrace", "    timeout: 5m");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let declared = warren(&["declare", file.path.to_str().unwrap()]);
    assert!(declared.status.success(), "{:?}", text(&declared));
    let pipeline = load(&file.path);
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("step", "slow", &serde_json::json!({"sleep_ms": 600_000}))
        .await
        .unwrap();
    let mut worker = lone_worker(&file, "worker.log", &["--grace", "1s"], &[]);
    let holding = eventually(Duration::from_secs(60), || async { started(&file).0 == 1 }).await;
    assert!(holding, "{}", read(&file, "worker.log"));
    worker.signal("TERM");
    assert!(worker.wait().success(), "{}", read(&file, "worker.log"));
    // The stage's timeout is 5m: only the given grace ends the wait.
    let log = read(&file, "worker.log");
    assert!(log.contains("grace period of 1s over"), "{log}");
}

#[test]
fn a_bad_grace_or_health_address_is_named() {
    let file = pipeline("lonebad", "");
    let path = file.path.to_str().unwrap();
    let out = warren_env(
        &["worker", path, "--stage", "step"],
        &[("WARREN_GRACE", "soon")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("WARREN_GRACE=soon"), "{stderr}");
    let out = warren(&["worker", path, "--stage", "step", "--health", "nowhere"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--health"), "{stderr}");
}

#[tokio::test]
async fn a_command_stage_s_own_program_answers_probes_from_warren_health() {
    let file = PipelineFile::new("lonecmd", WORK_LAST);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let record = file.file("record.txt");
    let mut program = ChildGuard(
        Command::new(example_bin("test-worker"))
            .arg("work")
            .env("WARREN_PIPELINE", &file.path)
            .env("WARREN_STAGE", "work")
            .env("WARREN_TEST_RECORD", &record)
            .env("WARREN_HEALTH", format!("127.0.0.1:{port}"))
            .env("AMQP_URL", amqp_url())
            .env_remove("WARREN_SUPERVISOR_SOCKET")
            .stdout(Stdio::null())
            .stderr(log_file(&file.file("program.log")))
            .spawn()
            .expect("start test-worker"),
    );
    let ready = eventually(Duration::from_secs(60), || async {
        status(&format!("{base}/readyz")).await == Some(200)
    })
    .await;
    assert!(ready, "never ready: {}", read(&file, "program.log"));
    assert_eq!(status(&format!("{base}/healthz")).await, Some(200));
    program.signal("TERM");
    assert!(program.wait().success(), "{}", read(&file, "program.log"));
}
