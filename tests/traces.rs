//! Traces (DESIGN.md, *Traces*) against a real OTLP receiver the test starts:
//! an HTTP server taking `POST /v1/traces` and decoding the protobuf with
//! the OTLP crate (`opentelemetry-proto`), as a collector would.
//!
//! A job enters `warren serve` with its caller's `traceparent`, goes through
//! three stages (each fails its first attempt and is retried; the last is
//! the built-in `http` stage, whose API answers 503 once) and calls back:
//! its six handlings arrive as spans of the caller's trace, each the child
//! of the handling that emitted its message (a retry the child of the same
//! parent as the attempt before); the `http` stage's calls, the callback
//! and every log line of a handling carry the trace.

mod common;

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::{
    ChildGuard, Cleanup, PipelineFile, amqp_url, declare, eventually, example_bin, log_file, serve,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value,
};
use prost::Message as _;

/// A span as the receiver got it.
#[derive(Clone, Debug)]
struct Got {
    trace: String,
    span: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
    callbacks: Arc<Mutex<Vec<Option<String>>>>,
    /// The `traceparent` of each call to the API of the `http` stage.
    calls: Arc<Mutex<Vec<Option<String>>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn traces(State(receiver): State<Receiver>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut spans = receiver.spans.lock().unwrap();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => s.clone(),
                            Some(Value::IntValue(n)) => n.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect();
                spans.push(Got {
                    trace: hex(&span.trace_id),
                    span: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    attributes,
                });
            }
        }
    }
    ""
}

fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn callback(State(receiver): State<Receiver>, headers: HeaderMap) -> &'static str {
    receiver
        .callbacks
        .lock()
        .unwrap()
        .push(traceparent(&headers));
    ""
}

/// The API of the `http` stage: 503 on the first call, then `{}`.
async fn api(State(receiver): State<Receiver>, headers: HeaderMap) -> (StatusCode, &'static str) {
    let mut calls = receiver.calls.lock().unwrap();
    calls.push(traceparent(&headers));
    if calls.len() == 1 {
        (StatusCode::SERVICE_UNAVAILABLE, "{}")
    } else {
        (StatusCode::OK, "{}")
    }
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_job_through_three_stages_and_a_retry_each_is_one_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/done", post(callback))
        .route("/api", post(api))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let worker = example_bin("test-worker");
    let file = PipelineFile::new(
        "traces",
        &"
pipeline: {name}
jobs: { track: true }
defaults:
  timeout: 10s
  retry: { attempts: 3, backoff: [1s] }
stages:
  a:
    command: [WORKER, a]
    outputs: [b]
  b:
    command: [WORKER, b]
    outputs: [c]
  c:
    http: { url: 'http://API/api' }
"
        .replace("WORKER", worker.to_str().unwrap())
        .replace("API", &address.to_string()),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    // The supervisor's workers export their spans; its job keeper calls
    // back.
    let log = file.file("supervisor.log");
    let _supervisor = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", file.path.to_str().unwrap(), "--poll", "500ms"])
            .env("AMQP_URL", amqp_url())
            .env("WARREN_TEST_RECORD", file.file("record.txt"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{address}"))
            .current_dir(file.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .expect("start warren supervise"),
    );
    let (_serve, base) = serve(&file).await;
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let answer = reqwest::Client::new()
        .post(format!(
            "{base}/v1/stages/a/messages?callback=http://{address}/done"
        ))
        .header("Content-Type", "application/json")
        .header("traceparent", &caller)
        .body(r#"{"n": 1, "fail_until": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);

    let complete = eventually(Duration::from_secs(90), || async {
        receiver.spans.lock().unwrap().len() >= 6 && !receiver.callbacks.lock().unwrap().is_empty()
    })
    .await;
    let spans = receiver.spans.lock().unwrap().clone();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(complete, "spans: {spans:#?}\nsupervisor log:\n{log}");
    assert_eq!(spans.len(), 6, "one span per handling: {spans:#?}");

    // Each stage's two attempts, found by name and attempt.
    let find = |stage: &str, attempt: &str| -> Got {
        spans
            .iter()
            .find(|s| {
                s.name == format!("handle {stage}")
                    && s.attributes.get("warren.attempt").map(String::as_str) == Some(attempt)
            })
            .unwrap_or_else(|| panic!("no span of {stage} at attempt {attempt}: {spans:#?}"))
            .clone()
    };
    for span in &spans {
        assert_eq!(span.trace, CALLER_TRACE, "the caller's trace: {spans:#?}");
    }
    let (a1, a2) = (find("a", "1"), find("a", "2"));
    let (b1, b2) = (find("b", "1"), find("b", "2"));
    let (c1, c2) = (find("c", "1"), find("c", "2"));
    for (first, second, parent) in [
        (&a1, &a2, CALLER_SPAN),
        (&b1, &b2, a2.span.as_str()),
        (&c1, &c2, b2.span.as_str()),
    ] {
        assert_eq!(first.parent, parent, "{first:?}");
        assert_eq!(
            second.parent, parent,
            "a retry has its attempt's parent: {second:?}"
        );
        assert_eq!(first.attributes["warren.outcome"], "retried", "{first:?}");
        assert_eq!(second.attributes["warren.outcome"], "done", "{second:?}");
        assert_eq!(
            first.attributes["warren.job"],
            a1.attributes["messaging.message.id"]
        );
    }
    assert_ne!(a1.span, a2.span);

    // The `http` stage's calls continue the trace: each attempt's own span
    // is their parent.
    let calls = receiver.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            Some(format!("00-{CALLER_TRACE}-{}-01", c1.span)),
            Some(format!("00-{CALLER_TRACE}-{}-01", c2.span))
        ],
        "{spans:#?}"
    );
    // The callback continues the caller's trace.
    let callbacks = receiver.callbacks.lock().unwrap().clone();
    assert!(
        callbacks[0]
            .as_deref()
            .is_some_and(|tp| tp.contains(CALLER_TRACE)),
        "{callbacks:?}"
    );
    // The retries' log lines name the message, its job and the trace.
    let retried: Vec<&str> = log.lines().filter(|l| l.contains("retry")).collect();
    assert!(!retried.is_empty(), "{log}");
    for line in retried {
        assert!(
            line.contains(&format!("trace_id={CALLER_TRACE}")) && line.contains("job="),
            "{line}"
        );
    }
}
