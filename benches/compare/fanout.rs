//! fanout3 on warren, run as a user would: the pipeline of
//! examples/fanout3 (with the queue type and sink path of the run), seeds
//! sent first, then `warren supervise`. Timed like the bare client: from
//! the moment the first stage consumes to the last line in the sink.

use std::{
    path::Path,
    time::{Duration, Instant},
};

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
    let mut run = crate::run::Declared::new(url, &file).await;

    // Seeds first, through the framework's producer.
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    crate::send_seeds(&producer, fanout).await;
    producer.close().await;

    let supervisor = run.supervise(warren, url, &[("FANOUT", fanout.f.to_string())]);
    // The clock starts when the first stage consumes.
    run.wait_for_consumers("expand", 1, Duration::from_millis(2))
        .await;
    let started = Instant::now();
    if std::env::var_os("WARREN_BENCH_CPU").is_some() {
        for stage in ["work", "sink"] {
            run.wait_for_consumers(stage, 1, Duration::from_millis(1))
                .await;
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
            peaks.sample_children_of(supervisor);
            sampled = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    peaks.sample_children_of(supervisor);
    if std::env::var_os("WARREN_BENCH_CPU").is_some() {
        for pid in rss::children(supervisor) {
            if let Some((cpu, cmd)) = rss::cpu_seconds(pid) {
                eprintln!(
                    "    cpu {cpu:.2}s peak {} KiB  {cmd}",
                    rss::peak_kib(pid).unwrap_or(0)
                );
            }
        }
        if let Some((cpu, _)) = rss::cpu_seconds(supervisor) {
            eprintln!("    cpu {cpu:.2}s supervisor");
        }
    }
    run.tear_down().await;
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
