//! What RabbitMQ 4 changed, against the real broker (DESIGN.md,
//! *Clusters*: broker versions). Every quorum queue warren declares states
//! its delivery limit, so that RabbitMQ 4's default of 20 (which drops a
//! message delivered more often) never applies; classic queues and
//! streams have none; queues made by an earlier warren without the
//! argument still declare, with a warning that names them. The
//! supervisors' presence queue is durable (4.3 refuses queues that are
//! neither durable nor exclusive); an earlier warren's transient one is
//! used as it is.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// What warren states where it means "no limit" (`topology.rs`).
const NO_LIMIT: i64 = 1_000_000_000;

/// A queue's arguments, from the management API.
async fn arguments(queue: &str) -> Value {
    management_queue(queue).await["arguments"].clone()
}

/// A queue as the management API shows it (it learns of a new queue
/// within a few seconds).
async fn management_queue(queue: &str) -> Value {
    let url = format!(
        "http://guest:guest@127.0.0.1:15672/api/queues/%2f/{}",
        percent_encoding::utf8_percent_encode(queue, percent_encoding::NON_ALPHANUMERIC)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            return serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap();
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

const SUPERVISED: &str = "
pipeline: {name}
stages:
  a:
    command: [unused]
    scale: { min: 0, max: 1 }
";

/// Waits until the management API shows `queue` with `consumers`.
async fn consumed(queue: &str, consumers: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = management_queue(queue).await;
        if shown["consumers"].as_u64() == Some(consumers) {
            return shown;
        }
        assert!(std::time::Instant::now() < deadline, "{queue}: {shown}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_supervisors_presence_queue_is_durable() {
    let file = PipelineFile::new("presence", SUPERVISED);
    let presence = format!("{}.supervisors", file.name);
    let _cleanup = Cleanup::pipeline(&file.path, std::slice::from_ref(&presence));
    let mut supervisor = supervise_in(&file, file.dir.path(), "supervisor.log", &[]);
    let queue = consumed(&presence, 1).await;
    assert_eq!(queue["durable"], true, "{queue}");
    assert_eq!(queue["arguments"]["x-expires"], 3_600_000, "{queue}");
    supervisor.signal("TERM");
    supervisor.wait();
}

/// A presence queue an earlier warren declared transient (it stays until
/// the broker restarts) is joined as it is.
#[tokio::test]
async fn an_earlier_transient_presence_queue_is_joined() {
    let file = PipelineFile::new("oldpresence", SUPERVISED);
    let presence = format!("{}.supervisors", file.name);
    let _cleanup = Cleanup::pipeline(&file.path, std::slice::from_ref(&presence));
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("classic".into()),
    );
    channel
        .queue_declare(presence.as_str().into(), Default::default(), args)
        .await
        .unwrap();
    let mut supervisor = supervise_in(&file, file.dir.path(), "supervisor.log", &[]);
    let queue = consumed(&presence, 1).await;
    assert_eq!(queue["durable"], false, "{queue}");
    supervisor.signal("TERM");
    supervisor.wait();
}
