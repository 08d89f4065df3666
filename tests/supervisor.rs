//! `warren supervise` and `warren status` with real processes and the real
//! broker: scaling up and down, restarts, crash loops, two supervisors on one
//! pipeline, SIGHUP, and no orphans.

mod common;

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use warren::Producer;

/// Starts `warren supervise` on `file`, logging to `{log}`.
fn supervise(file: &PipelineFile, log: &str, extra: &[&str]) -> ChildGuard {
    supervise_in(file, std::path::Path::new("."), log, extra)
}

/// `warren status --json`.
fn status(file: &PipelineFile) -> Value {
    status_json(file)
}

/// A stage's line of `warren status --json`.
fn stage(status: &Value, name: &str) -> Value {
    status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .cloned()
        .unwrap_or_default()
}

/// Worker pids per stage, from every supervisor of this box.
fn worker_pids(status: &Value, name: &str) -> Vec<u64> {
    let mut pids: Vec<u64> = status["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["stages"].as_array().unwrap().clone())
        .filter(|s| s["name"] == name)
        .flat_map(|s| s["processes"].as_array().unwrap().clone())
        .filter(|p| p["state"] == "running")
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    pids.sort();
    pids
}

fn read_log(file: &PipelineFile, log: &str) -> String {
    std::fs::read_to_string(file.file(log)).unwrap_or_default()
}

/// A pipeline whose one stage, `work`, runs two test workers.
fn two_workers(prefix: &str) -> PipelineFile {
    PipelineFile::new(
        prefix,
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    command: {}
    scale: {{ min: 2, max: 2 }}
",
            worker_cmd("work")
        ),
    )
}

fn worker_cmd(stages: &str) -> String {
    format!("[{}, {stages}]", example_bin("test-worker").display())
}

#[tokio::test]
async fn a_backlog_scales_a_stage_up_and_back_down_without_losing_or_repeating() {
    let file = PipelineFile::new(
        "scale",
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    command: {}
    prefetch: 2
    concurrency: 2
    timeout: 10s
    scale: {{ min: 1, max: 4, backlog_per_worker: 10, idle: 3s }}
",
            worker_cmd("work")
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            stage(&status(&file), "work")["workers"] == 1
        })
        .await
    );

    let producer = Producer::connect(&pipeline).await.unwrap();
    let started = Instant::now();
    for n in 0..240u64 {
        producer
            .send_with_id("work", &format!("m{n}"), &json!({"n": n, "sleep_ms": 100}))
            .await
            .unwrap();
    }
    // Four consumers on the broker: the new workers are consuming.
    let queue = format!("{}.work", file.name);
    let grew = eventually(Duration::from_secs(10), || async {
        queue_state(&connect().await, &queue)
            .await
            .is_some_and(|(_, consumers)| consumers == 4)
    })
    .await;
    let grew_after = started.elapsed();
    eprintln!("reaction: backlog sent to 4 workers consuming in {grew_after:?}");
    assert!(
        grew,
        "did not reach 4 workers\n{}",
        read_log(&file, "supervisor.log")
    );

    let record = file.file("record.txt");
    assert!(
        eventually(Duration::from_secs(60), || async {
            records(&record).len() >= 240
        })
        .await
    );
    let shrank = eventually(Duration::from_secs(15), || async {
        stage(&status(&file), "work")["workers"] == 1
    })
    .await;
    assert!(
        shrank,
        "did not shrink back to 1\n{}",
        read_log(&file, "supervisor.log")
    );
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));

    let mut counts: HashMap<String, u32> = HashMap::new();
    for (_, id, _) in records(&record) {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 240, "every message handled");
    assert!(
        counts.values().all(|c| *c == 1),
        "a scale-down made a message run twice: {counts:?}"
    );
    assert!(read_log(&file, "supervisor.log").contains("scaling down (draining)"));
}

