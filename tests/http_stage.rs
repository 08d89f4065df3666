//! The built-in `http` stage against a local API and the real broker:
//! an answer larger than `http.max_response` (declared, or streamed
//! without a length) is a failure whose reason says so, and is never read
//! whole; a smaller one is emitted.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use axum::{Router, body::Body, routing::get};
use common::*;
use serde_json::json;
use warren::Producer;

/// A JSON answer of about `bytes` bytes.
fn answer(bytes: usize) -> String {
    format!("{{\"filler\": \"{}\"}}", "x".repeat(bytes))
}

/// The API: `/small`, `/big` (2 MiB, its length declared), `/streamed`
/// (2 MiB, chunked: no length) and `/huge` (11 MiB, chunked).
async fn api() -> u16 {
    let streamed = |bytes: usize| {
        let chunks = answer(bytes)
            .into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>();
        Body::from_stream(futures_util::stream::iter(chunks))
    };
    let app = Router::new()
        .route("/small", get(|| async { answer(10) }))
        .route("/big", get(|| async { answer(2 * 1024 * 1024) }))
        .route(
            "/streamed",
            get(move || async move { streamed(2 * 1024 * 1024) }),
        )
        .route(
            "/huge",
            get(move || async move { streamed(11 * 1024 * 1024) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn worker(file: &PipelineFile, stage: &str) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", stage])
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file(&file.file(&format!("{stage}.log"))))
            .spawn()
            .expect("start warren worker"),
    )
}

#[tokio::test]
async fn an_answer_over_max_response_is_a_failure_that_says_so() {
    let port = api().await;
    let file = PipelineFile::new(
        "httpmax",
        &format!(
            "
pipeline: {{name}}
defaults:
  retry: {{ attempts: 1 }}
stages:
  capped:
    http: {{ method: GET, url: \"http://127.0.0.1:{port}/{{path}}\", max_response: 1MiB }}
    outputs: [out]
  default:
    http: {{ method: GET, url: \"http://127.0.0.1:{port}/{{path}}\" }}
    outputs: [out]
  out:
    command: [unused]
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    for path in ["big", "streamed", "small"] {
        producer
            .send_with_id("capped", path, &json!({ "path": path }))
            .await
            .unwrap();
    }
    producer
        .send_with_id("default", "huge", &json!({ "path": "huge" }))
        .await
        .unwrap();
    let _capped = worker(&file, "capped");
    let _default = worker(&file, "default");
    let conn = connect().await;
    let dead = |stage: &'static str, n: u32| {
        let queue = format!("{}.{stage}.dead", file.name);
        let conn = &conn;
        async move {
            eventually(Duration::from_secs(60), || async {
                queue_state(conn, &queue).await.map(|q| q.0) >= Some(n)
            })
            .await
        }
    };
    let logs = || {
        ["capped", "default"]
            .map(|s| std::fs::read_to_string(file.file(&format!("{s}.log"))).unwrap_or_default())
            .join("\n")
    };
    assert!(dead("capped", 2).await, "{}", logs());
    assert!(dead("default", 1).await, "{}", logs());
    let mut letters = drain_queue(&conn, &format!("{}.capped.dead", file.name)).await;
    letters.extend(drain_queue(&conn, &format!("{}.default.dead", file.name)).await);
    let mut reasons: Vec<(String, String)> = letters
        .iter()
        .map(|letter| {
            (
                warren::message::id_of(&letter.properties)
                    .unwrap()
                    .to_string(),
                header(&letter.properties, "x-warren-error").unwrap_or_default(),
            )
        })
        .collect();
    reasons.sort();
    let ids: Vec<&str> = reasons.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["big", "huge", "streamed"], "{reasons:?}");
    for (id, reason) in &reasons {
        let limit = if id == "huge" { "10 MiB" } else { "1 MiB" };
        assert!(
            reason.contains("http.max_response") && reason.contains(limit),
            "{id}: {reason}"
        );
    }
    // The small answer went on.
    let emitted = eventually(Duration::from_secs(30), || async {
        queue_state(&conn, &format!("{}.out", file.name))
            .await
            .map(|q| q.0)
            == Some(1)
    })
    .await;
    assert!(emitted, "{}", logs());
    let out = drain_queue(&conn, &format!("{}.out", file.name)).await;
    assert_eq!(warren::message::id_of(&out[0].properties), Some("small.0"));
    let _ = conn.close(200, "".into()).await;
}
