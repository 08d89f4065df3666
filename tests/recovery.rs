//! Recovery without a process restart. These tests close every connection
//! of the broker or change its settings, so each runs on a broker of its
//! own (`common::OwnBroker`, one node on port 5721; the broker on 5672 is
//! never touched), one at a time.

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use warren::{Context, Producer, Worker};

/// One test at a time: they disturb the whole broker.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker of the test's own, removed when dropped.
fn own_broker() -> OwnBroker {
    let broker = OwnBroker::start("wr", 5721, 1);
    use_own_broker(&broker);
    broker
}

#[tokio::test]
async fn a_worker_resumes_by_itself_after_close_all_connections() {
    let _alone = ALONE.lock().await;
    let _broker = own_broker();
    let file = PipelineFile::new("closeall", WORK_LAST);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file.path);
    declare(&pipeline).await;
    let record = file.file("record.txt");
    let mut worker = test_worker(&file, &["work", "last"], &record);
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..600u64 {
        producer
            .send_with_id("work", &format!("m{n}"), &json!({"n": n, "sleep_ms": 40}))
            .await
            .unwrap();
    }
    let last_ids = || -> HashSet<String> {
        records(&record)
            .into_iter()
            .filter(|r| r.0 == "last")
            .map(|r| r.1)
            .collect()
    };
    let work_queue = format!("{}.work", file.name);
    for round in 1..=3 {
        // Each time, once the worker consumes again and has made progress.
        let target = round * 100;
        let ready = eventually(Duration::from_secs(30), || async {
            // A connection of its own each time: ours is closed too.
            last_ids().len() >= target
                && queue_state(&connect().await, &work_queue)
                    .await
                    .is_some_and(|(_, consumers)| consumers == 1)
        })
        .await;
        assert!(
            ready,
            "round {round}: no progress\n{}",
            queue_report(&file, &["work", "last"]).await
        );
        rabbitmqctl(&["close_all_connections", "recovery test"]);
    }

    let reconnects = || {
        std::fs::read_to_string(file.file("record.log"))
            .unwrap_or_default()
            .matches("reconnected after")
            .count()
    };
    // Complete, and back after the third close (the work may be done before
    // the worker has reconnected: a stop then would not show it).
    let complete = eventually(Duration::from_secs(60), || async {
        last_ids().len() == 600 && reconnects() >= 3
    })
    .await;
    let still_running = worker.running();
    worker.signal("TERM");
    let status = worker.wait();
    let report = queue_report(&file, &["work", "last"]).await;
    assert!(
        complete,
        "{} of 600 reached the last stage, {} reconnections\n{report}",
        last_ids().len(),
        reconnects()
    );
    assert!(
        still_running,
        "the worker exited instead of reconnecting\n{report}"
    );
    assert_eq!(status.code(), Some(0), "{report}");
    let log = std::fs::read_to_string(file.file("record.log")).unwrap();
    assert!(log.matches("reconnected after").count() >= 3, "{log}");
    // Said once per loss, not in a loop.
    assert!(log.matches("lost the broker").count() <= 6, "{log}");
}

#[tokio::test]
async fn a_channel_closed_by_the_ack_timeout_is_recovered() {
    let _alone = ALONE.lock().await;
    let _broker = own_broker();
    /// Puts the broker's consumer_timeout back, whatever happens.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            rabbitmqctl(&[
                "eval",
                "application:set_env(rabbit, consumer_timeout, 1800000).",
            ]);
        }
    }
    let file = PipelineFile::new(
        "acktimeout",
        "
pipeline: {name}
stages:
  slow:
    command: [unused]
    timeout: 5m
    prefetch: 1
    concurrency: 1
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file.path);
    declare(&pipeline).await;
    let _restore = Restore;
    // A broker whose acknowledgement timeout is far below the handler's.
    rabbitmqctl(&[
        "eval",
        "application:set_env(rabbit, consumer_timeout, 3000).",
    ]);
    let calls: Arc<Mutex<Vec<bool>>> = Arc::default();
    let log = calls.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("slow", move |_: Value, _ctx: Context| {
                let log = log.clone();
                async move {
                    let first = log.lock().unwrap().is_empty();
                    log.lock().unwrap().push(first);
                    if first {
                        // Longer than the broker allows: it closes the channel.
                        tokio::time::sleep(Duration::from_secs(240)).await;
                    }
                    Ok(())
                }
            });
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("slow", "held", &json!({}))
        .await
        .unwrap();
    // The broker checks the timeout about once a minute.
    let recovered = eventually(Duration::from_secs(150), || async {
        calls.lock().unwrap().len() >= 2
    })
    .await;
    let conn = connect().await;
    let queue = format!("{}.slow", file.name);
    let drained = eventually(Duration::from_secs(10), || async {
        queue_state(&conn, &queue).await == Some((0, 1))
    })
    .await;
    running.stop().await.unwrap();
    assert!(
        recovered,
        "the message was not handled again after the channel closed: {:?}",
        calls.lock().unwrap()
    );
    assert!(
        drained,
        "the redelivered message was not acked by the new session"
    );
}
