//! Message ids that are not UTF-8, against the real broker: a PHP producer
//! sets 100 raw bytes as `message_id`; through a retry the id, the ids of
//! what is emitted from it and the http stage's `Idempotency-Key` stay the
//! same, and an id made of bytes and the text that spells their escape stay
//! two different messages.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, response::IntoResponse, routing::post};
use common::*;
use serde_json::Value;
use warren::{Context, Failure, Worker};

/// Publishes `{"n": i}` with the `i`th raw id, as a PHP app does
/// (php-amqplib writes the bytes as they are; `.ci/test` installs it).
fn php_publish(exchange: &str, key: &str, ids: &[Vec<u8>]) {
    let hex: Vec<String> = ids
        .iter()
        .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let script = format!(
        r#"
require 'PhpAmqpLib/autoload.php';
$url = parse_url(getenv('AMQP_URL'));
$c = new PhpAmqpLib\Connection\AMQPStreamConnection($url['host'], $url['port'] ?? 5672, urldecode($url['user']), urldecode($url['pass']));
$ch = $c->channel();
$ch->confirm_select();
foreach (explode(',', '{ids}') as $n => $hex) {{
    $m = new PhpAmqpLib\Message\AMQPMessage(json_encode(['n' => $n]), ['message_id' => hex2bin($hex), 'delivery_mode' => 2]);
    $ch->basic_publish($m, '{exchange}', '{key}', true);
}}
$ch->wait_for_pending_acks_returns(10);
echo "sent\n";
"#,
        ids = hex.join(","),
    );
    let out = std::process::Command::new("php")
        .args(["-r", &script])
        .env("AMQP_URL", amqp_url())
        .output()
        .expect("php (Debian: php-cli, php-amqplib)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An API that answers 500 to the first call with each Idempotency-Key and
/// 200 after; it records every key it saw.
async fn flaky_api() -> (u16, Arc<Mutex<Vec<String>>>) {
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn call(
        State(keys): State<Arc<Mutex<Vec<String>>>>,
        headers: HeaderMap,
    ) -> impl IntoResponse {
        let key = headers
            .get("idempotency-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let mut keys = keys.lock().unwrap();
        let first = !keys.contains(&key);
        keys.push(key);
        if first {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "try again")
        } else {
            (axum::http::StatusCode::OK, r#"{"graded": true}"#)
        }
    }
    let app = axum::Router::new()
        .route("/", post(call))
        .with_state(keys.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, keys)
}

#[tokio::test]
async fn ids_that_are_not_utf8_survive_a_retry_with_their_children_and_keys() {
    let (port, keys) = flaky_api().await;
    let file = PipelineFile::new(
        "ids",
        &format!(
            "
pipeline: {{name}}
defaults:
  timeout: 10s
  retry: {{ attempts: 4, backoff: [300ms] }}
stages:
  first:
    command: [unused]
    outputs: [call]
  call:
    http: {{ url: \"http://127.0.0.1:{port}/\", timeout: 5s }}
    outputs: [last]
  last:
    command: [unused]
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;

    // What each handling saw: (stage, id, attempt).
    let seen: Arc<Mutex<Vec<(String, String, u32)>>> = Arc::default();
    let (first_seen, last_seen) = (seen.clone(), seen.clone());
    let worker = Worker::new()
        .pipeline(pipeline.clone())
        .stage("first", move |body: Value, ctx: Context| {
            let seen = first_seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(("first".into(), ctx.id().to_string(), ctx.attempt()));
                // Emits on every attempt, fails the first: the retry emits
                // again, and must do so with the same ids.
                ctx.emit(&body).await?;
                if ctx.attempt() == 1 {
                    return Err(Failure::retry("once more"));
                }
                Ok(())
            }
        })
        .stage("last", move |_: Value, ctx: Context| {
            let seen = last_seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(("last".into(), ctx.id().to_string(), ctx.attempt()));
                Ok(())
            }
        });
    let running = spawn_worker(worker);
    let _http = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["worker", file.path.to_str().unwrap(), "--stage", "call"])
            .env("AMQP_URL", amqp_url())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file("call.log")))
            .spawn()
            .unwrap(),
    );

    // 100 bytes that are not UTF-8; the 100-byte text `\xff\xff...` that
    // spells the escape of 25 such bytes; and those 25 bytes.
    let ids = [vec![0xff; 100], b"\\xff".repeat(25), vec![0xff; 25]];
    php_publish(&file.name, "first", &ids);
    // How warren holds them (vendor/amq-protocol-types, `escape`): bytes
    // that are not UTF-8 as `\xNN`, and text that spells such an escape with
    // its backslash doubled.
    let held = [
        "\\xff".repeat(100),
        "\\\\xff".repeat(25),
        "\\xff".repeat(25),
    ];

    let done = eventually(Duration::from_secs(60), || async {
        let seen = seen.lock().unwrap();
        let last: BTreeSet<&str> = seen
            .iter()
            .filter(|(stage, _, _)| stage == "last")
            .map(|(_, id, _)| id.as_str())
            .collect();
        last.len() >= 3
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        done,
        "not every message reached the last stage: {seen:?}\ncall log:\n{}",
        std::fs::read_to_string(file.file("call.log")).unwrap_or_default()
    );
    running.stop().await.unwrap();

    // The first stage saw each id, the same on attempts 1 and 2.
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (stage, id, attempt) in &seen {
        if stage == "first" {
            attempts.entry(id.clone()).or_default().push(*attempt);
        }
    }
    let expected: BTreeSet<String> = held.iter().cloned().collect();
    assert_eq!(
        attempts.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "three different ids, each the same through its retry"
    );
    for (id, mut numbers) in attempts {
        numbers.sort();
        assert_eq!(numbers, [1, 2], "{id}");
    }
    // What both attempts emitted reached the API under one key per
    // message, `{id}.0`: its first call failed (a retry of the http stage)
    // and later ones carried the same key.
    let keys = keys.lock().unwrap().clone();
    let by_key: BTreeMap<&str, usize> = keys.iter().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(k.as_str()).or_default() += 1;
        m
    });
    let wanted_keys: BTreeSet<String> = held.iter().map(|id| format!("{id}.0")).collect();
    assert_eq!(
        by_key
            .keys()
            .map(|k| k.to_string())
            .collect::<BTreeSet<_>>(),
        wanted_keys
    );
    assert!(by_key.values().all(|n| *n >= 2), "{by_key:?}");
    // And the answers were emitted as `{id}.0.0`.
    let last: BTreeSet<String> = seen
        .iter()
        .filter(|(stage, _, _)| stage == "last")
        .map(|(_, id, _)| id.clone())
        .collect();
    let wanted_last: BTreeSet<String> = held.iter().map(|id| format!("{id}.0.0")).collect();
    assert_eq!(last, wanted_last);
}
