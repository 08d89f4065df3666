//! `exec` stages against the real broker and a real program (a Python
//! script speaking the protocol by hand, `tests/support/exec_stage.py`):
//! emits and outputs, interleaved answers, retry with `after`, dead with a
//! reason, and a program that exits, hangs, writes garbage, never reads its
//! stdin, is drained with messages in flight, or loses its worker; only the
//! message that kills or hangs it is charged an attempt.

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
    pipeline_with_env(prefix, settings, mode, "")
}

/// [`pipeline`] with more variables in the program's `env` (`extra`, like
/// `K: V, ` ...). The program's record file is given in its `env`: it
/// inherits no variable it is not given.
fn pipeline_with_env(prefix: &str, settings: &str, mode: &str, extra: &str) -> PipelineFile {
    let file = PipelineFile::new(prefix, "");
    let yaml = format!(
        "
pipeline: {name}
stages:
  step:
    exec: {{ command: [python3, {script}], env: {{ {extra}MODE: \"{mode}\", WARREN_TEST_RECORD: \"{record}\" }} }}
    outputs: [a, b]
{settings}
  a:
    command: [unused]
  b:
    command: [unused]
",
        name = file.name,
        script = script().display(),
        record = file.file("record.txt").display(),
    );
    std::fs::write(&file.path, yaml).unwrap();
    file
}

/// `warren worker` of `step`, logging to `worker.log`.
fn worker(file: &PipelineFile) -> ChildGuard {
    worker_env(file, &[])
}

/// [`worker`] with more variables in the worker's environment.
fn worker_env(file: &PipelineFile, env: &[(&str, &str)]) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "step"])
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
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
async fn a_program_that_exits_mid_batch_loses_nothing_and_only_the_culprit_counts_an_attempt() {
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
    assert_eq!(
        attempts("bomb"),
        vec![1, 1, 2],
        "a suspect, handled alone uncharged, then the culprit: {runs:?}"
    );
    assert_eq!(
        attempts("slow0"),
        vec![1, 1],
        "in flight when it exited: handled again alone, its attempt not counted"
    );
    let pids: std::collections::BTreeSet<u32> = runs.iter().map(|s| s.2).collect();
    assert_eq!(pids.len(), 3, "started again twice: {runs:?}");
    let log = log(&file);
    assert!(log.contains("the program exited with code 3"), "{log}");
    assert!(log.contains("it held 4 messages"), "{log}");
    assert!(
        log.contains("exiting on purpose at bomb"),
        "the reason has its last lines: {log}"
    );
}

/// What [`only_the_culprit_is_charged`] runs.
struct Poisoned {
    prefix: &'static str,
    /// More stage settings.
    settings: &'static str,
    /// The program's `MODE`.
    mode: &'static str,
    /// How long each innocent message takes.
    sleep_ms: u64,
    /// The body of the message that kills or hangs the program.
    poison: Value,
    /// What the program's stderr says then.
    says: &'static str,
    /// What warren says then.
    why: &'static str,
}

/// 300 messages, concurrency 8, two attempts, through a program that one
/// of them (`poison`) kills or hangs every time: exactly one dead letter,
/// `poison`, its reason carrying the program's last stderr line and why it
/// was stopped; the 299 others done once, never charged.
async fn only_the_culprit_is_charged(run: Poisoned) {
    let Poisoned {
        prefix,
        settings,
        mode,
        sleep_ms,
        poison,
        says,
        why,
    } = run;
    let file = pipeline(
        prefix,
        &format!("    concurrency: 8\n    retry: {{ attempts: 2, backoff: [200ms] }}\n{settings}"),
        mode,
    );
    let (_cleanup, producer) = setup(&file).await;
    let mut sent = Vec::new();
    for n in 0..300u64 {
        let (id, body) = if n == 150 {
            ("poison".to_string(), poison.clone())
        } else {
            (
                format!("m{n:03}"),
                json!({"sleep_ms": sleep_ms, "emit": [{"n": n}]}),
            )
        };
        let body = serde_json::to_vec(&body).unwrap();
        sent.push(producer.publish("step", &id, &body).await.unwrap());
    }
    for confirm in sent {
        confirm.confirmed().await.unwrap();
    }
    let mut program = worker(&file);
    let dead = collect(&format!("{}.step.dead", file.name), 1, &file).await;
    let mut out = collect(&format!("{}.a", file.name), 299, &file).await;
    // Nothing else is on its way: the stage's queues are empty and stay so.
    let conn = connect().await;
    let queues = [
        file.name.clone() + ".step",
        file.name.clone() + ".step.isolated",
    ];
    let settled = eventually(Duration::from_secs(60), || async {
        let mut empty = true;
        for queue in &queues {
            empty &= queue_state(&conn, queue).await.map(|q| q.0) == Some(0);
        }
        empty
    })
    .await;
    assert!(settled, "{}", queue_report(&file, &["step"]).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    out.extend(drain_queue(&conn, &format!("{}.a", file.name)).await);
    let more_dead = drain_queue(&conn, &format!("{}.step.dead", file.name)).await;
    program.signal("TERM");
    program.wait();
    let log = log(&file);

    assert_eq!(ids(&dead), vec!["poison"], "{log}");
    assert!(more_dead.is_empty(), "{:?}", ids(&more_dead));
    let reason = header(&dead[0].properties, "x-warren-error").unwrap_or_default();
    assert!(reason.starts_with("attempt 2 of 2 failed: "), "{reason}");
    assert!(reason.contains(why), "{reason}");
    assert!(reason.contains(says), "the child's last lines: {reason}");
    assert!(!reason.contains("it held"), "charged alone: {reason}");

    let done = ids(&out);
    let expected: Vec<String> = (0..300u64)
        .filter(|n| *n != 150)
        .map(|n| format!("m{n:03}.0"))
        .collect();
    assert_eq!(done, expected, "each of the 299 others done exactly once");

    let runs = started(&file);
    let charged: Vec<_> = runs.iter().filter(|r| r.0 != "poison" && r.1 > 1).collect();
    assert!(charged.is_empty(), "innocent messages charged: {charged:?}");
    let poison_attempts: std::collections::BTreeSet<u32> = runs
        .iter()
        .filter(|r| r.0 == "poison")
        .map(|r| r.1)
        .collect();
    assert_eq!(poison_attempts, [1, 2].into(), "{runs:?}");
    assert!(
        log.contains("handled alone next, its attempt not counted")
            && log.contains(" messages: each is handled alone"),
        "{log}"
    );
}

#[tokio::test]
async fn a_message_that_kills_the_program_is_the_only_one_charged() {
    // Each message on a thread of its own: others are in hand when it dies.
    only_the_culprit_is_charged(Poisoned {
        prefix: "execculprit",
        settings: "",
        mode: "",
        sleep_ms: 50,
        poison: json!({"sleep_ms": 20, "exit_until": 99}),
        says: "exiting on purpose at poison",
        why: "the program exited with code 3",
    })
    .await;
}

#[tokio::test]
async fn a_message_that_hangs_the_program_is_the_only_one_charged() {
    // One message at a time, as a PHP program: the messages given after it
    // wait behind it, in hand, until its deadline.
    only_the_culprit_is_charged(Poisoned {
        prefix: "exechangculprit",
        // 5 s: on a loaded machine, eight messages in a serial program's
        // hand (10 ms each) took more than 2 s.
        settings: "    timeout: 5s\n",
        mode: "serial",
        sleep_ms: 10,
        poison: json!({"hang_until": 99}),
        says: "hanging on purpose at poison",
        why: "message `poison` passed its deadline",
    })
    .await;
}

/// A program that fails to start again, five times, after the one message
/// that crashed it: the pause before each new start doubles (0.2 s to
/// 6.4 s). Messages sent during the last, longest pause wait for a
/// program; no program takes them within half their deadline, so they go
/// back to their queue uncharged, again and again, until one runs: each is
/// done at its first attempt. Only the crashing message is charged.
#[tokio::test]
async fn messages_waiting_for_the_program_to_start_again_are_not_charged() {
    let file = pipeline_with_env(
        "execwaiting",
        "    concurrency: 1\n    timeout: 4s\n    retry: { attempts: 1 }\n",
        "",
        "CRASH_STARTS: \"2-6\", ",
    );
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    producer
        .send_with_id("step", "poison", &json!({"exit_until": 99}))
        .await
        .unwrap();
    // The sixth start (the fifth to fail) came and its program exited
    // (on a loaded machine a program can take seconds between its start
    // and its crash, and would take a message sent meanwhile): the next
    // start is 6.4 s away.
    let starts = file.file("record.txt.starts");
    let failing = eventually(Duration::from_secs(60), || async {
        let started = std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .count();
        started >= 6 && log(&file).matches("the program exited with code 4").count() >= 5
    })
    .await;
    assert!(
        failing,
        "the program never failed its starts\n{}",
        log(&file)
    );
    for n in 0..4u64 {
        producer
            .send_with_id("step", &format!("m{n}"), &json!({"emit": [{"n": n}]}))
            .await
            .unwrap();
    }
    let out = collect(&format!("{}.a", file.name), 4, &file).await;
    let conn = connect().await;
    let dead = drain_queue(&conn, &format!("{}.step.dead", file.name)).await;
    program.signal("TERM");
    program.wait();
    let log = log(&file);

    assert_eq!(ids(&dead), vec!["poison"], "{log}");
    assert_eq!(ids(&out), vec!["m0.0", "m1.0", "m2.0", "m3.0"], "{log}");
    let charged: Vec<_> = started(&file)
        .into_iter()
        .filter(|run| run.0 != "poison" && run.1 > 1)
        .collect();
    assert!(charged.is_empty(), "innocent messages charged: {charged:?}");
    assert!(
        log.contains("back to its queue, its attempt not counted: no program took it"),
        "no message waited for the program: the test proved nothing\n{log}"
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
        // 5 s: a program started again on a loaded machine (a build beside
        // the tests) can take more than 2 s to handle its first message.
        "    timeout: 5s\n    retry: { attempts: 3, backoff: [200ms] }",
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
        // One at a time: each is the culprit of its program's stop (held
        // with others, they would be isolated first, and the messages
        // waiting while its starts fail go back uncharged).
        "    concurrency: 1\n    timeout: 2s\n    retry: { attempts: 2, backoff: [200ms] }",
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

/// Whether `pid` is a running `sleep 1000` (not gone, not a zombie
/// waiting to be reaped).
fn sleeping(pid: u32) -> bool {
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    running && cmdline == b"sleep\x001000\x00"
}

/// Sends a message that makes the program start `sleep 1000` and then take
/// a minute; the sleeper's pid once it runs.
async fn grandchild(file: &PipelineFile, producer: &Producer, log: impl Fn() -> String) -> u32 {
    let pid_file = file.file("grandchild.pid");
    producer
        .send_with_id(
            "step",
            "parent",
            &json!({"spawn_child": pid_file, "sleep_ms": 60000}),
        )
        .await
        .unwrap();
    let pid = || -> u32 {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    };
    let spawned = eventually(Duration::from_secs(30), || async { sleeping(pid()) }).await;
    assert!(spawned, "the program never started its child\n{}", log());
    pid()
}

#[tokio::test]
async fn sigkill_of_the_worker_takes_the_programs_own_children_with_it() {
    let file = pipeline("execorphan", "", "");
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker(&file);
    let sleeper = grandchild(&file, &producer, || log(&file)).await;
    program.signal("KILL");
    program.wait();
    let gone = eventually(Duration::from_secs(20), || async { !sleeping(sleeper) }).await;
    if !gone {
        let _ = Command::new("kill")
            .args(["-9", &sleeper.to_string()])
            .status();
    }
    assert!(gone, "the program's child outlived the killed worker");
}

/// The pid of the process whose command line has `warren` and `worker`
/// and names `file`.
fn worker_pid(file: &PipelineFile) -> Option<u32> {
    let wanted = file.path.to_str().unwrap().as_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.contains(&&b"worker"[..]) && args.contains(&wanted)).then_some(pid)
        })
}

#[tokio::test]
async fn sigkill_of_the_supervisor_then_of_its_worker_leaves_no_grandchild() {
    let file = pipeline("execorphan2", "    scale: { min: 1, max: 1 }", "");
    let (_cleanup, producer) = setup(&file).await;
    let mut supervisor = supervise_in(&file, file.dir.path(), "supervisor.log", &[]);
    let supervisor_log =
        || std::fs::read_to_string(file.file("supervisor.log")).unwrap_or_default();
    let sleeper = grandchild(&file, &producer, supervisor_log).await;
    let worker = worker_pid(&file).expect("the worker");
    // Both die at once, as when a box's processes are killed: nothing of
    // warren runs any more to stop the program's children.
    supervisor.signal("KILL");
    let _ = Command::new("kill")
        .args(["-9", &worker.to_string()])
        .status();
    supervisor.wait();
    let gone = eventually(Duration::from_secs(20), || async { !sleeping(sleeper) }).await;
    if !gone {
        let _ = Command::new("kill")
            .args(["-9", &sleeper.to_string()])
            .status();
    }
    assert!(
        gone,
        "the program's child outlived its worker and supervisor"
    );
}

#[tokio::test]
async fn the_program_gets_only_the_environment_it_is_given() {
    let file = pipeline_with_env(
        "execenv",
        "",
        "",
        "ASKED: \"${SECRET_FOR_PROGRAM}\", LITERAL: \"as written\", ",
    );
    let (_cleanup, producer) = setup(&file).await;
    let mut program = worker_env(
        &file,
        &[
            ("WARREN_SERVE_TOKEN", "serve-token-0123456789"),
            ("SECRET_FOR_PROGRAM", "given-on-purpose"),
            ("UNASKED_SECRET", "not-for-the-program"),
        ],
    );
    let dump = file.file("env.json");
    producer
        .send_with_id("step", "env", &json!({"dump_env": dump}))
        .await
        .unwrap();
    let dumped = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&dump)
            .is_ok_and(|text| serde_json::from_str::<Value>(&text).is_ok())
    })
    .await;
    assert!(dumped, "{}", log(&file));
    program.signal("TERM");
    program.wait();
    let env: Value = serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    for unasked in [
        "AMQP_URL",
        "WARREN_SERVE_TOKEN",
        "UNASKED_SECRET",
        "SECRET_FOR_PROGRAM",
        "RUST_LOG",
    ] {
        assert!(
            env.get(unasked).is_none(),
            "the program inherited {unasked}: {env}"
        );
    }
    assert_eq!(env["ASKED"], "given-on-purpose", "{env}");
    assert_eq!(env["LITERAL"], "as written", "{env}");
    assert_eq!(env["WARREN_STAGE"], "step", "{env}");
    assert!(
        env["WARREN_CONCURRENCY"]
            .as_str()
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        "{env}"
    );
    assert!(env["PATH"].as_str().is_some_and(|p| !p.is_empty()), "{env}");
}

