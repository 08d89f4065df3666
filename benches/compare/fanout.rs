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

/// Which warren pipeline runs fanout3: the plain one, or a variant.
#[derive(Clone, Copy, PartialEq)]
pub enum Variant {
    /// The Rust worker (examples/fanout3/worker.rs), as `expand`.
    Rust,
    /// benches/exec/work.py, an exec stage with the Python helper.
    Python,
    /// benches/exec/work.php, an exec stage with the PHP helper.
    Php,
    /// The Rust worker, with job tracking on (`jobs.track`).
    Tracked,
}

impl Variant {
    /// The system's name in the results table.
    pub fn system(self) -> &'static str {
        match self {
            Variant::Rust => "warren",
            Variant::Python => "warren+py",
            Variant::Php => "warren+php",
            Variant::Tracked => "warren+jobs",
        }
    }

    /// The `work` stage's program. Every variant has the stage defaults of
    /// the run (prefetch and concurrency 500). A PHP child handles one
    /// message at a time, and the others wait in its pipe: 500 of this
    /// handler's few microseconds each are far under the timeout, the
    /// guide's rule. `WARREN_BENCH_PHP_CONCURRENCY` (and `_PREFETCH`) set
    /// others for PHP, to see what fewer in the pipe cost.
    fn stage(self, worker: &Path) -> String {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/exec");
        match self {
            // The stage's name as an argument (the worker ignores it) tells
            // the processes apart by their command lines.
            Variant::Rust | Variant::Tracked => format!("command: [{}, work]", worker.display()),
            Variant::Python => format!("exec: [python3, {}]", scripts.join("work.py").display()),
            Variant::Php => {
                let mut stage = format!("exec: [php, {}]", scripts.join("work.php").display());
                for (setting, variable) in [
                    ("prefetch", "WARREN_BENCH_PHP_PREFETCH"),
                    ("concurrency", "WARREN_BENCH_PHP_CONCURRENCY"),
                ] {
                    if let Ok(value) = std::env::var(variable) {
                        stage += &format!("\n    {setting}: {value}");
                    }
                }
                stage
            }
        }
    }
}

/// The fanout3 pipeline with queues of `kind`.
fn pipeline(name: &str, kind: &str, worker: &Path, variant: Variant, sink: &Path) -> String {
    format!(
        "pipeline: {name}
{jobs}defaults:
  prefetch: {prefetch}
  concurrency: {prefetch}
  timeout: 30s
  retry: {{ attempts: 3, backoff: [1s, 5s] }}
  scale: {{ min: 1, max: 1 }}
  queue: {{ type: {kind} }}
stages:
  expand:
    command: [{worker}, expand]
    outputs: [work]
    # Each seed emits F parts: fewer seeds at once keep the same number of
    # messages in flight.
    prefetch: {expand_prefetch}
    concurrency: {expand}
  work:
    {work}
    outputs: [sink]
  sink:
    sink: {{ path: {sink} }}
",
        jobs = if variant == Variant::Tracked {
            "jobs: { track: true, keep: 1h }\n"
        } else {
            ""
        },
        worker = worker.display(),
        work = variant.stage(worker),
        sink = sink.display(),
        prefetch = std::env::var("WARREN_BENCH_PREFETCH").unwrap_or_else(|_| "500".into()),
        expand = expand_concurrency(),
        expand_prefetch = 2 * expand_concurrency(),
    )
}

/// What every warren run of fanout3 shares.
pub struct Setup<'a> {
    /// The broker (one URL, or a cluster's separated by commas).
    pub url: &'a str,
    /// The workload's size.
    pub fanout: &'a Fanout,
    /// Where pipeline files and sinks go.
    pub dir: &'a Path,
    /// The `warren` binary.
    pub warren: &'a Path,
    /// The fanout3 worker program.
    pub worker: &'a Path,
    /// A program (with its arguments) that `warren supervise` runs under,
    /// such as valgrind; empty for none.
    pub wrapper: &'a [String],
}

/// Runs fanout3 on warren with queues of `kind`.
pub async fn run(setup: &Setup<'_>, kind: &str, variant: Variant) -> Measured {
    let Setup {
        url,
        fanout,
        dir,
        warren,
        worker,
        wrapper,
    } = *setup;
    let name = match variant {
        Variant::Rust => format!("bench_warren_{kind}"),
        Variant::Python => format!("bench_warren_{kind}_py"),
        Variant::Php => format!("bench_warren_{kind}_php"),
        Variant::Tracked => format!("bench_warren_{kind}_jobs"),
    };
    let file = dir.join(format!("{name}.yaml"));
    let sink = dir.join(format!("{name}.jsonl"));
    crate::run::remove_sink(&sink);
    std::fs::write(&file, pipeline(&name, kind, worker, variant, &sink)).unwrap();
    let mut run = crate::run::Declared::new(url, &file).await;

    // Seeds first, through the framework's producer.
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    crate::send_seeds(&producer, fanout).await;
    producer.close().await;

    let supervisor = run.supervise_under(wrapper, warren, url, &[("FANOUT", fanout.f.to_string())]);
    // The clock starts when the first stage consumes.
    run.wait_for_consumers("expand", 1, Duration::from_millis(2))
        .await;
    let started = Instant::now();
    let ticks = rss::machine_ticks();
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
    // The sink's data lines (each is on disk before its batch is recorded
    // and acknowledged).
    let mut lines = crate::LineCounter::new(sink.clone());
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
        eprintln!(
            "    machine idle {:.0}% of the round",
            100.0 * rss::idle_share(ticks, rss::machine_ticks())
        );
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

/// fanout3 on warren at light load (`light.rs`): `warm_up` then `samples`
/// seeds sent one at a time, each once the sink has the previous one's F
/// lines; the time of each counted seed from its send (confirmed) to its
/// last line in the sink, in ms.
pub async fn light(setup: &Setup<'_>, kind: &str, warm_up: u64, samples: u64) -> Vec<f64> {
    let name = format!("bench_warren_{kind}_light");
    let file = setup.dir.join(format!("{name}.yaml"));
    let sink = setup.dir.join(format!("{name}.jsonl"));
    crate::run::remove_sink(&sink);
    let pipeline = pipeline(&name, kind, setup.worker, Variant::Rust, &sink);
    std::fs::write(&file, pipeline).unwrap();
    let mut run = crate::run::Declared::new(setup.url, &file).await;
    let f = setup.fanout.f;
    run.supervise_under(
        setup.wrapper,
        setup.warren,
        setup.url,
        &[("FANOUT", f.to_string())],
    );
    for stage in ["expand", "work", "sink"] {
        run.wait_for_consumers(stage, 1, Duration::from_millis(5))
            .await;
    }
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    let mut lines = crate::LineCounter::new(sink);
    let mut times = Vec::new();
    for i in 0..warm_up + samples {
        let body = serde_json::json!({"id": i, "body": "x".repeat(64)});
        let sent = Instant::now();
        producer
            .send_with_id("expand", &format!("s{i}"), &body)
            .await
            .unwrap();
        while lines.count() < (i + 1) * f {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i >= warm_up {
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    producer.close().await;
    run.tear_down().await;
    times
}
