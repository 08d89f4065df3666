//! Page views into PostgreSQL at a steady rate, end to end (BENCHMARKS.md,
//! *Page views at a steady rate*): figures printed, no timed assertion.
//!
//! ```sh
//! cargo bench -p warren-command --bench steady      # --rate 1000000 --seconds 300 --workers 2 --batch 1000
//! ```
//!
//! On a PostgreSQL of its own (Debian's binaries, a temporary folder), a
//! table `views (id text PRIMARY KEY, n integer, sent bigint, doc jsonb,
//! at timestamptz DEFAULT clock_timestamp())`, two runs of SECONDS each at
//! RATE events a minute offered:
//!
//! 1. **warren**: the bench POSTs NDJSON batches of 500 to `warren serve`
//!    (`?id_field=key`); a `store` stage with the PostgreSQL sink, WORKERS
//!    `warren worker` processes, writes them (release build);
//! 2. **bare**: the bench publishes the same events with lapin to a queue
//!    (persistent, confirms awaited per batch of 500), and WORKERS processes
//!    of this bench (`--bare-consumer`) consume them with lapin, INSERT them
//!    with the sink's statement in batches of BATCH (or what came in 50 ms)
//!    and acknowledge after the COMMIT: the least a user writes by hand.
//!
//! Each event carries the time it was sent (`sent`, ms); a row's `at` is
//! the time of its INSERT, inside the transaction that commits it. Over the
//! steady window (the run without its first and last tenth): events
//! offered and rows written a minute, latency from send to row (p50, p99,
//! max), the backlog left when the sending stopped, and the CPU of each
//! process (in cores: 1.00 is one core busy all the time).

#[path = "../../tests/common/postgres.rs"]
mod pg;

#[path = "cpu.rs"]
mod cpu;

#[path = "bare.rs"]
mod bare;

#[path = "../args.rs"]
mod args;
use args::value;

use std::{
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt as _;

const TABLE: &str = "CREATE TABLE views (id text PRIMARY KEY, n integer, sent bigint, doc jsonb NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())";
/// Events in one POST (and one confirmed publish batch on the bare path).
const BATCH_OF_EVENTS: u64 = 500;
/// Batches on their way at once, at most.
const SENDERS: usize = 32;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One event: a page view with its id and the time it was sent.
fn event(prefix: &str, n: u64, sent: u64) -> String {
    format!(
        "{{\"key\": \"{prefix}{n}\", \"n\": {n}, \"sent\": {sent}, \"page\": \"/p/{}\", \"agent\": \"Mozilla/5.0 (X11; Linux x86_64)\"}}\n",
        n % 97
    )
}

/// A run's processes, by name; killed when the run ends, also on a panic.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn pids(&self) -> Vec<(String, u32)> {
        self.0
            .iter()
            .map(|(name, child)| (name.clone(), child.id()))
            .collect()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Sends batches of events at `per_minute` for `seconds` with `send`;
/// returns the events sent.
async fn offer<F, Fut>(prefix: &str, per_minute: u64, seconds: u64, send: F) -> u64
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let per_batch = BATCH_OF_EVENTS;
    let batches = per_minute * seconds / 60 / per_batch;
    let interval = Duration::from_secs_f64(60.0 * per_batch as f64 / per_minute as f64);
    let started = tokio::time::Instant::now();
    let next = AtomicU64::new(0);
    futures_util::stream::iter(0..batches)
        .map(|b| {
            let due = started + interval * b as u32;
            let send = &send;
            let next = &next;
            async move {
                tokio::time::sleep_until(due).await;
                let first = next.fetch_add(per_batch, Ordering::Relaxed);
                let sent = now_ms();
                let body: String = (first..first + per_batch)
                    .map(|n| event(prefix, n, sent))
                    .collect();
                send(body).await;
            }
        })
        .buffer_unordered(SENDERS)
        .collect::<Vec<()>>()
        .await;
    batches * per_batch
}

/// What one run measured.
struct Figures {
    offered: u64,
    written_per_minute: f64,
    p50: f64,
    p99: f64,
    max: f64,
    backlog: u64,
    cpu: Vec<(String, f64)>,
}

