//! Recycling of `exec` children (`max_messages`, `max_memory`, DESIGN.md
//! *exec stages*), against the real broker, the real `warren worker` and a
//! PHP handler written with the packaged helper (`clients/php`, installed
//! with Debian's `composer` from a path repository, as `tests/clients.rs`
//! does): a child that leaks is replaced, and so is one that was given its
//! count of messages, while every message is done exactly once, none
//! retried, none dead-lettered; a drain lets replaced programs finish what
//! they hold. Bad values are refused by `warren validate` naming the field.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use warren::Producer;

/// A Composer project that required `clients/php` from a path repository:
/// its `vendor/autoload.php`.
fn autoload() -> &'static str {
    static AUTOLOAD: OnceLock<String> = OnceLock::new();
    AUTOLOAD.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recycle-composer");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = json!({
            "repositories": [
                {"type": "path", "url": root.join("clients/php"), "options": {"symlink": false}},
                {"packagist.org": false}
            ],
            "require": {"warren-pipelines/stage": "*@dev"}
        });
        std::fs::write(dir.join("composer.json"), manifest.to_string()).unwrap();
        let out = Command::new("composer")
            .args(["install", "--no-interaction", "--no-progress"])
            .current_dir(&dir)
            .env("COMPOSER_ALLOW_SUPERUSER", "1")
            .env("COMPOSER_HOME", dir.join(".composer"))
            .output()
            .expect("run composer (Debian's `composer` package)");
        assert!(
            out.status.success(),
            "composer install failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("vendor/autoload.php")
            .to_str()
            .unwrap()
            .to_string()
    })
}

/// The handler: keeps `LEAK_BYTES` more in memory with each message (a
/// leak), sleeps `SLEEP_US`, and emits its pid and the message's attempt.
const HANDLER: &str = r#"<?php
declare(strict_types=1);
require getenv('WARREN_PHP_AUTOLOAD');

use Warren\{Context, Worker};

$leaked = [];
(new Worker())
    ->stage('step', function (array $message, Context $ctx) use (&$leaked): array {
        $leaked[] = str_repeat('x', (int) getenv('LEAK_BYTES'));
        usleep((int) getenv('SLEEP_US'));
        return ['n' => $message['n'], 'pid' => getmypid(), 'attempt' => $ctx->attempt];
    })
    ->serve();
"#;

/// A pipeline whose stage `step` runs [`HANDLER`] with `recycle` (like
/// `max_messages: 10`), leaking `leak` bytes and sleeping `sleep_ms` per
/// message, emitting to `out` (a queue only).
fn pipeline(prefix: &str, recycle: &str, leak: u64, sleep_ms: u64) -> PipelineFile {
    let file = PipelineFile::new(prefix, "");
    std::fs::write(file.file("handler.php"), HANDLER).unwrap();
    let yaml = format!(
        "
pipeline: {name}
stages:
  step:
    exec:
      command: [php, handler.php]
      env: {{ WARREN_PHP_AUTOLOAD: \"{autoload}\", LEAK_BYTES: \"{leak}\", SLEEP_US: \"{sleep_us}\" }}
      {recycle}
    outputs: [out]
    concurrency: 4
    retry: {{ attempts: 3, backoff: [200ms] }}
  out:
    command: [unused]
",
        name = file.name,
        autoload = autoload(),
        sleep_us = sleep_ms * 1000,
    );
    std::fs::write(&file.path, yaml).unwrap();
    file
}

/// `warren worker` of `step`, logging to `worker.log`.
fn worker(file: &PipelineFile) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "step"])
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file(&file.file("worker.log")))
            .spawn()
            .expect("start warren worker"),
    )
}

fn log(file: &PipelineFile) -> String {
    std::fs::read_to_string(file.file("worker.log")).unwrap_or_default()
}

/// Sends `n` messages to `step`, waits for their `n` outputs and stops the
/// worker; checks that each was done exactly once, at its first attempt,
/// and none dead-lettered. The pid that handled each message, by message.
async fn run(file: &PipelineFile, n: u64) -> BTreeMap<u64, u32> {
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    let mut program = worker(file);
    for i in 0..n {
        producer
            .send_with_id("step", &format!("m{i:03}"), &json!({ "n": i }))
            .await
            .unwrap();
    }
    let conn = connect().await;
    let out = format!("{}.out", file.name);
    let arrived = eventually(Duration::from_secs(120), || async {
        queue_state(&conn, &out).await.map(|q| q.0 as u64) >= Some(n)
    })
    .await;
    assert!(arrived, "{out} never held {n} messages\n{}", log(file));
    // A moment for a duplicate, if any, to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = drain_queue(&conn, &out).await;
    program.signal("TERM");
    assert_eq!(program.wait().code(), Some(0), "{}", log(file));
    let dead = queue_state(&conn, &format!("{}.step.dead", file.name)).await;
    assert_eq!(dead.map(|q| q.0), Some(0), "nothing dead\n{}", log(file));
    let mut handled = BTreeMap::new();
    for message in &messages {
        let body: Value = serde_json::from_slice(&message.data).unwrap();
        let (i, pid) = (body["n"].as_u64().unwrap(), body["pid"].as_u64().unwrap());
        assert_eq!(body["attempt"], 1, "never retried: {body}\n{}", log(file));
        assert!(
            handled.insert(i, pid as u32).is_none(),
            "message {i} done twice\n{}",
            log(file)
        );
    }
    assert_eq!(handled.len() as u64, n, "every message done once");
    let log = log(file);
    assert!(!log.contains("passed its deadline"), "{log}");
    assert!(!log.contains("unfinished"), "no message failed: {log}");
    handled
}

