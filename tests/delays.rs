//! Delays on the broker (DESIGN.md, `x-warren-not-before`) against the real
//! broker: a long delay in front of a short one does not hold it; no
//! message is handled before its time, whether `Producer::send_after`,
//! `send_at`, `warren send --delay`, ingest's `?delay=` or a raw producer's
//! header delayed it; a job shows `scheduled`, then `done`.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use common::*;
use lapin::{
    BasicProperties,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use warren::{Context, Producer, Worker, message::epoch_ms};

const PIPELINE: &str = "
pipeline: {name}
jobs: { track: true, keep: 1h }
defaults:
  prefetch: 50
  concurrency: 20
stages:
  work:
    command: [unused]
";

/// What the worker saw: each body's `name`, and when it was handled (ms).
type Seen = Arc<Mutex<Vec<(String, u64)>>>;

fn worker(pipeline: &warren::Pipeline, seen: &Seen) -> Worker {
    let seen = seen.clone();
    Worker::new()
        .pipeline(pipeline.clone())
        .stage("work", move |body: Value, _ctx: Context| {
            let seen = seen.clone();
            async move {
                let name = body["name"].as_str().unwrap_or_default().to_string();
                seen.lock().unwrap().push((name, epoch_ms()));
                Ok(())
            }
        })
}

fn handled(seen: &Seen, name: &str) -> Option<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, at)| *at)
}

/// Publishes `body` to the stage `work` as any AMQP client would, with an
/// `x-warren-not-before` header of `not_before` (ms).
async fn publish_with_header(pipeline: &str, body: &Value, not_before: u64) {
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "x-warren-not-before".into(),
        AMQPValue::LongLongInt(not_before as i64),
    );
    let confirm = channel
        .basic_publish(
            pipeline.into(),
            "work".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &serde_json::to_vec(body).unwrap(),
            BasicProperties::default()
                .with_message_id("raw".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, "".into()).await;
}

