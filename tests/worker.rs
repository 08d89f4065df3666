//! The worker runtime against the real broker: fan-out, retries with
//! broker-side delays, dead letters, panics, SIGKILL and SIGTERM, and the
//! producer. Every count is exact.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use warren::{Context, Failure, Producer, Worker};

fn load(file: &PipelineFile) -> warren::Pipeline {
    warren::config::load(&file.path).expect("valid test pipeline")
}

const FANOUT: &str = "
pipeline: {name}
defaults:
  prefetch: 50
  concurrency: 20
  retry: { attempts: 3, backoff: [1s] }
stages:
  split:
    command: [unused]
    outputs: [double]
  double:
    command: [unused]
    outputs: [last]
  last:
    command: [unused]
";

#[tokio::test]
async fn a_three_stage_fan_out_delivers_every_message_exactly_once() {
    let file = PipelineFile::new("fanout", FANOUT);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let seen_in_last = seen.clone();
    let worker = Worker::new()
        .pipeline(pipeline.clone())
        .stage("split", |n: u64, ctx: Context| async move {
            for i in 0..10 {
                ctx.emit(&(n * 100 + i)).await?;
            }
            Ok(())
        })
        .stage("double", |n: u64, ctx: Context| async move {
            ctx.emit(&(n * 2)).await?;
            Ok(())
        })
        .stage("last", move |n: u64, ctx: Context| {
            let seen = seen_in_last.clone();
            async move {
                assert_eq!(n % 2, 0);
                *seen
                    .lock()
                    .unwrap()
                    .entry(ctx.id().to_string())
                    .or_default() += 1;
                Ok(())
            }
        });
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    for root in 0..100u64 {
        producer
            .send_with_id("split", &format!("r{root}"), &root)
            .await
            .unwrap();
    }
    let done = eventually(Duration::from_secs(15), || async {
        seen.lock().unwrap().len() >= 1000
    })
    .await;
    if !done {
        eprintln!(
            "{}",
            queue_report(&file, &["split", "double", "last"]).await
        );
    }
    assert!(
        done,
        "only {} of 1000 reached the last stage",
        seen.lock().unwrap().len()
    );
    // Give duplicates, if any, time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1000);
    for root in 0..100 {
        for i in 0..10 {
            let id = format!("r{root}.{i}.0");
            assert_eq!(seen.get(&id), Some(&1), "{id}");
        }
    }
    let conn = connect().await;
    for stage in ["split", "double", "last"] {
        assert_eq!(
            state_once_unconsumed(&conn, &format!("{}.{stage}", file.name)).await,
            Some((0, 0)),
            "{stage}"
        );
    }
}

#[tokio::test]
async fn a_handler_that_fails_twice_is_retried_after_the_configured_delays() {
    let file = PipelineFile::new(
        "retry",
        "
pipeline: {name}
stages:
  flaky:
    command: [unused]
    retry: { attempts: 5, backoff: [1s, 2s] }
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let log = attempts.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("flaky", move |_: Value, ctx: Context| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push((ctx.attempt(), Instant::now()));
                    if ctx.attempt() < 3 {
                        Err(Failure::retry("not yet"))
                    } else {
                        Ok(())
                    }
                }
            });
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer.send("flaky", &json!({"job": 1})).await.unwrap();

    // While it waits, the message sits in the broker's 1s retry queue.
    let conn = connect().await;
    let retry_queue = format!("{}.flaky.retry.1s", file.name);
    let waited_on_broker = eventually(Duration::from_secs(5), || async {
        queue_state(&conn, &retry_queue).await == Some((1, 0))
    })
    .await;
    assert!(
        waited_on_broker,
        "the retry never showed up in {retry_queue}"
    );

    // The second failure waits in the 2s queue.
    let seen_in_2s_queue = std::sync::atomic::AtomicBool::new(false);
    let second_queue = format!("{}.flaky.retry.2s", file.name);
    let finished = eventually(Duration::from_secs(30), || async {
        if queue_state(&conn, &second_queue).await == Some((1, 0)) {
            seen_in_2s_queue.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        attempts.lock().unwrap().len() >= 3
    })
    .await;
    assert!(finished, "attempts: {:?}", attempts.lock().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();
    let attempts = attempts.lock().unwrap();
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let first_wait = attempts[1].1 - attempts[0].1;
    let second_wait = attempts[2].1 - attempts[1].1;
    // Each wait lasted at least its delay (how much longer depends on the
    // machine's load; which queue held it is checked above and below).
    assert!(first_wait >= Duration::from_millis(950), "{first_wait:?}");
    assert!(
        second_wait >= Duration::from_millis(1950),
        "{second_wait:?}"
    );
    assert!(
        seen_in_2s_queue.load(std::sync::atomic::Ordering::SeqCst),
        "the second retry did not wait in {}.flaky.retry.2s",
        file.name
    );
}

const POISON: &str = "
pipeline: {name}
stages:
  strict:
    command: [unused]
    retry: { attempts: 3, backoff: [200ms] }
";

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    sku: String,
    quantity: u32,
}