fn pids(handled: &BTreeMap<u64, u32>) -> BTreeSet<u32> {
    handled.values().copied().collect()
}

#[tokio::test]
async fn a_leaking_php_child_is_replaced_without_a_message_failing() {
    // PHP starts near 26 MB resident; 2 MB more with each message, 20
    // messages a second: above 48 MB after some 11 messages, well before
    // the 80 are done.
    let file = pipeline("recyclemem", "max_memory: 48MB", 2_000_000, 50);
    let handled = run(&file, 80).await;
    let pids = pids(&handled);
    let log = log(&file);
    assert!(pids.len() >= 3, "replaced several times: {pids:?}\n{log}");
    let recycles = log.matches("recycling the program").count();
    assert!(recycles >= 2, "{log}");
    assert!(log.contains("above max_memory"), "the reason: {log}");
    assert!(log.contains("MiB"), "the size: {log}");
}

#[tokio::test]
async fn a_child_is_replaced_after_max_messages() {
    let file = pipeline("recyclecount", "max_messages: 10", 0, 10);
    let handled = run(&file, 100).await;
    let pids = pids(&handled);
    let log = log(&file);
    assert!(pids.len() >= 10, "{pids:?}\n{log}");
    for pid in &pids {
        let count = handled.values().filter(|p| *p == pid).count();
        assert!(count <= 10, "pid {pid} handled {count} messages\n{log}");
    }
    let recycles = log.matches("recycling the program").count();
    assert!(recycles >= 9, "{recycles} recycles\n{log}");
    assert!(
        log.contains("it was given 10 messages"),
        "the reason: {log}"
    );
}

#[test]
fn bad_recycle_settings_are_refused_naming_the_field() {
    for (setting, said) in [
        ("max_messages: 0", "stages.step.exec.max_messages"),
        ("max_messages: 1.5", "stages.step.exec.max_messages"),
        ("max_memory: lots", "stages.step.exec.max_memory"),
        ("max_memory: 12KB", "stages.step.exec.max_memory"),
    ] {
        let file = PipelineFile::new(
            "recyclebad",
            &format!(
                "pipeline: {{name}}\nstages:\n  step:\n    exec: {{ command: [php, handler.php], {setting} }}\n"
            ),
        );
        let output = warren(&["validate", file.path.to_str().unwrap()]);
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(78),
            "{setting}: {stdout}{stderr}"
        );
        assert!(
            stderr.contains(said) || stdout.contains(said),
            "{setting} names {said}: {stdout}{stderr}"
        );
    }
    let file = PipelineFile::new(
        "recyclegood",
        "pipeline: {name}\nstages:\n  step:\n    exec: { command: [php, handler.php], max_messages: 1000, max_memory: 512MB }\n",
    );
    let output = warren(&["validate", file.path.to_str().unwrap()]);
    assert!(output.status.success(), "{:?}", text(&output));
}

#[tokio::test]
async fn a_drain_lets_replaced_programs_finish_what_they_hold() {
    // Two messages a program, a second each: with four sent, two replaced
    // programs hold two each when the worker is told to stop.
    let file = pipeline("recycledrain", "max_messages: 2", 0, 1000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    let mut program = worker(&file);
    for i in 0..4u64 {
        producer
            .send_with_id("step", &format!("m{i}"), &json!({ "n": i }))
            .await
            .unwrap();
    }
    let replaced = eventually(Duration::from_secs(60), || async {
        log(&file).matches("recycling the program").count() >= 2
    })
    .await;
    assert!(replaced, "{}", log(&file));
    program.signal("TERM");
    assert_eq!(program.wait().code(), Some(0), "{}", log(&file));
    let conn = connect().await;
    let messages = drain_queue(&conn, &format!("{}.out", file.name)).await;
    let mut done: Vec<u64> = messages
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_slice(&m.data).unwrap();
            assert_eq!(body["attempt"], 1, "{body}");
            body["n"].as_u64().unwrap()
        })
        .collect();
    done.sort();
    assert_eq!(done, [0, 1, 2, 3], "each done once\n{}", log(&file));
    let step = queue_state(&conn, &format!("{}.step", file.name)).await;
    assert_eq!(step.map(|q| q.0), Some(0), "nothing given back");
    let log = log(&file);
    assert!(!log.contains("unfinished"), "no message failed: {log}");
}