/// Rows and latencies of the steady window: the rows sent between `from`
/// and `to` (ms).
fn window(server: &pg::Postgres, prefix: &str, from: u64, to: u64) -> (f64, f64, f64, f64) {
    let line = server.psql(&format!(
        "SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY ms), percentile_disc(0.99) WITHIN GROUP (ORDER BY ms), max(ms) FROM (SELECT extract(epoch FROM at) * 1000 - sent AS ms FROM views WHERE id LIKE '{prefix}%' AND sent BETWEEN {from} AND {to}) AS l"
    ));
    let f: Vec<f64> = line
        .split('|')
        .map(|v| v.trim().parse().unwrap_or(0.0))
        .collect();
    let minutes = (to - from) as f64 / 60_000.0;
    (f[0] / minutes, f[1], f[2], f[3])
}

fn count(server: &pg::Postgres, prefix: &str) -> u64 {
    server
        .psql(&format!(
            "SELECT count(*) FROM views WHERE id LIKE '{prefix}%'"
        ))
        .parse()
        .unwrap_or(0)
}

/// Runs one path: `start` starts its processes (their pids are measured)
/// and returns how to send a batch.
async fn run<F, Fut>(
    server: &pg::Postgres,
    prefix: &str,
    per_minute: u64,
    seconds: u64,
    workers: &[(String, u32)],
    send: F,
) -> Figures
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut watched = cpu::Watched::new(server, workers);
    let started = now_ms();
    let tenth = seconds * 100;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(tenth)).await;
        let first = watched.sample();
        tokio::time::sleep(Duration::from_millis(tenth * 8)).await;
        watched.since(&first)
    });
    let offered = offer(prefix, per_minute, seconds, send).await;
    let ended = now_ms();
    let cpu = sampler.await.unwrap();
    let backlog = offered.saturating_sub(count(server, prefix));
    // The rest is written before the next run starts.
    let drained = Instant::now();
    while count(server, prefix) < offered && drained.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (from, to) = (started + tenth, ended - tenth);
    let (written_per_minute, p50, p99, max) = window(server, prefix, from, to);
    Figures {
        offered,
        written_per_minute,
        p50,
        p99,
        max,
        backlog,
        cpu,
    }
}

fn print(name: &str, per_minute: u64, f: &Figures) {
    println!(
        "  {name}: offered {per_minute} a minute ({} events), written {:.0} a minute in the steady window; send to row p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} not yet written when the sending stopped",
        f.offered, f.written_per_minute, f.p50, f.p99, f.max, f.backlog
    );
    let cpu: Vec<String> = f
        .cpu
        .iter()
        .map(|(who, cores)| format!("{who} {cores:.2}"))
        .collect();
    println!("    CPU (cores): {}", cpu.join(", "));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bare-consumer") {
        return bare::consume(&args);
    }
    let per_minute = value(&args, "--rate", 1_000_000);
    let seconds = value(&args, "--seconds", 300);
    let workers = value(&args, "--workers", 2);
    let batch = value(&args, "--batch", 1000);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let server = pg::Postgres::start();
    server.psql(TABLE);
    println!(
        "Page views at {per_minute} a minute for {seconds} s, {workers} workers, batch {batch} (load average before: {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("bsteady{}", std::process::id());
    let warren = runtime.block_on(async {
        let (processes, base) = bare::start_warren(&dir, &name, &server, workers, batch, &url);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pids = processes.pids();
        let client = reqwest::Client::new();
        let post = format!("{base}/v1/stages/store/messages?id_field=key");
        let figures = run(&server, "w", per_minute, seconds, &pids, |body| {
            let (client, post) = (client.clone(), post.clone());
            async move {
                let answer = client
                    .post(post)
                    .header("Content-Type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .expect("an answer");
                assert_eq!(answer.status().as_u16(), 202, "{:?}", answer.text().await);
            }
        })
        .await;
        drop(processes);
        bare::delete_pipeline(&url, &dir.path().join("pipeline.yaml")).await;
        figures
    });
    print("warren (POST, serve, sink)", per_minute, &warren);
    let bare = runtime.block_on(async {
        let queue = format!("{name}.bare");
        let (processes, publisher) = bare::start_bare(&url, &queue, &server, workers, batch).await;
        let pids = processes.pids();
        let publisher = Arc::new(publisher);
        let figures = run(&server, "b", per_minute, seconds, &pids, |body| {
            let publisher = publisher.clone();
            async move { publisher.publish(body).await }
        })
        .await;
        drop(processes);
        publisher.delete().await;
        figures
    });
    print("bare lapin (publish, consume, INSERT)", per_minute, &bare);
}