#[tokio::test]
async fn a_handler_that_always_fails_ends_in_the_dead_letter_queue_with_headers() {
    let file = PipelineFile::new("dead", POISON);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("strict", move |_: Order, _ctx: Context| {
                let counter = counter.clone();
                async move {
                    *counter.lock().unwrap() += 1;
                    Err::<(), _>(Failure::retry("upstream says no"))
                }
            });
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("strict", "order-1", &json!({"sku": "a", "quantity": 1}))
        .await
        .unwrap();
    let conn = connect().await;
    let dead = format!("{}.strict.dead", file.name);
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_state(&conn, &dead).await == Some((1, 0))
        })
        .await
    );
    running.stop().await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 3, "one call per attempt");
    let messages = drain_queue(&conn, &dead).await;
    assert_eq!(messages.len(), 1);
    let props = &messages[0].delivery.properties;
    assert_eq!(props.message_id().as_ref().unwrap().as_str(), "order-1");
    assert_eq!(header(props, "x-warren-stage").as_deref(), Some("strict"));
    assert_eq!(
        header(props, "x-warren-error").as_deref(),
        Some("attempt 3 of 3 failed: upstream says no")
    );
    assert_eq!(warren::message::attempt_of(props), 3);
    let body: Value = serde_json::from_slice(&messages[0].delivery.data).unwrap();
    assert_eq!(body, json!({"sku": "a", "quantity": 1}));
}

