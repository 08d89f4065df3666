//! Delays on the broker (DESIGN.md, `x-warren-not-before`): how late
//! delayed messages are handled, on a one-node RabbitMQ of the bench's own
//! (`tests/support/cluster.sh`, port 5761; the broker on 5672 is never
//! touched).
//!
//! ```sh
//! cargo bench -p warren-command --bench delays                  # 100,000 messages, 1 s to 10 min
//! cargo bench -p warren-command --bench delays -- --messages 20000 --max-delay 120 --restart
//! cargo bench -p warren-command --bench delays -- --restart --dlx-confirm-timeout 5000
//! ```
//!
//! `--messages` messages are sent with `Producer::publish_many_at`, each
//! with a delay drawn from 1 s to `--max-delay` seconds (uniform, the same
//! sequence in every run), to one stage whose worker (in this process)
//! notes when it handled each. Printed: lateness (handled minus
//! not-before) p50, p99 and max, how many were early, lost or handled
//! twice, and the broker's memory (`erlang:memory(total)`) sampled every
//! 15 s. With `--restart` the broker is stopped and started again halfway
//! through the longest delay; messages whose time fell while it was down
//! are reported apart. `--dlx-confirm-timeout MS` sets the broker's
//! `dead_letter_worker_publisher_confirm_timeout` (120,000 by default): how
//! long a quorum queue's dead-letter worker waits for a confirm before it
//! sends again (the cascade's levels dead-letter at least once).

#[path = "../args.rs"]
mod args;
use args::value;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use warren::{Context, Producer, Worker, message::epoch_ms};

const PORT: u16 = 5761;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/cluster.sh")
}

/// The bench's broker, removed when dropped.
struct Broker(PathBuf);