#[tokio::test]
async fn a_killed_worker_is_restarted() {
    let file = two_workers("restart");
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            worker_pids(&status(&file), "work").len() == 2
        })
        .await
    );
    let before = worker_pids(&status(&file), "work");
    let victim = before[0];
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let replaced = eventually(Duration::from_secs(10), || async {
        let now = worker_pids(&status(&file), "work");
        now.len() == 2 && !now.contains(&victim)
    })
    .await;
    assert!(replaced, "{}", read_log(&file, "supervisor.log"));
    assert_eq!(stage(&status(&file), "work")["restarts"], 1);
    assert!(
        worker_pids(&status(&file), "work").contains(&before[1]),
        "the other worker was left alone"
    );
    assert!(read_log(&file, "supervisor.log").contains("killed by signal 9"));
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
    assert!(processes_of(&file.path).is_empty(), "workers left behind");
}

#[tokio::test]
async fn a_program_that_exits_at_once_is_a_crash_loop() {
    let file = PipelineFile::new(
        "crashloop",
        "
pipeline: {name}
stages:
  broken:
    command: [/bin/false]
    scale: { min: 1, max: 5, backlog_per_worker: 1 }
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    // A backlog that would otherwise ask for 5 workers.
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..20 {
        producer.send("broken", &json!({"n": n})).await.unwrap();
    }
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    let failing = eventually(Duration::from_secs(40), || async {
        stage(&status(&file), "broken")["state"] == "failing"
    })
    .await;
    let log = read_log(&file, "supervisor.log");
    assert!(failing, "{log}");
    assert!(log.contains("STAGE FAILING"), "{log}");
    // It shrinks to one slot, restarting with backoff, and stays there
    // despite the backlog.
    let slots = || async {
        status(&file)["supervisors"][0]["stages"][0]["processes"]
            .as_array()
            .map_or(99, Vec::len)
    };
    assert!(eventually(Duration::from_secs(5), || async { slots().await == 1 }).await);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(slots().await, 1, "a failing stage grew");
    }
    assert!(
        stage(&status(&file), "broken")["restarts"]
            .as_u64()
            .unwrap()
            >= 5
    );
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
}

#[tokio::test]
async fn two_supervisors_share_a_stage_within_one_and_a_half_times_the_desired_total() {
    let file = PipelineFile::new(
        "twoboxes",
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    command: {}
    prefetch: 1
    concurrency: 1
    timeout: 10s
    scale: {{ min: 0, max: 8, backlog_per_worker: 10, idle: 30s }}
",
            worker_cmd("work")
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let mut first = supervise(&file, "first.log", &[]);
    let mut second = supervise(&file, "second.log", &[]);
    // Both present on the broker before the work arrives.
    let presence = format!("{}.supervisors", file.name);
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_state(&connect().await, &presence).await == Some((0, 2))
        })
        .await
    );

    // 60 messages of 1.5 s: the stage wants ceil(60 / 10) = 6 workers; each
    // box alone would run up to 8, 16 in all.
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..60u64 {
        producer
            .send("work", &json!({"n": n, "sleep_ms": 1500}))
            .await
            .unwrap();
    }
    let mut peak = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        let total = worker_pids(&status(&file), "work").len();
        peak = peak.max(total);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    first.signal("TERM");
    second.signal("TERM");
    first.wait();
    second.wait();
    eprintln!("two supervisors: peak {peak} workers for a desired 6");
    assert!(
        peak >= 5,
        "they did not approach the desired 6 (peak {peak})"
    );
    assert!(
        peak <= 9,
        "together they ran {peak} workers for a desired 6"
    );
}

