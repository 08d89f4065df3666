//! A job's round trip against the real broker (DESIGN.md, *Jobs*): the
//! result (`jobs.result`) through `warren job`, `GET /v1/jobs/{id}` and
//! the callback, truncated past `jobs.result_max`; progress reports from a
//! Rust handler and from an exec program; cancels through `warren job
//! --cancel` and `DELETE /v1/jobs/{id}`: queued messages acknowledged
//! unhandled (counted cancelled, never dead-lettered), a running handler
//! that sees `ctx.cancelled()`, an exec program that gets the cancel line,
//! a worker started after the cancel that still skips the job, and the
//! job settled as `cancelled` with its callback.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use warren::{Context, Failure, Producer, Worker};

/// Callback bodies by job, from a server on a free port.
type Calls = Arc<Mutex<HashMap<String, Vec<Value>>>>;

async fn callback_server() -> (u16, Calls) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Calls = Arc::default();
    let app = axum::Router::new().fallback({
        let calls = calls.clone();
        move |body: axum::body::Bytes| {
            let calls = calls.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let job = body["id"].as_str().unwrap_or_default().to_string();
                calls.lock().unwrap().entry(job).or_default().push(body);
                axum::http::StatusCode::OK
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, calls)
}

fn called(calls: &Calls, job: &str) -> Option<Value> {
    calls
        .lock()
        .unwrap()
        .get(job)
        .and_then(|c| c.last().cloned())
}

async fn get_json(url: &str) -> (u16, Value) {
    let answer = reqwest::get(url).await.expect("GET");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const RESULTS: &str = "
pipeline: {name}
jobs: { track: true, keep: 1h, callback: \"http://127.0.0.1:{port}/done\", result: out, result_max: 1KiB }
stages:
  split:
    command: [unused]
    outputs: [out]
  out:
    sink: { path: out.jsonl }
";

#[tokio::test]
async fn a_job_returns_its_result_and_progress_everywhere_truncated_past_its_bound() {
    let (port, calls) = callback_server().await;
    let file = PipelineFile::new("results", &RESULTS.replace("{port}", &port.to_string()));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    let _supervisor = supervise_in(&file, &dir, "supervisor.log", &["--stages", "out"]);
    let worker = spawn_worker(Worker::new().pipeline(pipeline.clone()).stage(
        "split",
        |body: Value, ctx: Context| async move {
            ctx.progress(0.5, "half way");
            for part in body["parts"].as_array().cloned().unwrap_or_default() {
                ctx.emit(&part).await?;
            }
            ctx.progress(1.0, "all emitted");
            Ok(())
        },
    ));
    let (_serve, base) = serve(&file).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id(
            "split",
            "small",
            &json!({"parts": [{"total": 1}, {"total": 2}]}),
        )
        .await
        .unwrap();
    // Three bodies of ~600 bytes: only the first fits in 1 KiB.
    let pad = "x".repeat(600);
    producer
        .send_with_id(
            "split",
            "big",
            &json!({"parts": [{"n": 0, "pad": pad}, {"n": 1, "pad": pad}, {"n": 2, "pad": pad}]}),
        )
        .await
        .unwrap();

    let (code, small) = warren_job(&file, &dir, "small", &["--wait", "60s"]).await;
    assert_eq!(
        (code, small["state"].as_str()),
        (0, Some("done")),
        "{small}"
    );
    assert_eq!(
        small["result"],
        json!([{"total": 1}, {"total": 2}]),
        "{small}"
    );
    assert!(small.get("result_truncated").is_none(), "{small}");
    assert_eq!(small["progress"]["split"]["fraction"], 1.0, "{small}");
    assert_eq!(small["progress"]["split"]["note"], "all emitted", "{small}");

    let (code, big) = warren_job(&file, &dir, "big", &["--wait", "60s"]).await;
    assert_eq!((code, big["state"].as_str()), (0, Some("done")), "{big}");
    assert_eq!(big["result_truncated"], true, "{big}");
    assert_eq!(big["result"].as_array().map(Vec::len), Some(1), "{big}");
    assert_eq!(big["stages"]["out"]["done"], 3, "{big}");

    // The front door says the same.
    let (status, answer) = get_json(&format!("{base}/v1/jobs/small?wait=30s")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], small["result"], "{answer}");
    assert_eq!(answer["progress"]["split"]["note"], "all emitted");
    let (_, answer) = get_json(&format!("{base}/v1/jobs/big?wait=30s")).await;
    assert_eq!(answer["result_truncated"], true, "{answer}");

    // And so does the callback's body.
    let posted = eventually(Duration::from_secs(60), || async {
        called(&calls, "small").is_some() && called(&calls, "big").is_some()
    })
    .await;
    assert!(posted, "callbacks: {:?}", calls.lock().unwrap());
    let body = called(&calls, "small").unwrap();
    assert_eq!(
        body["result"],
        json!([{"total": 1}, {"total": 2}]),
        "{body}"
    );
    let body = called(&calls, "big").unwrap();
    assert_eq!(body["result_truncated"], true, "{body}");

    // The text form shows them too.
    let out = warren(&["job", file.path.to_str().unwrap(), "small"]);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains(r#"result: [{"total":1},{"total":2}]"#)
            && stdout.contains("progress at split: 100% (all emitted)"),
        "{stdout} / {stderr}"
    );
    worker.stop().await.unwrap();
}

const CANCELS: &str = "
pipeline: {name}
jobs: { track: true, keep: 1h, callback: \"http://127.0.0.1:{port}/done\" }
defaults:
  timeout: 120s
  retry: { attempts: 3, backoff: [1s] }
stages:
  split:
    command: [unused]
    outputs: [work]
  work:
    command: [unused]
    prefetch: 1
    concurrency: 1
    outputs: [results]
  results:
    sink: { path: results.jsonl }
";

/// What the `work` handler saw.
#[derive(Default)]
struct Seen {
    started: AtomicBool,
    saw_cancel: AtomicBool,
    handled: Mutex<Vec<String>>,
}

fn cancel_worker(pipeline: &warren::Pipeline, seen: Arc<Seen>) -> Worker {
    Worker::new()
        .pipeline(pipeline.clone())
        .stage("split", |body: Value, ctx: Context| async move {
            for part in body["parts"].as_array().cloned().unwrap_or_default() {
                ctx.emit(&part).await?;
            }
            Ok(())
        })
        .stage("work", move |part: Value, ctx: Context| {
            let seen = seen.clone();
            async move {
                if part["slow"] == json!(true) {
                    seen.started.store(true, Ordering::SeqCst);
                    // Until the job is cancelled (the stage timeout is far).
                    ctx.cancelled().await;
                    seen.saw_cancel.store(ctx.job_cancelled(), Ordering::SeqCst);
                    return Err(Failure::retry("stopped: the job was cancelled"));
                }
                seen.handled.lock().unwrap().push(ctx.id().to_string());
                Ok(())
            }
        })
}

#[tokio::test]
async fn a_cancelled_job_is_skipped_everywhere_and_settles_cancelled() {
    let (port, calls) = callback_server().await;
    let file = PipelineFile::new("cancel", &CANCELS.replace("{port}", &port.to_string()));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    // The keeper (callbacks) runs in a supervisor, which serves the sink.
    let _supervisor = supervise_in(&file, &dir, "supervisor.log", &["--stages", "results"]);
    let seen = Arc::new(Seen::default());
    let first = spawn_worker(cancel_worker(&pipeline, seen.clone()));
    let producer = Producer::connect(&pipeline).await.unwrap();
    // One slow part first, then 20 that queue behind it (concurrency 1).
    let mut parts = vec![json!({"slow": true})];
    parts.extend((0..20).map(|n| json!({ "n": n })));
    producer
        .send_with_id("split", "c", &json!({ "parts": parts }))
        .await
        .unwrap();
    let started = eventually(Duration::from_secs(60), || async {
        seen.started.load(Ordering::SeqCst)
    })
    .await;
    assert!(started, "the slow part never started");

    let (code, view) = warren_job(&file, &dir, "c", &["--cancel"]).await;
    assert_eq!(
        (code, view["state"].as_str()),
        (0, Some("cancelled")),
        "{view}"
    );
    let saw = eventually(Duration::from_secs(30), || async {
        seen.saw_cancel.load(Ordering::SeqCst)
    })
    .await;
    assert!(saw, "the running handler never saw ctx.cancelled()");

    // Every queued part is acknowledged without being handled.
    let settled = eventually(Duration::from_secs(60), || async {
        warren_job(&file, &dir, "c", &[]).await.1["stages"]["work"]["cancelled"] == 21
    })
    .await;
    let (code, view) = warren_job(&file, &dir, "c", &[]).await;
    assert!(settled, "{view}");
    assert_eq!(code, 1, "a cancelled job is not a success: {view}");
    assert_eq!(view["stages"]["work"]["dead"], 0, "{view}");
    assert!(
        seen.handled.lock().unwrap().is_empty(),
        "handled after the cancel: {:?}",
        seen.handled.lock().unwrap()
    );
    let conn = connect().await;
    let work = format!("{}.work", file.name);
    let dead = format!("{}.work.dead", file.name);
    let empty = eventually(Duration::from_secs(30), || async {
        queue_state(&conn, &work).await.map(|(ready, _)| ready) == Some(0)
    })
    .await;
    assert!(empty, "{:?}", queue_state(&conn, &work).await);
    assert_eq!(
        queue_state(&conn, &dead).await.map(|(r, _)| r),
        Some(0),
        "nothing dead-lettered"
    );

    // Its callback says cancelled.
    let posted = eventually(Duration::from_secs(60), || async {
        called(&calls, "c").is_some()
    })
    .await;
    assert!(posted, "no callback: {:?}", calls.lock().unwrap());
    assert_eq!(called(&calls, "c").unwrap()["state"], "cancelled");

    // A worker started after the cancel still knows it: a message of the
    // job queued while no worker ran is skipped.
    first.stop().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    channel
        .basic_publish(
            "".into(),
            work.as_str().into(),
            Default::default(),
            br#"{"n": 99}"#,
            warren::message::new_properties("c.late", "c"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    producer
        .send_with_id("work", "other", &json!({"n": 1}))
        .await
        .unwrap();
    let second = spawn_worker(cancel_worker(&pipeline, seen.clone()));
    let (code, other) = warren_job(&file, &dir, "other", &["--wait", "60s"]).await;
    assert_eq!(
        (code, other["state"].as_str()),
        (0, Some("done")),
        "{other}"
    );
    let skipped = eventually(Duration::from_secs(60), || async {
        warren_job(&file, &dir, "c", &[]).await.1["stages"]["work"]["cancelled"] == 22
    })
    .await;
    assert!(skipped, "{}", warren_job(&file, &dir, "c", &[]).await.1);
    assert_eq!(*seen.handled.lock().unwrap(), ["other"]);
    second.stop().await.unwrap();
}

const EXEC: &str = "
pipeline: {name}
jobs: { track: true, keep: 1h }
stages:
  work:
    exec: [python3, -u, work.py]
    timeout: 120s
    retry: { attempts: 3, backoff: [1s] }
";

/// Reports progress on each message, then waits for its cancel line,
/// writes that line to `cancel.txt` and answers `retry`.
const WORK_PY: &str = r#"
import json, sys
waiting = {}
for line in sys.stdin:
    message = json.loads(line)
    if message.get("cancel") is True:
        with open("cancel.txt", "a") as f:
            f.write(line)
        print(json.dumps({"id": message["id"], "retry": "cancelled"}), flush=True)
        continue
    print(json.dumps({"id": message["id"], "progress": 0.25, "note": "a quarter"}), flush=True)
"#;

#[tokio::test]
async fn an_exec_program_reports_progress_and_gets_the_cancel_line() {
    let file = PipelineFile::new("execcancel", EXEC);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    std::fs::write(file.file("work.py"), WORK_PY).unwrap();
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let _worker = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "work"])
            .env("AMQP_URL", amqp_url())
            .current_dir(file.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file("worker.log")))
            .spawn()
            .expect("start warren worker"),
    );
    let (_serve, base) = serve(&file).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("work", "e", &json!({"n": 1}))
        .await
        .unwrap();
    let reported = eventually(Duration::from_secs(60), || async {
        get_json(&format!("{base}/v1/jobs/e")).await.1["progress"]["work"]["note"] == "a quarter"
    })
    .await;
    assert!(
        reported,
        "{} / {}",
        get_json(&format!("{base}/v1/jobs/e")).await.1,
        std::fs::read_to_string(file.file("worker.log")).unwrap_or_default()
    );
    let answer = reqwest::Client::new()
        .delete(format!("{base}/v1/jobs/e"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let (status, view) = get_json(&format!("{base}/v1/jobs/e?wait=30s")).await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("cancelled")),
        "{view}"
    );
    let told = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(file.file("cancel.txt")).is_ok_and(|t| !t.is_empty())
    })
    .await;
    assert!(
        told,
        "no cancel line: {}",
        std::fs::read_to_string(file.file("worker.log")).unwrap_or_default()
    );
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(file.file("cancel.txt"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(line, json!({"id": "e", "cancel": true}));
    // Its `retry` answer after the cancel is neither retried nor dead.
    let skipped = eventually(Duration::from_secs(30), || async {
        get_json(&format!("{base}/v1/jobs/e")).await.1["stages"]["work"]["cancelled"] == 1
    })
    .await;
    assert!(
        skipped,
        "{}",
        get_json(&format!("{base}/v1/jobs/e")).await.1
    );
    let conn = connect().await;
    assert_eq!(
        queue_state(&conn, &format!("{}.work.dead", file.name))
            .await
            .map(|(r, _)| r),
        Some(0)
    );
}