impl Broker {
    fn up(dir: &Path, rabbit_env: &str) -> Broker {
        let broker = Broker(dir.join("broker"));
        let up = Command::new(script())
            .env("N", "1")
            .env("MANAGEMENT", "0")
            .env("RABBIT_ENV", rabbit_env)
            .args([
                "up",
                broker.0.to_str().unwrap(),
                "wdelay",
                &PORT.to_string(),
            ])
            .status()
            .expect("tests/support/cluster.sh");
        assert!(up.success(), "the bench's broker did not come up");
        broker
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(script())
            .args(["ctl", self.0.to_str().unwrap(), "1"])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The node's memory in MiB.
    fn memory_mib(&self) -> Option<f64> {
        let bytes: f64 = self.ctl(&["eval", "erlang:memory(total)."]).parse().ok()?;
        Some(bytes / 1_048_576.0)
    }

    /// Stops the node (as `rabbitmqctl stop` does) and starts it again.
    fn restart(&self) -> Duration {
        let started = Instant::now();
        self.ctl(&["stop"]);
        let status = Command::new(script())
            .args(["start-node", self.0.to_str().unwrap(), "1"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("start the node");
        assert!(status.success(), "the broker did not start again");
        started.elapsed()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", self.0.to_str().unwrap()])
            .status();
    }
}

/// A pseudo-random sequence (xorshift), the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Each message's handlings: (handled at, not before), ms.
type Seen = Arc<Mutex<HashMap<u64, Vec<(u64, u64)>>>>;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let messages = value(&args, "--messages", 100_000);
    let max_delay = value(&args, "--max-delay", 600);
    let restart = args.iter().any(|a| a == "--restart");
    let dir = tempfile::tempdir().unwrap();
    let dlx_confirm_timeout = value(&args, "--dlx-confirm-timeout", 0);
    let rabbit_env = if dlx_confirm_timeout > 0 {
        println!("dead_letter_worker_publisher_confirm_timeout: {dlx_confirm_timeout} ms");
        format!("{{dead_letter_worker_publisher_confirm_timeout, {dlx_confirm_timeout}}}")
    } else {
        String::new()
    };
    let broker = Broker::up(dir.path(), &rabbit_env);
    let url = format!("amqp://guest:guest@127.0.0.1:{PORT}/%2f");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        "pipeline: delaybench\nstages:\n  work:\n    command: [unused]\n    prefetch: 500\n    concurrency: 200\n",
    )
    .unwrap();
    let env = vec![("AMQP_URL".to_string(), url)];
    let pipeline = warren::config::load_with_env(&file, &env).expect("the bench's pipeline");
    let connection = warren::connection::open(&pipeline.broker.urls, "delay bench")
        .await
        .expect("the bench's broker");
    warren::Topology::plan(&pipeline)
        .declare(&connection)
        .await
        .expect("declare");
    warren::connection::close(&connection, "declared").await;

    let seen: Seen = Arc::default();
    let noted = seen.clone();
    let worker = Worker::new().pipeline(pipeline.clone()).stage(
        "work",
        move |body: Value, _ctx: Context| {
            let noted = noted.clone();
            async move {
                let at = epoch_ms();
                let n = body["n"].as_u64().unwrap_or(u64::MAX);
                let not_before = body["not_before"].as_u64().unwrap_or(0);
                noted
                    .lock()
                    .unwrap()
                    .entry(n)
                    .or_default()
                    .push((at, not_before));
                Ok(())
            }
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    let memory_before = broker.memory_mib();
    let producer = Producer::connect_with_timeout(&pipeline, Duration::from_secs(60))
        .await
        .expect("producer");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let sending = Instant::now();
    let mut batch_bodies = Vec::new();
    let mut n = 0;
    while n < messages {
        batch_bodies.clear();
        let now = epoch_ms();
        let mut wanted = Vec::new();
        for _ in 0..500.min(messages - n) {
            let delay_ms = 1000 + rng.next() % ((max_delay - 1) * 1000 + 1);
            let not_before = now + delay_ms;
            let id = format!("m{n}");
            let body = serde_json::to_vec(&json!({"n": n, "not_before": not_before})).unwrap();
            batch_bodies.push((id, body, not_before));
            wanted.push(not_before);
            n += 1;
        }
        // One call per distinct time would be many calls: each message is
        // its own call here, written together, confirmed together.
        let writes = batch_bodies.iter().map(|(id, body, not_before)| async {
            let one = [(id.as_str(), body.as_slice())];
            producer
                .publish_many_at("work", &one, None, Some(*not_before))
                .await
        });
        let written = futures_util::future::join_all(writes).await;
        for sent in written {
            for one in sent.expect("written") {
                one.confirmed().await.expect("confirmed");
            }
        }
    }
    let send_seconds = sending.elapsed().as_secs_f64();
    println!(
        "sent {messages} messages with delays from 1 s to {max_delay} s in {send_seconds:.1}s ({:.0}/s, each confirmed)",
        messages as f64 / send_seconds
    );
    let start_ms = epoch_ms();
    let end_by = Instant::now() + Duration::from_secs(max_delay + 120);
    let mut memory = Vec::new();
    let mut outage: Option<(u64, u64)> = None;
    let mut last_sample = Instant::now() - Duration::from_secs(60);
    loop {
        let handled = seen.lock().unwrap().len() as u64;
        if last_sample.elapsed() >= Duration::from_secs(15) {
            last_sample = Instant::now();
            if let Some(mib) = broker.memory_mib() {
                memory.push(mib);
                let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
                eprintln!(
                    "  {:>4}s: {handled} of {messages} handled, broker {mib:.0} MiB, load average {}",
                    (epoch_ms() - start_ms) / 1000,
                    load.split(' ').next().unwrap_or("?")
                );
            }
        }
        if restart && outage.is_none() && epoch_ms() - start_ms >= max_delay * 500 {
            let down = epoch_ms();
            let took = broker.restart();
            outage = Some((down, epoch_ms()));
            eprintln!(
                "  broker stopped and started again in {:.1}s",
                took.as_secs_f64()
            );
        }
        if handled >= messages || Instant::now() > end_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(());
    let _ = running.await;
    producer.close().await;

    let seen = seen.lock().unwrap();
    let lost = messages - seen.len() as u64;
    let twice = seen.values().filter(|h| h.len() > 1).count();
    // Lateness of each message's first handling, apart for those whose
    // time fell while the broker was down (or within 30 s after it).
    let (mut calm, mut hit) = (Vec::new(), Vec::new());
    for handlings in seen.values() {
        let (at, not_before) = handlings.iter().min().copied().unwrap();
        let late = at as i64 - not_before as i64;
        match outage {
            Some((down, up)) if not_before >= down && not_before <= up + 30_000 => hit.push(late),
            _ => calm.push(late),
        }
    }
    // The tail minute by minute of the messages' times: where the late
    // ones fell.
    let mut by_minute: std::collections::BTreeMap<u64, Vec<i64>> = Default::default();
    for handlings in seen.values() {
        let (at, not_before) = handlings.iter().min().copied().unwrap();
        let minute = not_before.saturating_sub(start_ms) / 60_000;
        by_minute
            .entry(minute)
            .or_default()
            .push(at as i64 - not_before as i64);
    }
    for (minute, mut late) in by_minute {
        late.sort_unstable();
        println!(
            "  due in minute {minute}: {} messages, p50 {} ms, p99 {} ms, max {} ms",
            late.len(),
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            late.last().copied().unwrap_or(0)
        );
    }
    calm.sort_unstable();
    hit.sort_unstable();
    let early = calm.iter().chain(&hit).filter(|l| **l < 0).count();
    let describe = |label: &str, sorted: &[i64]| {
        println!(
            "{label}: {} messages, lateness p50 {} ms, p99 {} ms, max {} ms",
            sorted.len(),
            percentile(sorted, 0.5),
            percentile(sorted, 0.99),
            sorted.last().copied().unwrap_or(0)
        );
    };
    describe(
        if outage.is_some() {
            "due while the broker was up"
        } else {
            "all"
        },
        &calm,
    );
    if let Some((down, up)) = outage {
        println!("broker down {:.1}s", (up - down) as f64 / 1000.0);
        describe("due while it was down or within 30 s after", &hit);
    }
    println!("early: {early}; lost: {lost}; handled twice: {twice}");
    let memory_after = broker.memory_mib();
    let (low, high) = memory
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), m| (lo.min(*m), hi.max(*m)));
    println!(
        "broker memory: {:.0} MiB before sending, {low:.0} to {high:.0} MiB while the messages waited, {:.0} MiB at the end",
        memory_before.unwrap_or(0.0),
        memory_after.unwrap_or(0.0)
    );
    drop(broker);
}