#[tokio::test]
async fn sighup_applies_a_new_scale_without_restarting_the_others() {
    let yaml = |max_a: u32| {
        format!(
            "
pipeline: {{name}}
stages:
  a:
    command: {}
    scale: {{ min: {max_a}, max: {max_a} }}
  b:
    command: {}
    scale: {{ min: 1, max: 1 }}
",
            worker_cmd("a"),
            worker_cmd("b")
        )
    };
    let file = PipelineFile::new("sighup", &yaml(1));
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s = status(&file);
            worker_pids(&s, "a").len() == 1 && worker_pids(&s, "b").len() == 1
        })
        .await
    );
    let before = status(&file);
    let (a_before, b_before) = (worker_pids(&before, "a"), worker_pids(&before, "b"));

    // An invalid file is refused and everything keeps running.
    std::fs::write(
        &file.path,
        yaml(3)
            .replace("{name}", &file.name)
            .replace("min: 3", "min: many"),
    )
    .unwrap();
    supervisor.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            read_log(&file, "supervisor.log").contains("keeping the running configuration")
        })
        .await
    );
    assert!(
        read_log(&file, "supervisor.log").contains("scale.min"),
        "the log names the problem"
    );

    std::fs::write(&file.path, yaml(3).replace("{name}", &file.name)).unwrap();
    supervisor.signal("HUP");
    let applied = eventually(Duration::from_secs(10), || async {
        worker_pids(&status(&file), "a").len() == 3
    })
    .await;
    assert!(applied, "{}", read_log(&file, "supervisor.log"));
    let after = status(&file);
    assert!(
        worker_pids(&after, "a").contains(&a_before[0]),
        "a's first worker was not restarted"
    );
    assert_eq!(worker_pids(&after, "b"), b_before, "b was not touched");

    // Stage b removed, stage c added: b drains, c starts, a is untouched.
    let a_now = worker_pids(&after, "a");
    let swapped = yaml(3)
        .replace("{name}", &file.name)
        .replace("\n  b:\n", "\n  c:\n")
        .replace(", b]", ", c]");
    std::fs::write(&file.path, swapped).unwrap();
    let _cleanup_c = Cleanup::pipeline(&file.path, &[]);
    supervisor.signal("HUP");
    let moved = eventually(Duration::from_secs(15), || async {
        let s = status(&file);
        worker_pids(&s, "b").is_empty() && worker_pids(&s, "c").len() == 1
    })
    .await;
    assert!(moved, "{}", read_log(&file, "supervisor.log"));
    assert_eq!(worker_pids(&status(&file), "a"), a_now, "a was not touched");
    // b's worker drains, then exits.
    assert!(
        eventually(Duration::from_secs(30), || async {
            !processes_of(&file.path)
                .iter()
                .any(|pid| b_before.contains(&u64::from(*pid)))
        })
        .await,
        "b's worker exited"
    );
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
}

#[tokio::test]
async fn workers_do_not_outlive_a_killed_supervisor() {
    let file = two_workers("orphans");
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            processes_of(&file.path).len() == 2
        })
        .await
    );
    supervisor.signal("KILL");
    supervisor.wait();
    let killed = Instant::now();
    let gone = eventually(Duration::from_secs(15), || async {
        processes_of(&file.path).is_empty()
    })
    .await;
    eprintln!(
        "workers gone {:?} after the supervisor was killed",
        killed.elapsed()
    );
    assert!(gone, "orphans: {:?}", processes_of(&file.path));
}

