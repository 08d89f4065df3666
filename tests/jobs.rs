//! Jobs (DESIGN.md, *Jobs*) against the real broker: with `jobs.track`,
//! every handling's outcome reaches the job stream before its ack, and
//! `warren job` folds the stream into its answer: a job's state through
//! every value, the same answer from two stores, counts that duplicates do
//! not change, and `unknown` for a job never sent.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use warren::{Context, Failure, Producer, Worker};

const TRACKED: &str = "
pipeline: {name}
jobs: { track: true, keep: 1h }
defaults:
  prefetch: 20
  concurrency: 10
  retry: { attempts: 2, backoff: [5s] }
stages:
  split:
    command: [unused]
    outputs: [query]
  query:
    command: [unused]
";

/// A worker for TRACKED: `split` emits `{"n", "fail": bool, "dead": bool}`
/// for each of the body's `parts`; `query` fails its first attempt when
/// asked to, and dead-letters when asked to.
fn worker(pipeline: &warren::Pipeline) -> Worker {
    Worker::new()
        .pipeline(pipeline.clone())
        .stage("split", |body: Value, ctx: Context| async move {
            for part in body["parts"].as_array().cloned().unwrap_or_default() {
                ctx.emit(&part).await?;
            }
            Ok(())
        })
        .stage("query", |part: Value, ctx: Context| async move {
            if part["dead"] == json!(true) {
                return Err(Failure::dead("no such database"));
            }
            if part["fail"] == json!(true) && ctx.attempt() == 1 {
                return Err(Failure::retry("the database is busy"));
            }
            Ok(())
        })
}

#[tokio::test]
async fn a_job_goes_from_queued_through_retrying_to_done_or_failed() {
    let file = PipelineFile::new("jobs", TRACKED);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let box_a = tempfile::tempdir().unwrap();
    let box_b = tempfile::tempdir().unwrap();

    // Never sent: unknown at once, exit 1, even with --wait.
    let (code, view) = warren_job(&file, box_a.path(), "nope", &["--wait", "30s"]).await;
    assert_eq!((code, view["state"].as_str()), (1, Some("unknown")));

    let producer = Producer::connect(&pipeline).await.unwrap();
    let parts =
        |dead: bool| json!({"parts": [{"n": 0, "fail": true}, {"n": 1}, {"n": 2, "dead": dead}]});
    producer
        .send_with_id("split", "ok", &parts(false))
        .await
        .unwrap();
    producer
        .send_with_id("split", "bad", &parts(true))
        .await
        .unwrap();
    // Sent twice: the same job, counted once.
    producer
        .send_with_id("split", "ok", &parts(false))
        .await
        .unwrap();

    // No worker yet: queued.
    let (code, view) = warren_job(&file, box_a.path(), "ok", &[]).await;
    assert_eq!(
        (code, view["state"].as_str()),
        (0, Some("queued")),
        "{view}"
    );

    let running = spawn_worker(worker(&pipeline));
    // Part 0 waits 5 s for its second attempt.
    let retrying = eventually(Duration::from_secs(20), || async {
        warren_job(&file, box_a.path(), "ok", &[]).await.1["state"] == "retrying"
    })
    .await;
    assert!(retrying, "ok never showed as retrying");

    let (code, done) = warren_job(&file, box_a.path(), "ok", &["--wait", "60s"]).await;
    assert_eq!((code, done["state"].as_str()), (0, Some("done")), "{done}");
    assert_eq!(done["stages"]["split"]["done"], 1, "{done}");
    assert_eq!(done["stages"]["query"]["done"], 3, "{done}");
    assert!(done["finished_ms"].as_u64() >= done["created_ms"].as_u64());

    let (code, failed) = warren_job(&file, box_a.path(), "bad", &["--wait", "60s"]).await;
    assert_eq!(
        (code, failed["state"].as_str()),
        (1, Some("failed")),
        "{failed}"
    );
    assert_eq!(failed["dead_letters"][0]["id"], "bad.2", "{failed}");
    assert_eq!(failed["dead_letters"][0]["stage"], "query");
    assert_eq!(failed["dead_letters"][0]["reason"], "no such database");

    // Another box, reading the stream from its start, agrees.
    assert_eq!(warren_job(&file, box_b.path(), "ok", &[]).await.1, done);
    assert_eq!(warren_job(&file, box_b.path(), "bad", &[]).await.1, failed);
    running.stop().await.unwrap();
}

