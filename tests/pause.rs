//! Stage control (DESIGN.md, *Stage control*) against the real broker:
//! `warren pause` and `warren resume` with two supervisors of one pipeline
//! under a steady flow, one of them restarted while paused; the state in
//! `warren status` and `/metrics`; the HTTP routes; an unknown stage.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use warren::Producer;

const LONG: Duration = Duration::from_secs(60);

fn pipeline(prefix: &str) -> PipelineFile {
    PipelineFile::new(
        prefix,
        &format!(
            "
pipeline: {{name}}
serve: {{ allow_actions: true }}
stages:
  work:
    command: [{}, work]
    prefetch: 5
    concurrency: 2
    timeout: 10s
    scale: {{ min: 1, max: 2, backlog_per_worker: 50 }}
",
            example_bin("test-worker").display()
        ),
    )
}

fn stage(status: &Value, name: &str) -> Value {
    status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .cloned()
        .unwrap_or_default()
}

/// Handlings recorded so far.
fn handled(file: &PipelineFile) -> usize {
    records(&file.file("record.txt")).len()
}

/// Waits until no handling was recorded for `quiet`; the count then.
async fn settled(file: &PipelineFile, quiet: Duration) -> usize {
    let mut last = handled(file);
    let mut since = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = handled(file);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            since.elapsed() < LONG,
            "handlings never stopped after the pause"
        );
    }
}

/// The value of `warren_paused` for `stage` in a `/metrics` page.
fn paused_metric(page: &str, stage: &str) -> Option<String> {
    page.lines()
        .find(|line| {
            line.starts_with("warren_paused{") && line.contains(&format!("stage=\"{stage}\""))
        })
        .and_then(|line| line.rsplit(' ').next())
        .map(str::to_string)
}