#[tokio::test]
async fn bodies_that_are_not_json_or_not_the_type_are_dead_lettered_at_once() {
    let file = PipelineFile::new("malformed", POISON);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline)
            .stage("strict", move |order: Order, _ctx: Context| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(order.quantity);
                    Ok(())
                }
            });
    let running = spawn_worker(worker);
    let conn = connect().await;
    // Published by a plain AMQP client, as a web app in any language would.
    publish_raw(
        &conn,
        &file.name,
        "strict",
        b"{\"sku\": \"a\", \"quantity\": ",
        Some("truncated"),
    )
    .await;
    publish_raw(
        &conn,
        &file.name,
        "strict",
        b"{\"sku\": \"a\", \"quantity\": \"many\"}",
        Some("wrong-type"),
    )
    .await;
    publish_raw(
        &conn,
        &file.name,
        "strict",
        b"{\"sku\": \"b\", \"quantity\": 7}",
        None,
    )
    .await;
    let dead = format!("{}.strict.dead", file.name);
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_state(&conn, &dead).await == Some((2, 0))
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            handled.lock().unwrap().len() == 1
        })
        .await
    );
    running.stop().await.unwrap();
    assert_eq!(*handled.lock().unwrap(), vec![7]);
    let mut reasons: Vec<(String, String, u32)> = drain_queue(&conn, &dead)
        .await
        .iter()
        .map(|m| {
            let props = &m.delivery.properties;
            (
                props.message_id().as_ref().unwrap().to_string(),
                header(props, "x-warren-error").unwrap(),
                warren::message::attempt_of(props),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons[0].0, "truncated");
    assert!(
        reasons[0].1.starts_with("body is not valid JSON"),
        "{}",
        reasons[0].1
    );
    assert_eq!(reasons[0].2, 1, "dead-lettered on the first attempt");
    assert_eq!(reasons[1].0, "wrong-type");
    assert!(
        reasons[1].1.starts_with("body does not fit Order"),
        "{}",
        reasons[1].1
    );
}

#[tokio::test]
async fn a_panicking_handler_does_not_stop_the_worker() {
    let file = PipelineFile::new("panic", POISON);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let done = Arc::new(Mutex::new(0u32));
    let counter = done.clone();
    let worker = Worker::new().pipeline(pipeline.clone()).stage(
        "strict",
        move |order: Order, _ctx: Context| {
            let counter = counter.clone();
            async move {
                if order.quantity == 0 {
                    panic!("quantity zero");
                }
                *counter.lock().unwrap() += 1;
                Ok(())
            }
        },
    );
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("strict", "bomb", &json!({"sku": "x", "quantity": 0}))
        .await
        .unwrap();
    for q in 1..=20 {
        producer
            .send("strict", &json!({"sku": "ok", "quantity": q}))
            .await
            .unwrap();
    }
    let conn = connect().await;
    let dead = format!("{}.strict.dead", file.name);
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_state(&conn, &dead).await == Some((1, 0))
        })
        .await
    );
    // The worker is still consuming after three panics.
    producer
        .send("strict", &json!({"sku": "late", "quantity": 99}))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            *done.lock().unwrap() == 21
        })
        .await,
        "{}",
        done.lock().unwrap()
    );
    running.stop().await.unwrap();
    let dead_letters = drain_queue(&conn, &dead).await;
    let reason = header(&dead_letters[0].delivery.properties, "x-warren-error").unwrap();
    assert!(
        reason.contains("handler panicked: quantity zero"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let file = PipelineFile::new("sigkill", WORK_LAST);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let record = file.file("record.txt");
    let mut worker = test_worker(&file, &["work", "last"], &record);
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..200u64 {
        producer
            .send_with_id("work", &format!("m{n}"), &json!({"n": n, "sleep_ms": 20}))
            .await
            .unwrap();
    }
    // Kill it while it holds messages.
    assert!(
        eventually(Duration::from_secs(20), || async {
            records(&record).len() >= 40
        })
        .await
    );
    worker.signal("KILL");
    worker.wait();
    let before = records(&record).iter().filter(|r| r.0 == "last").count();
    assert!(before < 200, "the kill came too late to prove anything");

    let mut restarted = test_worker(&file, &["work", "last"], &record);
    let complete = eventually(Duration::from_secs(60), || async {
        let mut last: Vec<String> = records(&record)
            .into_iter()
            .filter(|r| r.0 == "last")
            .map(|r| r.1)
            .collect();
        last.sort();
        last.dedup();
        last.len() == 200
    })
    .await;
    restarted.signal("TERM");
    restarted.wait();
    if !complete {
        eprintln!("{}", queue_report(&file, &["work", "last"]).await);
    }
    assert!(
        complete,
        "not every message reached the last stage after the restart"
    );
    let last: Vec<String> = records(&record)
        .into_iter()
        .filter(|r| r.0 == "last")
        .map(|r| r.1)
        .collect();
    // Duplicates are allowed after a kill, and recognisable: the same id.
    for n in 0..200 {
        assert!(last.contains(&format!("m{n}.0")), "m{n}.0 missing");
    }
    assert!(
        last.iter()
            .all(|id| id.starts_with('m') && id.ends_with(".0"))
    );
}

#[tokio::test]
async fn sigterm_lets_messages_in_flight_finish_and_exits_0() {
    let file = PipelineFile::new("sigterm", WORK_LAST);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let record = file.file("record.txt");
    let mut worker = test_worker(&file, &["work"], &record);
    let producer = Producer::connect(&pipeline).await.unwrap();
    // Wait until the worker consumes, then give it ten slow messages.
    let conn = connect().await;
    let queue = format!("{}.work", file.name);
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_state(&conn, &queue).await == Some((0, 1))
        })
        .await
    );
    for n in 0..10u64 {
        producer
            .send_with_id(
                "work",
                &format!("slow{n}"),
                &json!({"n": n, "sleep_ms": 1500}),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.signal("TERM");
    let status = worker.wait();
    assert_eq!(status.code(), Some(0));
    // All ten finished (none was cut off), each once, and all were acked.
    let mut done: Vec<String> = records(&record).into_iter().map(|r| r.1).collect();
    done.sort();
    assert_eq!(
        done,
        (0..10).map(|n| format!("slow{n}")).collect::<Vec<_>>()
    );
    assert_eq!(state_once_unconsumed(&conn, &queue).await, Some((0, 0)));
    // Their outputs were confirmed before the acks.
    assert_eq!(
        queue_state(&conn, &format!("{}.last", file.name)).await,
        Some((10, 0))
    );
}

#[tokio::test]
async fn the_producer_sends_confirmed_and_fails_fast() {
    let file = PipelineFile::new("producer", WORK_LAST);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    // Not declared yet: nothing routes the message, and that is an error.
    let producer = Producer::connect(&pipeline).await.unwrap();
    let error = producer.send("work", &json!({"n": 1})).await.unwrap_err();
    assert!(
        error.to_string().contains("no queue is bound") || error.to_string().contains("NOT_FOUND"),
        "{error}"
    );

    warren::Topology::plan(&pipeline)
        .declare(&connect().await)
        .await
        .unwrap();
    let producer = Producer::connect(&pipeline).await.unwrap();
    let shared = producer.clone();
    let sends = (0..50u64).map(|n| {
        let p = shared.clone();
        tokio::spawn(async move {
            p.send_with_id("work", &format!("p{n}"), &json!({"n": n}))
                .await
        })
    });
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(
        queue_state(&connect().await, &format!("{}.work", file.name)).await,
        Some((50, 0))
    );
    let error = producer.send("nowhere", &1).await.unwrap_err();
    assert!(
        error.to_string().contains("has no stage `nowhere`"),
        "{error}"
    );

    // A broker that is not there: a clear error, quickly.
    let mut away = pipeline.clone();
    away.broker.urls = warren::BrokerUrls::parse("amqp://app:hunter2@127.0.0.1:1/%2f").unwrap();
    // It gives up by itself (a hang would end in this test's own limit).
    let attempt = Producer::connect_with_timeout(&away, Duration::from_secs(2));
    let error = tokio::time::timeout(Duration::from_secs(60), attempt)
        .await
        .expect("connect hung instead of failing after its 2 s timeout")
        .err()
        .unwrap();
    let text = error.to_string();
    assert!(
        text.contains("127.0.0.1:1") && !text.contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn retry_after_longer_than_every_retry_queue_hops_until_it_is_due() {
    let file = PipelineFile::new(
        "retryafter",
        "
pipeline: {name}
stages:
  limited:
    command: [unused]
    retry: { attempts: 3, backoff: [1s] }
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let seen: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let log = seen.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("limited", move |_: Value, ctx: Context| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push((ctx.attempt(), Instant::now()));
                    if ctx.attempt() == 1 {
                        // Like a 429 with Retry-After: 3 while retry queues hold 1s.
                        return Err(Failure::retry_after(Duration::from_secs(3), "rate limited"));
                    }
                    Ok(())
                }
            });
    let running = spawn_worker(worker);
    Producer::connect(&pipeline)
        .await
        .unwrap()
        .send("limited", &json!({}))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            seen.lock().unwrap().len() >= 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    // The early returns from the 1s queue did not reach the handler.
    assert_eq!(seen.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![1, 2]);
    let waited = seen[1].1 - seen[0].1;
    assert!(waited >= Duration::from_millis(2950), "{waited:?}");
}

/// The job stream of a tracked pipeline deleted while its worker works (as
/// when the stream's leader is lost): the handlings whose events it did not
/// take go back to the queue uncharged, the stage pauses until the stream
/// answers again (the worker declares it anew), and every message is done
/// at its first attempt: none isolated, none dead-lettered.
#[tokio::test]
async fn while_the_job_stream_is_away_no_attempt_is_charged() {
    let file = PipelineFile::new(
        "streamaway",
        "
pipeline: {name}
jobs: { track: true }
defaults:
  prefetch: 20
  concurrency: 10
  retry: { attempts: 2, backoff: [1s] }
stages:
  step:
    command: [unused]
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let handled: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let log = handled.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("step", move |_: u64, ctx: Context| {
                let log = log.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    log.lock()
                        .unwrap()
                        .push((ctx.id().to_string(), ctx.attempt()));
                    Ok(())
                }
            });
    let producer = Producer::connect(&pipeline).await.unwrap();
    const MESSAGES: u64 = 300;
    for n in 0..MESSAGES {
        producer
            .send_with_id("step", &format!("m{n}"), &n)
            .await
            .unwrap();
    }
    let running = spawn_worker(worker);
    assert!(
        eventually(Duration::from_secs(30), || async {
            handled.lock().unwrap().len() >= 30
        })
        .await,
        "the worker did not start"
    );
    // The stream goes away while handlings are in flight.
    let conn = connect().await;
    let stream = warren::names::job_stream(&pipeline.name);
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(stream.as_str().into(), Default::default())
        .await
        .unwrap();
    let deleted_at = handled.lock().unwrap().len();
    let distinct = || {
        let mut ids: Vec<String> = handled
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.0.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len() as u64
    };
    let done = eventually(Duration::from_secs(90), || async { distinct() == MESSAGES }).await;
    // Give a late redelivery, if any, time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await.unwrap();
    assert!(
        done,
        "{} of {MESSAGES} done; the stream was deleted after {deleted_at}\n{}",
        distinct(),
        queue_report(&file, &["step"]).await
    );
    assert!(deleted_at < MESSAGES as usize, "the deletion came too late");
    let charged: Vec<(String, u32)> = handled
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, attempt)| *attempt != 1)
        .cloned()
        .collect();
    assert!(
        charged.is_empty(),
        "{} handlings were charged an attempt while the stream was away: {:?}",
        charged.len(),
        &charged[..charged.len().min(5)]
    );
    let step = format!("{}.step", file.name);
    for queue in [format!("{step}.dead"), format!("{step}.isolated")] {
        assert_eq!(
            state_once_unconsumed(&conn, &queue).await,
            Some((0, 0)),
            "{queue}"
        );
    }
    // The worker declared the stream again.
    assert!(queue_state(&conn, &stream).await.is_some());
}