/// While a stage's calls fail (its circuit breaker is open), a growing
/// backlog adds no workers: each would only hit the outage too.
#[tokio::test]
async fn a_stage_whose_calls_fail_is_not_scaled_into_the_outage() {
    // Nothing listens on this port: every call fails at once.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let file = PipelineFile::new(
        "outage",
        &format!(
            "
pipeline: {{name}}
stages:
  call:
    http: {{ url: \"http://127.0.0.1:{port}/x\", timeout: 2s }}
    retry: {{ attempts: 100, backoff: [1s] }}
    scale: {{ min: 1, max: 4, backlog_per_worker: 20 }}
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..15 {
        producer.send("call", &json!({"n": n})).await.unwrap();
    }
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    let paused = eventually(Duration::from_secs(30), || async {
        stage(&status(&file), "call")["state"] == "calls failing"
    })
    .await;
    assert!(paused, "{}", read_log(&file, "supervisor.log"));
    // A backlog that would want all four workers.
    for n in 0..400 {
        producer.send("call", &json!({"n": n})).await.unwrap();
    }
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = status(&file);
        assert_eq!(
            worker_pids(&now, "call").len(),
            1,
            "scaled up into the outage: {now}"
        );
    }
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
}

/// A worker's own children (a program it started) stop with it: signals go
/// to its process group.
#[tokio::test]
async fn stopping_a_worker_stops_the_programs_it_started() {
    let marker = format!("9{}", &unique_name("x")[3..].replace('_', ""))
        .chars()
        .filter(char::is_ascii_digit)
        .take(7)
        .collect::<String>();
    let sleeper = format!("sleep 1{marker}");
    let file = PipelineFile::new(
        "children",
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    command: [sh, -c, \"{sleeper} & exec {} work\"]
    scale: {{ min: 1, max: 1 }}
",
            example_bin("test-worker").display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .filter(|cmdline| String::from_utf8_lossy(cmdline).replace('\0', " ").trim() == sleeper)
            .count()
    };
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    assert!(
        eventually(Duration::from_secs(20), || async { running() == 1 }).await,
        "the worker's child never started\n{}",
        read_log(&file, "supervisor.log")
    );
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
    assert!(
        eventually(Duration::from_secs(5), || async { running() == 0 }).await,
        "`{sleeper}` outlived its worker"
    );
}

/// A worker that writes a byte that is not UTF-8 goes on being relayed:
/// its later lines reach the log, and it is never blocked on a full pipe.
#[tokio::test]
async fn output_that_is_not_utf8_is_relayed_and_never_blocks_the_worker() {
    let file = PipelineFile::new("relay", "");
    let marker = file.file("wrote-everything");
    // 20,000 lines (more than a pipe holds) after the bad byte, then a
    // file that says it got there, then the test worker.
    let script = format!(
        "printf 'before \\377\\376 bad\\n' >&2; i=0; while [ $i -lt 20000 ]; do echo \"line $i after the bad byte\" >&2; i=$((i+1)); done; touch {}; exec {} work",
        marker.display(),
        example_bin("test-worker").display()
    );
    std::fs::write(
        &file.path,
        format!(
            "
pipeline: {}
stages:
  work:
    command: [sh, -c, {}]
    scale: {{ min: 1, max: 1 }}
",
            file.name,
            serde_json::to_string(&script).unwrap()
        ),
    )
    .unwrap();
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let mut supervisor = supervise(&file, "supervisor.log", &[]);
    let through = eventually(Duration::from_secs(60), || async { marker.exists() }).await;
    let log = read_log(&file, "supervisor.log");
    assert!(
        through,
        "the worker blocked writing its output\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
    let log = read_log(&file, "supervisor.log");
    assert!(
        log.contains("before \u{fffd}\u{fffd} bad"),
        "{}",
        &log[..log.len().min(3000)]
    );
    assert!(log.contains("line 19999 after the bad byte"));
}

/// Messages waiting in a stage's isolation queue are shown by `warren
/// status` (as `drain` counts them), and so is the state of a stage no
/// supervisor of this box runs.
#[tokio::test]
async fn status_shows_the_isolated_messages_of_a_stage() {
    let file = two_workers("statusiso");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    for n in 0..3 {
        channel
            .basic_publish(
                "".into(),
                warren::names::isolation_queue(&file.name, "work")
                    .as_str()
                    .into(),
                Default::default(),
                format!("{{\"n\":{n}}}").as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    let _ = conn.close(200, "".into()).await;
    let status = status(&file);
    let work = stage(&status, "work");
    assert_eq!(work["isolated"], json!(3), "{status}");
    assert_eq!(work["state"], Value::Null, "{status}");
    let out = warren(&["status", file.path.to_str().unwrap()]);
    let (table, _) = text(&out);
    assert!(table.contains("isolated"), "{table}");
}
