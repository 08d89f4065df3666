//! `exec` stages against the real broker and a real program (a Python
//! script speaking the protocol by hand, `tests/support/exec_stage.py`):
//! emits and outputs, interleaved answers, retry with `after`, dead with a
//! reason, and a program that exits, hangs, writes garbage, never reads its
//! stdin, is drained with messages in flight, or loses its worker.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use warren::Producer;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py")
}

/// A pipeline whose stage `step` runs the test program, with `settings`,
/// emitting to the stages `a` and `b` (queues only).
fn pipeline(prefix: &str, settings: &str, mode: &str) -> PipelineFile {
    PipelineFile::new(
        prefix,
        &format!(
            "
pipeline: {{name}}
stages:
  step:
    exec: {{ command: [python3, {script}], env: {{ MODE: \"{mode}\" }} }}
    outputs: [a, b]
{settings}
  a:
    command: [unused]
  b:
    command: [unused]
",
            script = script().display()
        ),
    )
}

/// `warren worker` of `step`, logging to `worker.log`.
fn worker(file: &PipelineFile) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "step"])
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .env("WARREN_TEST_RECORD", file.file("record.txt"))
            .stdout(Stdio::null())
            .stderr(log_file(&file.file("worker.log")))
            .spawn()
            .expect("start warren worker"),
    )
}

fn log(file: &PipelineFile) -> String {
    std::fs::read_to_string(file.file("worker.log")).unwrap_or_default()
}