#[tokio::test]
async fn a_pause_holds_every_box_through_a_supervisor_restart_and_a_resume_loses_nothing() {
    let file = pipeline("pause");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let loaded = warren::config::load(&file.path).unwrap();
    declare(&loaded).await;
    let path = file.path.to_str().unwrap().to_string();
    let (one, two) = (file.file("one"), file.file("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let mut first = supervise_in(&file, &one, "one.log", &[]);
    let mut second = supervise_in(&file, &two, "two.log", &[]);
    let (_serve, base) = serve(&file).await;
    let queue = format!("{}.work", file.name);
    assert!(
        eventually(LONG, || async {
            queue_state(&connect().await, &queue)
                .await
                .is_some_and(|(_, consumers)| consumers >= 2)
        })
        .await,
        "both boxes consume"
    );

    // A steady flow: a message every 20 ms, ids m0, m1, ...
    let producer = Producer::connect(&loaded).await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let flow = {
        let (producer, sent, sending) = (producer.clone(), sent.clone(), sending.clone());
        tokio::spawn(async move {
            while sending.load(Ordering::Relaxed) {
                let n = sent.load(Ordering::Relaxed);
                producer
                    .send_with_id("work", &format!("m{n}"), &json!({"n": n, "sleep_ms": 20}))
                    .await
                    .unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    assert!(
        eventually(LONG, || async { handled(&file) >= 50 }).await,
        "the flow is handled"
    );

    // Pause: nothing is handled on either box once it settles, the queue
    // grows, status and /metrics say so.
    let out = warren(&["pause", &path, "work"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let at_pause = settled(&file, Duration::from_secs(3)).await;
    let ready_then = queue_state(&connect().await, &queue).await.unwrap().0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(handled(&file), at_pause, "handled while paused");
    let ready_now = queue_state(&connect().await, &queue).await.unwrap().0;
    assert!(
        ready_now > ready_then,
        "the queue grows while paused ({ready_then} -> {ready_now})"
    );
    assert!(
        eventually(LONG, || async {
            let work = stage(&status_json(&file), "work");
            work["paused"] == true && work["state"] == "paused"
        })
        .await,
        "status shows the pause: {}",
        stage(&status_json(&file), "work")
    );
    let metrics = || async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        eventually(LONG, || async {
            paused_metric(&metrics().await, "work").as_deref() == Some("1")
        })
        .await,
        "warren_paused is 1: {:?}",
        paused_metric(&metrics().await, "work")
    );
    let consumers = queue_state(&connect().await, &queue).await.unwrap().1;
    assert!(
        consumers >= 2,
        "the paused workers keep their consumers ({consumers})"
    );

    // One supervisor restarted while paused: it stays paused.
    second.signal("TERM");
    second.wait();
    second = supervise_in(&file, &two, "two-again.log", &[]);
    assert!(
        eventually(LONG, || async {
            status_json(&file)["supervisors"]
                .as_array()
                .is_some_and(|all| {
                    all.len() == 2
                        && all
                            .iter()
                            .all(|s| s["stages"][0]["workers"].as_u64() >= Some(1))
                })
        })
        .await,
        "the restarted supervisor runs its workers"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        handled(&file),
        at_pause,
        "handled after a restart while paused"
    );
    assert_eq!(stage(&status_json(&file), "work")["state"], "paused");

    // Resume: everything sent is handled, once.
    sending.store(false, Ordering::Relaxed);
    flow.await.unwrap();
    let total = sent.load(Ordering::Relaxed) as usize;
    let out = warren(&["resume", &path, "work"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        eventually(Duration::from_secs(120), || async {
            handled(&file) >= total
        })
        .await,
        "not everything was handled after the resume: {} of {total}",
        handled(&file)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (_, id, _) in records(&file.file("record.txt")) {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handled twice: {twice:?}");
    for n in 0..total {
        assert!(seen.contains_key(&format!("m{n}")), "m{n} lost");
    }
    assert_eq!(seen.len(), total);
    assert!(
        eventually(LONG, || async {
            let work = stage(&status_json(&file), "work");
            work["paused"] == false && work["state"] == "running"
        })
        .await
    );
    assert!(
        eventually(LONG, || async {
            paused_metric(&metrics().await, "work").as_deref() == Some("0")
        })
        .await
    );
    first.signal("TERM");
    second.signal("TERM");
    first.wait();
    second.wait();
}

#[tokio::test]
async fn pause_and_resume_over_http_and_an_unknown_stage() {
    let file = pipeline("pausehttp");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let loaded = warren::config::load(&file.path).unwrap();
    declare(&loaded).await;
    let path = file.path.to_str().unwrap().to_string();

    let out = warren(&["pause", &path, "nope"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nope") && stderr.contains(&path),
        "{stderr}"
    );

    let (_serve, base) = serve(&file).await;
    let client = reqwest::Client::new();
    // Not a form: a client sends JSON (or the bearer token), see origin.rs.
    let post = |what: &str| {
        client
            .post(format!("{base}/v1/stages/{what}"))
            .header("content-type", "application/json")
            .send()
    };
    let answer = post("work/pause").await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body, json!({"stage": "work", "paused": true}));
    assert!(
        eventually(LONG, || async {
            stage(&status_json(&file), "work")["paused"] == true
        })
        .await,
        "status shows the pause"
    );
    let answer = post("work/resume").await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        eventually(LONG, || async {
            stage(&status_json(&file), "work")["paused"] == false
        })
        .await,
        "status shows the resume"
    );
    assert_eq!(post("nope/pause").await.unwrap().status(), 404);
    assert_eq!(post("nope/resume").await.unwrap().status(), 404);
    let log = serve_log(&file);
    assert!(
        log.contains("stage paused on every box") && log.contains("stage resumed on every box"),
        "the actions are logged: {log}"
    );
}

/// A worker started while its stage is paused starts paused; what it holds
/// past the hold limit (half of `broker.ack_timeout`, 7 s here) is given
/// back and other deliveries held instead; after the resume each message is
/// handled once, on its first attempt (nothing was flagged redelivered).
#[tokio::test]
async fn a_worker_started_paused_gives_back_what_it_held_too_long_uncharged() {
    let file = PipelineFile::new(
        "pausehold",
        "
pipeline: {name}
broker: { ack_timeout: 14s }
stages:
  work:
    command: [unused]
    prefetch: 4
    concurrency: 2
    timeout: 1s
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let loaded = warren::config::load(&file.path).unwrap();
    declare(&loaded).await;
    let producer = Producer::connect(&loaded).await.unwrap();
    producer.set_paused("work", true, "a test").await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let running = spawn_worker(warren::Worker::new().pipeline(loaded.clone()).stage(
        "work",
        move |_body: Value, ctx: warren::Context| {
            record
                .lock()
                .unwrap()
                .push((ctx.id().to_string(), ctx.attempt()));
            async { Ok(()) }
        },
    ));
    let queue = format!("{}.work", file.name);
    assert!(
        eventually(LONG, || async {
            queue_state(&connect().await, &queue)
                .await
                .is_some_and(|(_, consumers)| consumers == 1)
        })
        .await
    );
    for n in 0..10 {
        producer
            .send_with_id("work", &format!("h{n}"), &json!({ "n": n }))
            .await
            .unwrap();
    }
    // Past the hold limit twice.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(seen.lock().unwrap().is_empty(), "handled while paused");
    let (ready, consumers) = queue_state(&connect().await, &queue).await.unwrap();
    assert_eq!((ready, consumers), (6, 1), "four held, the consumer kept");
    producer.set_paused("work", false, "a test").await.unwrap();
    assert!(
        eventually(LONG, || async { seen.lock().unwrap().len() >= 10 }).await,
        "handled after the resume: {:?}",
        seen.lock().unwrap()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = seen.lock().unwrap()[0].0.clone();
    assert!(
        !["h0", "h1"].contains(&first.as_str()),
        "the first deliveries held were never given back: {first} came first"
    );
    let mut handled = seen.lock().unwrap().clone();
    handled.sort();
    let expected: Vec<(String, u32)> = {
        let mut all: Vec<_> = (0..10).map(|n| (format!("h{n}"), 1)).collect();
        all.sort();
        all
    };
    assert_eq!(handled, expected, "each once, on its first attempt");
    running.stop().await.unwrap();
}