#[tokio::test]
async fn a_long_delay_in_front_does_not_hold_a_short_one_and_none_is_early() {
    let file = PipelineFile::new("delays", PIPELINE);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file.path);
    declare(&pipeline).await;
    let store = tempfile::tempdir().unwrap();
    let producer = Producer::connect(&pipeline).await.unwrap();
    let start = epoch_ms();
    // The long one first, in front of everything else.
    let long = producer
        .send_after("work", Duration::from_secs(25), &json!({"name": "long"}))
        .await
        .unwrap();
    let short = producer
        .send_after("work", Duration::from_secs(2), &json!({"name": "short"}))
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_millis(3500);
    producer
        .send_at("work", at, &json!({"name": "at"}))
        .await
        .unwrap();
    // A raw producer's header, straight into the stage queue: the worker
    // sends it to the cascade instead of handling it early.
    publish_with_header(&pipeline.name, &json!({"name": "raw"}), start + 3000).await;
    // A time already past: handled at once.
    producer
        .send_at(
            "work",
            SystemTime::now() - Duration::from_secs(60),
            &json!({"name": "past"}),
        )
        .await
        .unwrap();

    // Before any worker: the delayed job is scheduled, the other queued.
    let (_, view) = warren_job(&file, store.path(), &short, &[]).await;
    assert_eq!(view["state"], "scheduled", "{view}");
    assert_eq!(view["stages"]["work"]["scheduled"], 1, "{view}");
    assert!(
        view["not_before_ms"].as_u64() >= Some(start + 2000),
        "{view}"
    );

    let seen: Seen = Arc::default();
    let running = spawn_worker(worker(&pipeline, &seen));
    let due = ["past", "short", "raw", "at"];
    let all_due = eventually(Duration::from_secs(60), || async {
        due.iter().all(|name| handled(&seen, name).is_some())
    })
    .await;
    assert!(all_due, "not every short delay was handled: {seen:?}");
    // The long one, in front, held none of them.
    assert_eq!(handled(&seen, "long"), None, "{seen:?}");
    let (_, view) = warren_job(&file, store.path(), &long, &[]).await;
    assert_eq!(view["state"], "scheduled", "{view}");
    let (code, view) = warren_job(&file, store.path(), &short, &["--wait", "30s"]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");

    let (code, view) = warren_job(&file, store.path(), &long, &["--wait", "90s"]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
    // None early.
    let wanted = [
        ("past", start),
        ("short", start + 2000),
        ("raw", start + 3000),
        ("at", start + 3500),
        ("long", start + 25_000),
    ];
    for (name, not_before) in wanted {
        let at = handled(&seen, name).unwrap_or_else(|| panic!("{name} never handled"));
        assert!(
            at >= not_before,
            "{name} was handled {} ms early",
            not_before - at
        );
        eprintln!("{name}: {} ms after its time", at - not_before);
    }
    // Each once.
    assert_eq!(seen.lock().unwrap().len(), wanted.len(), "{seen:?}");
    running.stop().await.unwrap();
    // Nothing is left in the cascade.
    let conn = connect().await;
    for level in 0..warren::delay::LEVELS {
        let queue = warren::names::delay_level(&pipeline.name, level);
        let (ready, _) = queue_state(&conn, &queue).await.expect("the level exists");
        assert_eq!(ready, 0, "{queue} still holds messages");
    }
}

#[tokio::test]
async fn warren_send_delay_and_ingest_delay_wait_on_the_broker() {
    let file = PipelineFile::new("delaysend", PIPELINE);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file.path);
    declare(&pipeline).await;
    let path = file.path.to_str().unwrap();

    // Refused before anything is sent: too long, not a time, both.
    let input = file.file("in.jsonl");
    std::fs::write(&input, "{\"name\": \"sent\"}\n").unwrap();
    let input = input.to_str().unwrap();
    for bad in [
        vec!["--delay", "31d"],
        vec!["--at", "tomorrow"],
        vec!["--delay", "1s", "--at", "2030-01-01T00:00:00Z"],
    ] {
        let mut args = vec!["send", path, "work", input];
        args.extend(&bad);
        let out = warren(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {:?}", text(&out));
    }

    let before_send = epoch_ms();
    let out = warren(&["send", path, "work", input, "--delay", "4s"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("to be handled in 4s"),
        "{:?}",
        text(&out)
    );

    let (_serve, base) = serve(&file).await;
    let client = reqwest::Client::new();
    let post = |query: &str, name: &str| {
        client
            .post(format!("{base}/v1/stages/work/messages{query}"))
            .header("content-type", "application/json")
            .body(json!({ "name": name }).to_string())
            .send()
    };
    for bad in [
        "?delay=soon",
        "?delay=40d",
        "?at=2026-12-24",
        "?delay=1s&at=2030-01-01T00:00:00Z",
    ] {
        let answer = post(bad, "never").await.unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert!(body["error"].as_str().is_some(), "{bad}: {body}");
    }
    let before_post = epoch_ms();
    let answer = post("?delay=4s", "posted").await.unwrap();
    assert_eq!(answer.status(), 202);
    let answer: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    let job = answer["job"].as_str().unwrap().to_string();
    let store = tempfile::tempdir().unwrap();
    let (_, view) = warren_job(&file, store.path(), &job, &[]).await;
    assert_eq!(view["state"], "scheduled", "{view}");

    let seen: Seen = Arc::default();
    let running = spawn_worker(worker(&pipeline, &seen));
    let both = eventually(Duration::from_secs(60), || async {
        handled(&seen, "sent").is_some() && handled(&seen, "posted").is_some()
    })
    .await;
    assert!(both, "not both handled: {seen:?}");
    let sent = handled(&seen, "sent").unwrap();
    let posted = handled(&seen, "posted").unwrap();
    assert!(
        sent >= before_send + 4000,
        "warren send --delay 4s came {} ms early",
        before_send + 4000 - sent
    );
    assert!(
        posted >= before_post + 4000,
        "?delay=4s came {} ms early",
        before_post + 4000 - posted
    );
    assert_eq!(handled(&seen, "never"), None);
    let (code, view) = warren_job(&file, store.path(), &job, &["--wait", "30s"]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
    running.stop().await.unwrap();

    // Deleting the pipeline's topology deletes the cascade too.
    let conn = connect().await;
    warren::Topology::plan(&pipeline)
        .delete(&conn)
        .await
        .expect("delete");
    for exchange in [
        warren::names::delay_due(&pipeline.name),
        warren::names::delay_level(&pipeline.name, 0),
    ] {
        let channel = conn.create_channel().await.unwrap();
        let passive = channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert!(passive.is_err(), "{exchange} is still there");
    }
    assert_eq!(
        queue_state(&conn, &warren::names::delay_level(&pipeline.name, 3)).await,
        None
    );
}