/// `(id, attempt, pid)` of each message the program started.
fn started(file: &PipelineFile) -> Vec<(String, u32, u32)> {
    std::fs::read_to_string(file.file("record.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            Some((
                parts.next()?.to_string(),
                parts.next()?.parse().ok()?,
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

async fn setup(file: &PipelineFile) -> (Cleanup, Producer) {
    let cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    (cleanup, Producer::connect(&pipeline).await.unwrap())
}

/// Waits until `queue` holds `n` messages; the messages, taken off it.
async fn collect(
    queue: &str,
    n: usize,
    file: &PipelineFile,
) -> Vec<lapin::message::BasicGetMessage> {
    let conn = connect().await;
    let arrived = eventually(Duration::from_secs(60), || async {
        queue_state(&conn, queue).await.map(|q| q.0 as usize) >= Some(n)
    })
    .await;
    assert!(arrived, "{queue} never held {n} messages\n{}", log(file));
    drain_queue(&conn, queue).await
}

fn ids(messages: &[lapin::message::BasicGetMessage]) -> Vec<String> {
    let mut ids: Vec<String> = messages
        .iter()
        .map(|m| warren::message::id_of(&m.properties).unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn emits_reach_the_outputs_with_derived_ids_while_answers_interleave() {
    let file = pipeline("execemit", "    concurrency: 8", "");
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    // Later messages finish first: the answers come in any order.
    for n in 0..16u64 {
        let body = json!({"n": n, "sleep_ms": 50 * (16 - n), "emit": [{"n": n}], "emit_to": {"b": {"only_b": n}}});
        producer
            .send_with_id("step", &format!("m{n:02}"), &body)
            .await
            .unwrap();
    }
    let a = collect(&format!("{}.a", file.name), 16, &file).await;
    let b = collect(&format!("{}.b", file.name), 32, &file).await;
    program.signal("TERM");
    assert_eq!(program.wait().code(), Some(0), "{}", log(&file));
    let expected_a: Vec<String> = (0..16).map(|n| format!("m{n:02}.0")).collect();
    assert_eq!(ids(&a), expected_a);
    let mut expected_b: Vec<String> = (0..16)
        .flat_map(|n| [format!("m{n:02}.0"), format!("m{n:02}.1")])
        .collect();
    expected_b.sort();
    assert_eq!(ids(&b), expected_b);
    for message in &a {
        let id = warren::message::id_of(&message.properties).unwrap();
        let body: Value = serde_json::from_slice(&message.data).unwrap();
        assert_eq!(format!("m{:02}.0", body["n"].as_u64().unwrap()), id);
        assert_eq!(
            header(&message.properties, "x-warren-job").as_deref(),
            Some(&id[..3]),
            "the job is carried"
        );
    }
    let order: Vec<String> = started(&file).into_iter().map(|s| s.0).collect();
    assert_eq!(order.len(), 16, "each message handled once: {order:?}");
}

#[tokio::test]
async fn retry_after_is_honoured_and_dead_keeps_its_reason() {
    let file = pipeline(
        "execretry",
        "    retry: { attempts: 3, backoff: [500ms] }",
        "",
    );
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    producer
        .send_with_id(
            "step",
            "later",
            &json!({"retry_until": 2, "after": "2s", "emit": [{"x": 1}]}),
        )
        .await
        .unwrap();
    producer
        .send_with_id("step", "never", &json!({"dead": "no such company"}))
        .await
        .unwrap();
    let dead = collect(&format!("{}.step.dead", file.name), 1, &file).await;
    assert_eq!(
        header(&dead[0].properties, "x-warren-error").as_deref(),
        Some("no such company")
    );
    assert_eq!(warren::message::attempt_of(&dead[0].properties), 1);
    let done = collect(&format!("{}.a", file.name), 2, &file).await;
    program.signal("TERM");
    program.wait();
    // Emitted on both attempts, with the same id each time.
    assert_eq!(ids(&done), vec!["later.0", "later.0"]);
    let attempts: Vec<u32> = started(&file)
        .into_iter()
        .filter(|s| s.0 == "later")
        .map(|s| s.1)
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    let log = log(&file);
    assert!(log.contains("retrying in 2s: not yet"), "{log}");
}

#[tokio::test]
async fn a_program_that_exits_mid_batch_loses_nothing_and_its_messages_count_an_attempt() {
    let file = pipeline(
        "execexit",
        "    concurrency: 4\n    retry: { attempts: 3, backoff: [200ms] }",
        "",
    );
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    for n in 0..3u64 {
        producer
            .send_with_id(
                "step",
                &format!("slow{n}"),
                &json!({"sleep_ms": 1500, "emit": [{"n": n}]}),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer
        .send_with_id(
            "step",
            "bomb",
            &json!({"exit_until": 2, "emit": [{"n": 99}]}),
        )
        .await
        .unwrap();
    let out = collect(&format!("{}.a", file.name), 4, &file).await;
    program.signal("TERM");
    program.wait();
    assert_eq!(ids(&out), vec!["bomb.0", "slow0.0", "slow1.0", "slow2.0"]);
    let runs = started(&file);
    let attempts =
        |id: &str| -> Vec<u32> { runs.iter().filter(|s| s.0 == id).map(|s| s.1).collect() };
    assert_eq!(attempts("bomb"), vec![1, 2]);
    assert_eq!(
        attempts("slow0"),
        vec![1, 2],
        "in flight when it exited: another attempt"
    );
    let pids: std::collections::BTreeSet<u32> = runs.iter().map(|s| s.2).collect();
    assert_eq!(pids.len(), 2, "started again once: {runs:?}");
    let log = log(&file);
    assert!(log.contains("the program exited with code 3"), "{log}");
    assert!(
        log.contains("exiting on purpose at bomb"),
        "the reason has its last lines: {log}"
    );
}

/// Sends one message that makes the program misbehave on its first
/// attempt; waits for the one part it emits when handled again. Returns the
/// ids reaching output `a`, the handlings started and the worker's log.
async fn misbehaving_once(
    prefix: &str,
    settings: &str,
    body: Value,
) -> (Vec<String>, Vec<(String, u32, u32)>, String) {
    let file = pipeline(prefix, settings, "");
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    producer.send_with_id("step", "m", &body).await.unwrap();
    let out = collect(&format!("{}.a", file.name), 1, &file).await;
    program.signal("TERM");
    program.wait();
    (ids(&out), started(&file), log(&file))
}

#[tokio::test]
async fn a_hung_program_is_killed_at_the_deadline_and_started_again() {
    let (out, runs, log) = misbehaving_once(
        "exechang",
        "    timeout: 2s\n    retry: { attempts: 3, backoff: [200ms] }",
        json!({"hang_until": 2, "emit": [{"n": 1}]}),
    )
    .await;
    assert_eq!(out, vec!["m.0"]);
    assert_eq!(runs.iter().map(|s| s.1).collect::<Vec<_>>(), vec![1, 2]);
    assert_ne!(
        runs[0].2, runs[1].2,
        "a new program took the second attempt"
    );
    assert!(log.contains("passed its deadline"), "{log}");
}

#[tokio::test]
async fn garbage_on_stdout_restarts_the_program() {
    let (out, runs, log) = misbehaving_once(
        "execgarbage",
        "    retry: { attempts: 3, backoff: [200ms] }",
        json!({"garbage_until": 2, "emit": [{"n": 1}]}),
    )
    .await;
    assert_eq!(out, vec!["m.0"]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_ne!(runs[0].2, runs[1].2);
    assert!(
        log.contains("a line that is not the protocol") && log.contains("this is not the protocol"),
        "{log}"
    );
}

#[tokio::test]
async fn a_program_that_never_reads_its_stdin_ends_its_messages_in_the_dead_letter_queue() {
    let file = pipeline(
        "execnoread",
        "    timeout: 2s\n    retry: { attempts: 2, backoff: [200ms] }",
        "noread",
    );
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    for n in 0..3 {
        producer
            .send_with_id("step", &format!("m{n}"), &json!({"n": n}))
            .await
            .unwrap();
    }
    let dead = collect(&format!("{}.step.dead", file.name), 3, &file).await;
    program.signal("TERM");
    program.wait();
    assert_eq!(ids(&dead), vec!["m0", "m1", "m2"]);
    for letter in &dead {
        let reason = header(&letter.properties, "x-warren-error").unwrap_or_default();
        assert!(reason.contains("passed its deadline"), "{reason}");
    }
}

#[tokio::test]
async fn a_drain_lets_the_program_finish_what_it_holds() {
    let file = pipeline("execdrain", "    concurrency: 6", "");
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    for n in 0..6u64 {
        producer
            .send_with_id(
                "step",
                &format!("d{n}"),
                &json!({"sleep_ms": 2000, "emit": [{"n": n}]}),
            )
            .await
            .unwrap();
    }
    let all_started = eventually(Duration::from_secs(30), || async {
        started(&file).len() == 6
    })
    .await;
    assert!(all_started, "{}", log(&file));
    program.signal("TERM");
    assert_eq!(program.wait().code(), Some(0), "{}", log(&file));
    let out = collect(&format!("{}.a", file.name), 6, &file).await;
    assert_eq!(out.len(), 6);
    assert_eq!(started(&file).len(), 6, "nothing was handled twice");
    let conn = connect().await;
    assert_eq!(
        state_once_unconsumed(&conn, &format!("{}.step", file.name)).await,
        Some((0, 0)),
        "everything was acknowledged"
    );
    assert!(
        log(&file).contains("stdin closed; all done"),
        "{}",
        log(&file)
    );
}

#[tokio::test]
async fn sigkill_of_the_worker_takes_its_program_with_it() {
    let file = pipeline("execkill", "", "");
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    producer
        .send_with_id("step", "long", &json!({"sleep_ms": 60000}))
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(30), || async {
        !started(&file).is_empty()
    })
    .await;
    assert!(seen, "{}", log(&file));
    let child = started(&file)[0].2;
    assert!(Path::new(&format!("/proc/{child}")).exists());
    program.signal("KILL");
    program.wait();
    let started_at = Instant::now();
    let gone = eventually(Duration::from_secs(10), || async {
        // Gone, or a zombie waiting for init to reap it.
        std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
    })
    .await;
    assert!(
        gone,
        "the program outlived its worker ({:?})",
        started_at.elapsed()
    );
}
