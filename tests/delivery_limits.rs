//! Delivery limits, against the real broker (DESIGN.md, *Clusters*: broker
//! versions): every quorum queue warren declares states its delivery limit,
//! so that RabbitMQ 4's default of 20 (which drops a message delivered more
//! often) never applies; classic queues and streams have none. Queues made
//! by an earlier warren without the argument still declare, with a warning
//! that names them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// What warren states where it means "no limit" (`topology.rs`).
const NO_LIMIT: i64 = 1_000_000_000;

/// A queue's arguments, from the management API (which learns of a new
/// queue within a few seconds).
async fn arguments(queue: &str) -> Value {
    let url = format!(
        "http://guest:guest@127.0.0.1:15672/api/queues/%2f/{}",
        percent_encoding::utf8_percent_encode(queue, percent_encoding::NON_ALPHANUMERIC)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            let answer: Value =
                serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap();
            return answer["arguments"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the management API does not know {queue}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_queue_states_its_delivery_limit() {
    let file = PipelineFile::new(
        "limits",
        "
pipeline: {name}
jobs: { track: true }
stages:
  a:
    command: [unused]
    retry: { attempts: 3, backoff: [1s, 5s] }
    outputs: [b]
  b:
    command: [unused]
    queue: { delivery_limit: 7 }
  c:
    command: [unused]
    queue: { type: classic }
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let pipeline = warren::config::load(&file.path).unwrap();
    let topology = warren::Topology::plan(&pipeline);
    let mut checked = 0;
    for queue in &topology.queues {
        let args = arguments(&queue.name).await;
        let limit = args.get("x-delivery-limit").and_then(Value::as_i64);
        let kind = args["x-queue-type"].as_str().unwrap_or("classic");
        let wanted = match kind {
            "quorum" if queue.name == format!("{}.b", file.name) => Some(7),
            "quorum" => Some(NO_LIMIT),
            _ => None,
        };
        assert_eq!(limit, wanted, "{} ({kind}): {args}", queue.name);
        checked += 1;
    }
    // a: 5 queues, b: 4, c: 4, the job stream and the keeper queue.
    assert!(checked >= 14, "{checked}");
    assert!(
        topology
            .describe()
            .iter()
            .any(|line| line.contains(&format!("x-delivery-limit={NO_LIMIT}"))),
        "`warren declare --dry-run` shows the limits"
    );
}

/// A pipeline whose queues an earlier warren declared without a delivery
/// limit: RabbitMQ refuses to add an argument to an existing queue, so
/// warren keeps them as they are, says which they are and what that means
/// on RabbitMQ 4, and loses nothing.
#[tokio::test]
async fn queues_made_without_a_delivery_limit_still_declare() {
    let file = PipelineFile::new(
        "legacy",
        "
pipeline: {name}
stages:
  a:
    command: [unused]
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    let quorum = |extra: &[(&str, &str)]| {
        let mut args = lapin::types::FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        for (k, v) in extra {
            args.insert(
                (*k).into(),
                lapin::types::AMQPValue::LongString((*v).into()),
            );
        }
        args
    };
    let dead = format!("{}.a.dead", file.name);
    let old = [
        (
            format!("{}.a", file.name),
            quorum(&[
                ("x-dead-letter-exchange", ""),
                ("x-dead-letter-routing-key", &dead),
            ]),
        ),
        (dead.clone(), quorum(&[])),
    ];
    for (name, args) in &old {
        channel
            .queue_declare(
                name.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args.clone(),
            )
            .await
            .unwrap();
    }
    publish_raw(&conn, "", &dead, b"{\"n\": 1}", Some("kept")).await;
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains(&dead), "{said}");
    assert!(said.contains("delivery limit"), "{said}");
    assert!(said.contains("RabbitMQ 4"), "{said}");
    // The old queues keep their arguments, the new ones state the limit.
    assert!(arguments(&dead).await.get("x-delivery-limit").is_none());
    let isolated = arguments(&format!("{}.a.isolated", file.name)).await;
    assert_eq!(isolated["x-delivery-limit"].as_i64(), Some(NO_LIMIT));
    assert_eq!(queue_state(&conn, &dead).await, Some((1, 0)));
}
