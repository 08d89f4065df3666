//! Worker processes themselves (BENCHMARKS.md, *Worker processes*):
//! figures printed, no timed assertion.
//!
//! ```sh
//! cargo bench -p warren-command --bench workers      # --workers 20 --starts 20
//! ```
//!
//! 1. **Memory of idle workers**: `warren supervise` keeps WORKERS idle
//!    `warren worker` processes of one built-in `http` stage (`scale.min` =
//!    `scale.max` = WORKERS). Once all consume, each process's
//!    proportional set size (`Pss` in `/proc/PID/smaps_rollup`: its own
//!    pages, plus shared pages divided among the processes sharing them,
//!    so the sum is what they cost the box together) and resident size,
//!    summed and per worker, and the supervisor's.
//! 2. **From spawn to consuming**: `warren worker FILE --stage STAGE`
//!    spawned STARTS times, one after another, each stopped (SIGTERM)
//!    once it consumes: the time from the spawn until the broker counts
//!    its consumer on the stage queue (the pipeline read and checked, the
//!    connections open, the topology declared, the control streams read,
//!    the consumer registered), looked at every millisecond; p50 and max.
//!
//! Release build (`cargo bench` builds one); the broker on `AMQP_URL` or
//! 127.0.0.1:5672.

// Shared with the compare bench, of which this one uses a part.
#[allow(dead_code)]
#[path = "../compare/run.rs"]
mod run;

#[allow(dead_code)]
#[path = "../compare/rss.rs"]
mod rss;

#[path = "../args.rs"]
mod args;
use args::value;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers = value(&args, "--workers", 20) as u32;
    let starts = value(&args, "--starts", 20) as usize;
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    let warren = Path::new(env!("CARGO_BIN_EXE_warren"));
    let dir = tempfile::tempdir().unwrap();
    let name = format!("bench_workers_{}", std::process::id());
    let file = dir.path().join("pipeline.yaml");
    let text = format!(
        "pipeline: {name}
stages:
  post:
    http: {{ url: \"http://127.0.0.1:9/none\" }}
    scale: {{ min: {workers}, max: {workers} }}
"
    );
    std::fs::write(&file, &text).unwrap();

    let mut run = run::Declared::new(&url, &file).await;
    let supervisor = run.supervise(warren, &url, &[]);
    run.wait_for_consumers("post", workers, Duration::from_millis(200))
        .await;
    // Settled: the workers' first allocations done and idle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let children = rss::children(supervisor);
    let mut pss = 0;
    let mut rss_sum = 0;
    for pid in &children {
        let (p, r) = memory_kib(*pid).unwrap_or_default();
        pss += p;
        rss_sum += r;
    }
    let (own_pss, own_rss) = memory_kib(supervisor).unwrap_or_default();
    println!(
        "{} idle workers of one stage: Pss {:.1} MiB in all, {:.2} MiB per worker; RSS {:.1} MiB per worker; the supervisor Pss {:.1} MiB, RSS {:.1} MiB",
        children.len(),
        pss as f64 / 1024.0,
        pss as f64 / 1024.0 / children.len().max(1) as f64,
        rss_sum as f64 / 1024.0 / children.len().max(1) as f64,
        own_pss as f64 / 1024.0,
        own_rss as f64 / 1024.0,
    );
    run.tear_down().await;

    // The topology again, with no supervisor: single workers started by
    // hand (tearing down removed the file).
    std::fs::write(&file, &text).unwrap();
    let run = run::Declared::new(&url, &file).await;
    let mut times = Vec::with_capacity(starts);
    for _ in 0..starts {
        times.push(spawn_to_consuming(&run, warren, &url, &file, "post").await);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "a worker from spawn to consuming ({} starts): p50 {:.0} ms, max {:.0} ms",
        times.len(),
        times[times.len() / 2] * 1000.0,
        times[times.len() - 1] * 1000.0,
    );
    run.tear_down().await;
}

/// Seconds from spawning `warren worker` until the broker counts its
/// consumer on `stage`'s queue; the worker is then stopped, and gone from
/// the queue before this returns.
async fn spawn_to_consuming(
    run: &run::Declared,
    warren: &Path,
    url: &str,
    file: &Path,
    stage: &str,
) -> f64 {
    let poll = Duration::from_millis(1);
    let started = Instant::now();
    let mut child = Command::new(warren)
        .args(["worker", file.to_str().unwrap(), "--stage", stage])
        .env("AMQP_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren worker");
    run.wait_for_consumers(stage, 1, poll).await;
    let consuming = started.elapsed().as_secs_f64();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    while run.consumers(stage).await > 0 {
        tokio::time::sleep(poll).await;
    }
    consuming
}

/// (Pss, Rss) of a process in KiB, from `/proc/PID/smaps_rollup`.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = rollup.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("Pss:")?, field("Rss:")?))
}
