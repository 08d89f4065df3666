//! Job tracking's figures (README, *Jobs*):
//!
//! ```sh
//! cargo bench -p warren-command --bench jobs                 # 1,000,000 jobs and events
//! cargo bench -p warren-command --bench jobs -- --jobs 100000 --events 100000
//! ```
//!
//! 1. A store of `--jobs` jobs (four events each: sent, the first message
//!    done emitting two, both done), built the way a tracker folds (1,000
//!    jobs per transaction); then the time to answer for one job (read its
//!    record and make its view, what `warren job` and `GET /v1/jobs/{id}`
//!    do once caught up) for 10,000 jobs picked at random: median, p99, max.
//! 2. A tracker's catch-up with `--events` events behind: they are written
//!    to a real job stream on the broker (100 events per stream message, as
//!    a busy stage's recorder batches them), then a tracker with an empty
//!    store reads them all; events per second.
//! 3. Cancels (`--part cancels`, or after the others): three workers in
//!    this process (three readers of the cancel stream, as on three boxes)
//!    hold `--cancels` running jobs; each job is cancelled in turn, and the
//!    time from the cancel's call to its handler seeing `ctx.cancelled()`
//!    is measured (median, p99, max). Then one handler reports progress
//!    100,000 times: the time per `ctx.progress` call.

#[path = "../args.rs"]
mod args;
use args::value;

use std::time::{Duration, Instant};

use warren::{
    jobs::{Emission, Event, JobRecord, JobState, What},
    publisher::Publisher,
};
use warren_ops::jobs::{store::Store, tracker::Tracker};

/// The four events of job `n`.
fn events_of(n: u64, at_ms: u64) -> [Event; 4] {
    let job = format!("job-{n}");
    let event = |id: String, stage: &str, what: What, emitted: Vec<Emission>| Event {
        job: job.clone(),
        id,
        stage: stage.into(),
        what,
        emitted,
        callback: None,
        trace: None,
        at_ms,
    };
    let children: Vec<Emission> = (0..2)
        .map(|c| Emission {
            to: "query".into(),
            id: format!("{job}.{c}"),
        })
        .collect();
    [
        event(job.clone(), "split", What::Sent, Vec::new()),
        event(job.clone(), "split", What::Done, children),
        event(format!("{job}.0"), "query", What::Done, Vec::new()),
        event(format!("{job}.1"), "query", What::Done, Vec::new()),
    ]
}

/// A pseudo-random sequence (xorshift), the same in every run.
fn picks(count: usize, below: u64) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        })
        .collect()
}

fn store_figures(jobs: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("jobs.redb");
    let store = Store::open(&path).expect("a store").expect("not busy");
    let now = warren::message::epoch_ms();
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut offset = 0;
    for n in 0..jobs {
        batch.extend(events_of(n, now));
        if batch.len() >= 4000 || n + 1 == jobs {
            offset += batch.len() as u64;
            store.fold(&batch, offset, 1).expect("fold");
            batch.clear();
        }
    }
    let built = started.elapsed();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let keep = 7 * 24 * 3600 * 1000;
    let mut times = Vec::new();
    for n in picks(10_000, jobs) {
        let job = format!("job-{n}");
        let asked = Instant::now();
        let record: JobRecord = store.get(&job).expect("get").expect("a record");
        let view = record.view(&job, now, keep);
        times.push(asked.elapsed());
        assert_eq!(view.state, JobState::Done);
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "store of {jobs} jobs ({} events): built in {:.1}s, {:.0} MiB on disk; an answer: median {:?}, p99 {:?}, max {:?}",
        jobs * 4,
        built.as_secs_f64(),
        size as f64 / 1048576.0,
        at(0.5),
        at(0.99),
        times[times.len() - 1]
    );
}

