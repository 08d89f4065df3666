//! Poison among good messages, and a slow consumer near the broker's
//! acknowledgement timeout; both on a two-stage pipeline of the test worker
//! (which can panic and hang on request) and the built-in sink.

use std::time::Duration;

use crate::{
    common::{self, drain_queue, header},
    harness::{Row, Run, send_all},
};

/// `step` (the test worker) -> sink.
fn pipeline(step: &str, broker: &str) -> String {
    format!(
        "
pipeline: {{name}}
{broker}
stages:
  step:
    command: [{worker}, step]
    outputs: [sink]
{step}
  sink:
    sink: {{ path: {{sink}} }}
",
        worker = common::example_bin("test-worker").display()
    )
}

/// The sink record of a test-worker job: its `n`.
fn key(line: &serde_json::Value) -> Option<String> {
    Some(line["n"].as_u64()?.to_string())
}

/// Among 10,000 messages, 100 that are not JSON, 100 of the wrong shape,
/// 100 whose handler panics, 100 whose handler hangs past the timeout.
pub async fn poison() -> Row {
    let step = "    prefetch: 50
    concurrency: 20
    timeout: 1s
    retry: { attempts: 2, backoff: [1s] }
    scale: { min: 2, max: 2 }";
    let mut run = Run::start("fpoison", &pipeline(step, ""), None, key).await;
    let total = 10_000u64;
    let messages = (0..total).map(|i| {
        let (kind, body) = match i % 100 {
            0 => ("json", format!("not json {i}")),
            1 => ("shape", format!(r#"{{"n": "seven {i}"}}"#)),
            2 => ("panic", format!(r#"{{"n": {i}, "panic": true}}"#)),
            3 => ("hang", format!(r#"{{"n": {i}, "sleep_ms": 600000}}"#)),
            _ => ("good", format!(r#"{{"n": {i}}}"#)),
        };
        (format!("{kind}-{i}"), body)
    });
    send_all(&run.pipeline, "step", messages).await;
    run.sent = total;
    run.planted = 400;
    run.expected = (0..total)
        .filter(|i| i % 100 >= 4)
        .map(|i| i.to_string())
        .collect();
    let done = run.until_done(Duration::from_secs(180), |_| {}).await;
    let mut row = run
        .finish(
            "poison",
            "100 not JSON, 100 wrong shape, 100 panic, 100 hang, in 10,000".into(),
            done,
        )
        .await;
    // Every dead letter names its fault.
    let conn = common::connect().await;
    let dead = drain_queue(&conn, &format!("{}.step.dead", run.pipeline.name)).await;
    let mut wrong = Vec::new();
    for message in &dead {
        let id = message
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let reason = header(&message.properties, "x-warren-error").unwrap_or_default();
        let wanted = match id.split('-').next() {
            Some("json") => "body is not valid JSON",
            Some("shape") => "body does not fit",
            Some("panic") => "handler panicked: asked to panic",
            Some("hang") => "timed out after 1s",
            _ => "(not poison)",
        };
        if !reason.contains(wanted) {
            wrong.push(format!("{id}: {reason}"));
        }
    }
    if !wrong.is_empty() {
        row.fail(format!(
            "{} dead letters without the right reason: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        ));
    }
    // No crash loop: the workers never exited.
    let log = run.log();
    if log.contains("restarting in") || log.contains("STAGE FAILING") {
        row.fail(format!("workers exited:\n{}", run.log_tail(20)));
    }
    row
}

/// A handler that takes 12 s on a broker whose acknowledgement timeout is
/// 30 s: warren refuses settings that could hold a message 30 s (handling
/// and handing over a failure included), and with the ones it accepts the
/// broker never closes a channel.
pub async fn slow_consumer() -> Row {
    let broker = "broker: { ack_timeout: 30s }\ndefaults: { timeout: 8s }";
    for (step, field) in [
        ("    timeout: 25s", "stages.step.timeout"),
        (
            "    timeout: 15s\n    prefetch: 4\n    concurrency: 1",
            "stages.step.prefetch",
        ),
    ] {
        let refused = common::PipelineFile::new("fslowbad", &pipeline(step, broker));
        let out = common::warren(&["validate", refused.path.to_str().unwrap()]);
        let (_, stderr) = common::text(&out);
        if out.status.code() != Some(78) || !stderr.contains(field) {
            return Row::failed(
                "slow",
                format!("a config that can outlast the ack timeout was not refused:\n{stderr}"),
            );
        }
    }
    /// Puts the broker's consumer_timeout back, whatever happens.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            common::rabbitmqctl(&[
                "eval",
                "application:set_env(rabbit, consumer_timeout, 1800000).",
            ]);
        }
    }
    let _restore = Restore;
    common::rabbitmqctl(&[
        "eval",
        "application:set_env(rabbit, consumer_timeout, 30000).",
    ]);
    let step = "    timeout: 15s
    prefetch: 2
    concurrency: 2
    scale: { min: 1, max: 1 }";
    let mut run = Run::start("fslow", &pipeline(step, broker), None, key).await;
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    // 12 x 12 s on two slots: 72 s, past the broker's once-a-minute check.
    let total = 12u64;
    for i in 0..total {
        producer
            .send_with_id(
                "step",
                &format!("slow-{i}"),
                &serde_json::json!({"n": i, "sleep_ms": 12_000}),
            )
            .await
            .unwrap();
    }
    producer.close().await;
    run.sent = total;
    run.expected = (0..total).map(|i| i.to_string()).collect();
    let done = run.until_done(Duration::from_secs(150), |_| {}).await;
    let mut row = run
        .finish(
            "slow",
            "12 s handlers, broker consumer_timeout 30 s; 25 s timeout and prefetch 4 refused"
                .into(),
            done,
        )
        .await;
    let handled = common::records(&run.file.file("record.txt"))
        .iter()
        .filter(|(stage, _, _)| stage == "step")
        .count();
    if handled as u64 != total {
        row.fail(format!(
            "{handled} handlings for {total} messages: the broker closed a channel and redelivered"
        ));
    }
    if run.log().contains("Timeout value used") {
        row.fail(format!(
            "the broker's ack timeout fired:\n{}",
            run.log_tail(20)
        ));
    }
    row
}

/// One message among thousands kills the process that handles it
/// (`std::process::abort`, which no `catch_unwind` catches). It must end in
/// the dead-letter queue with the reason within its attempts, and the
/// messages its worker held with it must all be done.
pub async fn crash() -> Row {
    let step = "    prefetch: 50
    concurrency: 20
    timeout: 5s
    retry: { attempts: 3, backoff: [1s] }
    scale: { min: 2, max: 2 }";
    let mut run = Run::start("fcrash", &pipeline(step, ""), None, key).await;
    let total = 3000u64;
    let poison = 1234u64;
    let messages = (0..total).map(|i| {
        let body = if i == poison {
            format!(r#"{{"n": {i}, "abort": true}}"#)
        } else {
            format!(r#"{{"n": {i}}}"#)
        };
        (format!("m{i}"), body)
    });
    send_all(&run.pipeline, "step", messages).await;
    run.sent = total;
    run.planted = 1;
    run.expected = (0..total)
        .filter(|i| *i != poison)
        .map(|i| i.to_string())
        .collect();
    let done = run.until_done(Duration::from_secs(180), |_| {}).await;
    let mut row = run
        .finish(
            "crash",
            "1 message that aborts its worker's process, among 3000".into(),
            done,
        )
        .await;
    let conn = common::connect().await;
    let dead = drain_queue(&conn, &format!("{}.step.dead", run.pipeline.name)).await;
    match dead.as_slice() {
        [letter] => {
            let id = letter
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string());
            let reason = header(&letter.properties, "x-warren-error").unwrap_or_default();
            if id.as_deref() != Some("m1234") || !reason.contains("stopped before settling it") {
                row.fail(format!("the dead letter is {id:?}: {reason}"));
            }
        }
        other => row.fail(format!(
            "{} dead letters, wanted the one poison",
            other.len()
        )),
    }
    let crashes = run.log().matches("killed by signal 6").count();
    if crashes == 0 || crashes > 3 {
        row.fail(format!("{crashes} crashes for a poison with 3 attempts"));
    }
    row
}