/// A message handed back uncharged while it is isolated (the code handling
/// it never got it, `Failure::untouched`) stays isolated: the next crash it
/// meets is handled alone, so it is its own and charged. Sent back to the
/// stage queue instead, it would be a suspect among others again, never
/// charged.
#[tokio::test]
async fn an_isolated_message_given_back_stays_isolated() {
    let file = PipelineFile::new(
        "isoback",
        "
pipeline: {name}
stages:
  work:
    command: [unused]
    retry: { attempts: 3, backoff: [100ms] }
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = load(&file);
    declare(&pipeline).await;
    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = calls.clone();
    let worker =
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("work", move |_: Value, ctx: Context| {
                let seen = seen.clone();
                async move {
                    let call = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(ctx.attempt());
                        seen.len()
                    };
                    match call {
                        // A crash among others: isolated, uncharged.
                        1 => Err(Failure::suspect("the program died holding 3")),
                        // Isolated, but the program was starting again.
                        2 => Err(Failure::untouched("no program took it")),
                        // Alone, the crash is its own: charged.
                        3 => Err(Failure::suspect("the program died holding 1")),
                        _ => Ok(()),
                    }
                }
            });
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer.send("work", &json!({"n": 1})).await.unwrap();
    let finished = eventually(Duration::from_secs(30), || async {
        calls.lock().unwrap().len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert!(finished, "calls: {calls:?}");
    assert_eq!(calls, vec![1, 1, 1, 2], "the attempt of each call");
}