#[tokio::test]
async fn a_variable_the_program_asks_for_that_is_not_set_stops_the_worker_with_its_name() {
    let file = pipeline_with_env(
        "execenvmissing",
        "",
        "",
        "ASKED: \"${NOT_SET_ANYWHERE_42}\", ",
    );
    let (_cleanup, _producer) = setup(&file).await;
    let mut program = worker(&file);
    let started = Instant::now();
    while program.running() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !program.running(),
        "the worker runs without the variable\n{}",
        log(&file)
    );
    let code = program.wait().code();
    let log = log(&file);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("NOT_SET_ANYWHERE_42"), "{log}");
}

/// Relative paths in a pipeline file are relative to the file's folder,
/// wherever warren runs: the program `stage.py` beside the file is found and
/// started there (it opens `greeting.txt` by a relative path), and the sink
/// writes `out/greetings.jsonl` beside the file too.
#[test]
fn relative_paths_are_resolved_from_the_pipeline_files_folder() {
    let file = PipelineFile::new(
        "execrel",
        "
pipeline: {name}
stages:
  greet:
    exec: [python3, stage.py]
    outputs: [greetings]
  greetings:
    sink: { path: out/greetings.jsonl }
",
    );
    std::fs::write(file.file("greeting.txt"), "hello").unwrap();
    std::fs::write(
        file.file("stage.py"),
        r#"import json, sys
greeting = open("greeting.txt").read()
for line in sys.stdin:
    m = json.loads(line)
    print(json.dumps({"id": m["id"], "emit": {"text": greeting, "n": m["body"]["n"]}}), flush=True)
    print(json.dumps({"id": m["id"], "done": True}), flush=True)
"#,
    )
    .unwrap();
    std::fs::write(file.file("in.jsonl"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (pipeline, input) = (file.path.to_str().unwrap(), file.file("in.jsonl"));
    // The test's own working directory is not the pipeline file's folder.
    assert_ne!(std::env::current_dir().unwrap(), file.dir.path());
    let out = warren(&["run", pipeline, "--input", input.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let written = std::fs::read_to_string(file.file("out/greetings.jsonl"))
        .unwrap_or_else(|e| panic!("no sink file beside the pipeline ({e}): {stdout}\n{stderr}"));
    let mut lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.sort_by_key(|v| v["n"].as_u64());
    assert_eq!(
        lines,
        [
            json!({"text": "hello", "n": 1}),
            json!({"text": "hello", "n": 2})
        ]
    );
}