/// Workers SIGKILLed mid-job, and a `warren job` SIGKILLed while it folds:
/// every job still ends done with exact counts, whatever was handled twice.
#[tokio::test]
async fn kills_of_workers_and_of_a_tracker_change_no_final_count() {
    let file = PipelineFile::new(
        "jobkill",
        &WORK_LAST.replace("defaults:", "jobs: { track: true }\ndefaults:"),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let store = tempfile::tempdir().unwrap();
    let record = file.file("record.txt");
    let mut worker = test_worker(&file, &["work", "last"], &record);
    let producer = Producer::connect(&pipeline).await.unwrap();
    let jobs = 40;
    for n in 0..jobs {
        producer
            .send_with_id(
                "work",
                &format!("m{n}"),
                &json!({"n": n, "children": 5, "sleep_ms": 30}),
            )
            .await
            .unwrap();
    }
    // A tracker folding while the workers work, killed mid-way.
    let mut tracker = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["job", file.path.to_str().unwrap(), "m39", "--wait", "60s"])
            .env("AMQP_URL", amqp_url())
            .current_dir(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for round in 0..2 {
        let seen = 40 + round * 60;
        assert!(
            eventually(Duration::from_secs(30), || async {
                records(&record).len() >= seen
            })
            .await,
            "the workers did not get going"
        );
        if round == 0 {
            tracker.signal("KILL");
            tracker.wait();
        }
        worker.signal("KILL");
        worker.wait();
        worker = test_worker(&file, &["work", "last"], &record);
    }
    let handled = records(&record).len();
    for n in 0..jobs {
        let (code, view) =
            warren_job(&file, store.path(), &format!("m{n}"), &["--wait", "60s"]).await;
        assert_eq!(
            (code, view["state"].as_str()),
            (0, Some("done")),
            "m{n}: {view}"
        );
        assert_eq!(view["stages"]["work"]["done"], 1, "m{n}: {view}");
        assert_eq!(view["stages"]["last"]["done"], 5, "m{n}: {view}");
        assert_eq!(view["stages"]["last"]["waiting"], 0, "m{n}: {view}");
    }
    worker.signal("TERM");
    worker.wait();
    let handled_after = records(&record).len();
    assert!(
        handled_after >= jobs as usize * 6,
        "every message was handled at least once: {handled_after}"
    );
    eprintln!("handlings: {handled} when the last kill came, {handled_after} in all");
}

#[tokio::test]
async fn an_untracked_pipeline_says_so() {
    let file = PipelineFile::new(
        "untracked",
        "pipeline: {name}\nstages:\n  a:\n    command: [unused]\n",
    );
    let out = warren(&["job", file.path.to_str().unwrap(), "x"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not track jobs"), "{stderr}");
}

/// `warren run` on a tracked pipeline ends when every job it sent settled,
/// and names the failed ones.
#[tokio::test]
async fn run_waits_for_its_jobs_and_names_the_failed_ones() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py");
    let file = PipelineFile::new(
        "jobrun",
        &format!(
            "
pipeline: {{name}}
jobs: {{ track: true }}
defaults:
  retry: {{ attempts: 2, backoff: [1s] }}
stages:
  work:
    exec: [python3, {}]
    concurrency: 8
    outputs: [results]
  results:
    sink: {{ path: results.jsonl }}
",
            script.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let mut input = String::new();
    for n in 0..30 {
        let line = match n {
            // Retried once, then fine; dead-lettered.
            4 => json!({"id": "j4", "retry_until": 2, "after": "1s", "emit": [{"n": n}]}),
            11 | 23 => json!({"id": format!("j{n}"), "dead": "bad input"}),
            _ => json!({"id": format!("j{n}"), "sleep_ms": 50, "emit": [{"n": n}]}),
        };
        input.push_str(&format!("{line}\n"));
    }
    std::fs::write(file.file("input.jsonl"), input).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["run", file.path.to_str().unwrap(), "--input", "input.jsonl"])
        .args(["--id-field", "id"])
        .current_dir(file.dir.path())
        .env("AMQP_URL", amqp_url())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("failed jobs: j11 j23 (`warren job")
            || stdout.contains("failed jobs: j23 j11 (`warren job"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(file.file("results.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 28, "{written}");
    let (code, view) = warren_job(&file, file.dir.path(), "j4", &[]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
}

/// A record is forgotten `jobs.keep` after its last change: `unknown`.
#[tokio::test]
async fn a_job_is_unknown_once_older_than_keep() {
    let file = PipelineFile::new("jobkeep", &TRACKED.replace("keep: 1h", "keep: 1m"));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = tempfile::tempdir().unwrap();
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("split", "old", &json!({"parts": [{"n": 0}]}))
        .await
        .unwrap();
    let running = spawn_worker(worker(&pipeline));
    let (code, view) = warren_job(&file, dir.path(), "old", &["--wait", "60s"]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
    running.stop().await.unwrap();
    let finished = view["finished_ms"].as_u64().unwrap();
    // A minute after its last change, plus the clock's second.
    let wait = (finished + 61_000).saturating_sub(warren::message::epoch_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (code, view) = warren_job(&file, dir.path(), "old", &["--wait", "10s"]).await;
    assert_eq!(
        (code, view["state"].as_str()),
        (1, Some("unknown")),
        "{view}"
    );
}

/// Deletes the job stream of `pipeline` and declares the topology again,
/// as warren's own mismatch error tells users to when `jobs.keep` changes.
async fn recreate_job_stream(pipeline: &warren::Pipeline) {
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(
            warren::names::job_stream(&pipeline.name).as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "".into()).await;
    declare(pipeline).await;
}

/// After the job stream is deleted and declared again, a store that had
/// read the old one notices (its offset is past the new stream's end),
/// says so, and reads the new stream from its start.
#[tokio::test]
async fn a_recreated_job_stream_is_followed_again() {
    let file = PipelineFile::new("jobrecreate", TRACKED);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = tempfile::tempdir().unwrap();
    let producer = Producer::connect(&pipeline).await.unwrap();
    let running = spawn_worker(worker(&pipeline));
    for n in 0..5 {
        producer
            .send_with_id(
                "split",
                &format!("before{n}"),
                &json!({"parts": [{"n": n}]}),
            )
            .await
            .unwrap();
    }
    let (code, view) = warren_job(&file, dir.path(), "before4", &["--wait", "60s"]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
    running.stop().await.unwrap();
    producer.close().await;

    recreate_job_stream(&pipeline).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    let running = spawn_worker(worker(&pipeline));
    producer
        .send_with_id("split", "after", &json!({"parts": [{"n": 9}]}))
        .await
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["job", file.path.to_str().unwrap(), "after", "--json"])
        .args(["--wait", "60s"])
        .env("AMQP_URL", amqp_url())
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("\"state\":\"done\""), "{stdout}");
    assert!(stderr.contains("re-created"), "{stderr}");
    // What the store knew of the old stream stays.
    let (code, view) = warren_job(&file, dir.path(), "before0", &[]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
    running.stop().await.unwrap();
}

/// A store that fell behind the stream's retention (its next event was
/// dropped before it read it) says that it has a gap and which jobs it
/// cannot answer for, instead of answering from the hole as if nothing
/// were missing.
#[tokio::test]
async fn a_store_behind_the_retention_names_the_jobs_of_its_gap() {
    use lapin::{
        options::{BasicConsumeOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    };
    let file = PipelineFile::new("jobgap", TRACKED);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    let stream = warren::names::job_stream(&pipeline.name);
    // The stream declared by hand with tiny segments and a second of
    // retention, so that old segments go while the test runs.
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    args.insert("x-max-age".into(), AMQPValue::LongString("1s".into()));
    args.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongInt(2000),
    );
    channel
        .queue_declare(
            stream.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    let publisher = warren::publisher::Publisher::open(&conn).await.unwrap();
    let write = |job: &str, what: warren::jobs::What| {
        let event = warren::jobs::Event {
            job: job.into(),
            id: job.into(),
            stage: "split".into(),
            what,
            emitted: Vec::new(),
            callback: None,
            trace: None,
            at_ms: warren::message::epoch_ms(),
        };
        let publisher = publisher.clone();
        let stream = stream.clone();
        async move {
            publisher
                .publish_confirmed(
                    "",
                    &stream,
                    &event.encode(),
                    warren::message::new_properties(&event.id, &event.job),
                )
                .await
                .unwrap();
        }
    };
    write("open", warren::jobs::What::Sent).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, view) = warren_job(&file, dir.path(), "open", &[]).await;
    assert_eq!(
        (code, view["state"].as_str()),
        (0, Some("queued")),
        "{view}"
    );
    // Its end falls in what the retention drops before the store reads on.
    write("open", warren::jobs::What::Done).await;
    let first_offset = || async {
        let channel = conn.create_channel().await.unwrap();
        channel.basic_qos(10, Default::default()).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut consumer = channel
            .basic_consume(
                stream.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .unwrap();
        use futures_util::StreamExt as _;
        let first = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .ok()
            .flatten()
            .and_then(|d| d.ok())
            .and_then(|d| {
                match d
                    .properties
                    .headers()
                    .as_ref()?
                    .inner()
                    .get("x-stream-offset")
                {
                    Some(AMQPValue::LongLongInt(n)) => Some(*n as u64),
                    _ => None,
                }
            });
        let _ = channel.close(200, "".into()).await;
        first.unwrap_or(0)
    };
    let mut n = 0;
    let dropped = eventually(Duration::from_secs(60), || {
        n += 1;
        let filler = format!("filler{n}");
        let write = &write;
        let first_offset = &first_offset;
        async move {
            for _ in 0..20 {
                write(&filler, warren::jobs::What::Sent).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            first_offset().await > 2
        }
    })
    .await;
    assert!(dropped, "the stream's retention never dropped a segment");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["job", file.path.to_str().unwrap(), "open", "--json"])
        .env("AMQP_URL", amqp_url())
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stderr.contains("gap"), "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot answer for job open"), "{stderr}");
    let _ = conn.close(200, "".into()).await;
}
