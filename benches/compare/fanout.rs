//! fanout3 on warren, run as a user would: the pipeline of
//! examples/fanout3 (with the queue type and sink path of the run), seeds
//! sent first, then `warren supervise`. Timed like the bare client: from
//! the moment the first stage consumes to the last line in the sink.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};

use crate::{Fanout, rss};

/// What a warren run measured.
pub struct Measured {
    /// Seconds from the first consumer to the last sink line.
    pub seconds: f64,
    /// Peak RSS of each worker process, in KiB.
    pub worker_rss_kib: Vec<u64>,
}

/// The fanout3 pipeline with queues of `kind`.
fn pipeline(name: &str, kind: &str, worker: &Path, sink: &Path) -> String {
    format!(
        "pipeline: {name}
defaults:
  prefetch: {prefetch}
  concurrency: {prefetch}
  timeout: 30s
  retry: {{ attempts: 3, backoff: [1s, 5s] }}
  scale: {{ min: 1, max: 1 }}
  queue: {{ type: {kind} }}
stages:
  expand:
    command: [{worker}]
    outputs: [work]
    # Each seed emits F parts: fewer seeds at once keep the same number of
    # messages in flight.
    prefetch: {expand_prefetch}
    concurrency: {expand}
  work:
    command: [{worker}]
    outputs: [sink]
  sink:
    sink: {{ path: {sink} }}
",
        worker = worker.display(),
        sink = sink.display(),
        prefetch = std::env::var("WARREN_BENCH_PREFETCH").unwrap_or_else(|_| "500".into()),
        expand = expand_concurrency(),
        expand_prefetch = 2 * expand_concurrency(),
    )
}

/// Runs fanout3 on warren with queues of `kind`.
pub async fn run(
    url: &str,
    kind: &str,
    fanout: &Fanout,
    dir: &Path,
    warren: &Path,
    worker: &Path,
) -> Measured {
    let name = format!("bench_warren_{kind}");
    let file = dir.join(format!("{name}.yaml"));
    let sink = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&sink);
    let _ = std::fs::remove_file(sink.with_extension("jsonl.ids"));
    std::fs::write(&file, pipeline(&name, kind, worker, &sink)).unwrap();
    let pipeline = warren::config::load(&file).unwrap();
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let topology = warren::Topology::plan(&pipeline);
    let _ = topology.delete(&conn).await;
    topology.declare(&conn).await.unwrap();

    // Seeds first, through the framework's producer.
    let producer = warren::Producer::connect(&pipeline).await.unwrap();
    crate::send_seeds(&producer, fanout).await;
    producer.close().await;

    let mut supervisor = Command::new(warren)
        .args(["supervise", file.to_str().unwrap(), "--poll", "1s"])
        .env("AMQP_URL", url)
        .env("FANOUT", fanout.f.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren supervise");
    let expand = format!("{name}.expand");
    let channel = conn.create_channel().await.unwrap();
    // The clock starts when the first stage consumes.
    loop {
        let q = channel
            .queue_declare(
                expand.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.consumer_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    if std::env::var_os("WARREN_BENCH_CPU").is_some() {
        for stage in ["work", "sink"] {
            let queue = format!("{name}.{stage}");
            loop {
                let q = channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                if q.consumer_count() > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            eprintln!(
                "    {stage} consumes {:.0} ms after expand",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    let want = fanout.n * fanout.f;
    let mut lines = crate::LineCounter::new(sink.with_extension("jsonl.ids"));
    let mut peaks = rss::Peaks::default();
    let mut sampled = Instant::now();
    while lines.count() < want {
        if sampled.elapsed() > Duration::from_millis(100) {
            peaks.sample_children_of(supervisor.id());
            sampled = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    peaks.sample_children_of(supervisor.id());
    if std::env::var_os("WARREN_BENCH_CPU").is_some() {
        for pid in rss::children(supervisor.id()) {
            if let Some((cpu, cmd)) = rss::cpu_seconds(pid) {
                eprintln!(
                    "    cpu {cpu:.2}s peak {} KiB  {cmd}",
                    rss::peak_kib(pid).unwrap_or(0)
                );
            }
        }
        if let Some((cpu, _)) = rss::cpu_seconds(supervisor.id()) {
            eprintln!("    cpu {cpu:.2}s supervisor");
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status();
    let _ = supervisor.wait();
    let _ = topology.delete(&conn).await;
    let _ = channel
        .queue_delete(
            format!("{name}.supervisors").as_str().into(),
            Default::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
    let _ = std::fs::remove_file(&file);
    Measured {
        seconds,
        worker_rss_kib: peaks.values(),
    }
}

/// The expand stage's concurrency (`WARREN_BENCH_EXPAND`, 50 by default).
fn expand_concurrency() -> u32 {
    std::env::var("WARREN_BENCH_EXPAND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}