async fn catch_up_figures(events: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("p.yaml");
    let name = format!("bench_jobs_{}", std::process::id());
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}\njobs: {{ track: true }}\nstages:\n  split:\n    command: [unused]\n"
        ),
    )
    .expect("write the pipeline");
    let pipeline = warren::config::load(&file).expect("a pipeline");
    let topology = warren::Topology::plan(&pipeline);
    let connection = warren::connection::open(&pipeline.broker.urls, "bench jobs")
        .await
        .expect("the broker");
    topology.declare(&connection).await.expect("declare");
    let publisher = Publisher::open(&connection).await.expect("a publisher");
    let stream = warren::names::job_stream(&name);
    let now = warren::message::epoch_ms();
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut batch: Vec<Event> = Vec::new();
    let jobs = events.div_ceil(4);
    for n in 0..jobs {
        batch.extend(events_of(n, now));
        if batch.len() >= 100 || n + 1 == jobs {
            let body = serde_json::to_vec(&batch).expect("JSON");
            let props = warren::message::new_properties(&format!("b{n}"), "bench");
            pending.push(
                publisher
                    .publish("", &stream, &body, props)
                    .await
                    .expect("publish"),
            );
            batch.clear();
        }
        if pending.len() >= 256 {
            for unconfirmed in pending.drain(..) {
                unconfirmed.confirmed().await.expect("confirmed");
            }
        }
    }
    for unconfirmed in pending.drain(..) {
        unconfirmed.confirmed().await.expect("confirmed");
    }
    let written = started.elapsed();
    let store_path = dir.path().join("tracker.redb");
    let store = Store::open(&store_path)
        .expect("a store")
        .expect("not busy");
    let started = Instant::now();
    let mut tracker = Tracker::open(&pipeline, store).await.expect("a tracker");
    tracker
        .catch_up(tokio::time::Instant::now() + Duration::from_secs(600))
        .await
        .expect("catch up");
    let caught_up = started.elapsed();
    let last = format!("job-{}", jobs - 1);
    let state = tracker.view(&last).expect("a view").state;
    tracker.close().await;
    assert_eq!(state, JobState::Done, "the last job was folded in");
    println!(
        "tracker catch-up: {} events ({} stream messages, written in {:.1}s) read and folded in {:.1}s, {:.0} events/s",
        jobs * 4,
        jobs * 4 / 100,
        written.as_secs_f64(),
        caught_up.as_secs_f64(),
        (jobs * 4) as f64 / caught_up.as_secs_f64()
    );
    topology.delete(&connection).await.expect("delete");
    let _ = connection.close(200, "done".into()).await;
}

async fn cancel_figures(count: u64) {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("p.yaml");
    let name = format!("bench_cancels_{}", std::process::id());
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}\njobs: {{ track: true }}\nstages:\n  work:\n    command: [unused]\n    concurrency: 100\n    prefetch: 100\n    timeout: 5m\n"
        ),
    )
    .expect("write the pipeline");
    let pipeline = warren::config::load(&file).expect("a pipeline");
    let topology = warren::Topology::plan(&pipeline);
    let connection = warren::connection::open(&pipeline.broker.urls, "bench cancels")
        .await
        .expect("the broker");
    topology.declare(&connection).await.expect("declare");
    // Per job: when its handler started, and when it saw the cancel.
    type Seen = Arc<Mutex<std::collections::HashMap<String, (Instant, Option<Instant>)>>>;
    let seen: Seen = Arc::default();
    let worker = |seen: Seen| {
        warren::Worker::new().pipeline(pipeline.clone()).stage(
            "work",
            move |body: serde_json::Value, ctx: warren::Context| {
                let seen = seen.clone();
                async move {
                    if body["progress"] == serde_json::json!(true) {
                        let started = Instant::now();
                        for n in 0..100_000u32 {
                            ctx.progress(f64::from(n) / 100_000.0, "counting");
                        }
                        println!(
                            "progress: 100000 ctx.progress calls in {:?}, {:?} each",
                            started.elapsed(),
                            started.elapsed() / 100_000
                        );
                        return Ok(());
                    }
                    seen.lock()
                        .unwrap()
                        .insert(ctx.job().to_string(), (Instant::now(), None));
                    ctx.cancelled().await;
                    if let Some(entry) = seen.lock().unwrap().get_mut(ctx.job()) {
                        entry.1 = Some(Instant::now());
                    }
                    Ok(())
                }
            },
        )
    };
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        runs.push(tokio::spawn(worker(seen.clone()).run_until(async move {
            let _ = stopped.await;
        })));
    }
    let producer = warren::Producer::connect(&pipeline)
        .await
        .expect("a producer");
    for n in 0..count {
        producer
            .send_with_id("work", &format!("c{n}"), &serde_json::json!({ "n": n }))
            .await
            .expect("send");
    }
    while (seen.lock().unwrap().len() as u64) < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times = Vec::new();
    for n in 0..count {
        let job = format!("c{n}");
        let asked = Instant::now();
        producer.cancel(&job).await.expect("cancel");
        loop {
            if let Some((_, Some(at))) = seen.lock().unwrap().get(&job) {
                times.push(at.saturating_duration_since(asked));
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "cancels: {count} running jobs over 3 workers, from the call to the handler seeing it: median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        times[times.len() - 1]
    );
    producer
        .send_with_id("work", "progress", &serde_json::json!({ "progress": true }))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for stop in stops {
        let _ = stop.send(());
    }
    for run in runs {
        let _ = run.await;
    }
    producer.close().await;
    topology.delete(&connection).await.expect("delete");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let part = args
        .iter()
        .position(|a| a == "--part")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if part.is_none() {
        store_figures(value(&args, "--jobs", 1_000_000));
        catch_up_figures(value(&args, "--events", 1_000_000)).await;
    }
    cancel_figures(value(&args, "--cancels", 100)).await;
}
