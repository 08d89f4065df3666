//! warren's benchmarks, side by side in one run:
//!
//! ```sh
//! cargo bench -p warren-supervisor --bench compare              # warren and the bare client
//! cargo bench -p warren-supervisor --bench compare -- --peers   # and Celery and Dramatiq
//! ```
//!
//! fanout3 (N seeds -> F parts each -> sha256 -> sink; N + 2NF messages)
//! on a bare lapin client and on warren, with quorum and with classic
//! queues; with `--peers`, Celery and Dramatiq (installed into a virtualenv
//! from PyPI if missing: `PEERS_VENV`, default /tmp/peers/venv); then the
//! latency-bound crawl, the producer's one-at-a-time publish latency and the
//! supervisor's reaction to a backlog. fanout3's `work` stage also runs as
//! a Python and a PHP exec stage (classic queues), and the exec protocol's
//! CPU per message is measured; and the Rust pipeline runs again with job
//! tracking on (`warren+jobs`). Options: `--n 2000 --f 10`, `--rounds 3`
//! (fanout3 rounds for every system, the median is kept), `--skip-crawl`,
//! `--skip-exec`; `--cluster` runs only warren's fanout3 on quorum queues,
//! on the single broker and on a three-node cluster started for the run.

mod bare;
mod cleanup;
mod cluster;
mod crawl;
mod exec;
mod fanout;
mod latency;
mod peers;
mod rss;
mod run;

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

/// The fanout3 workload's size.
pub struct Fanout {
    /// Seeds.
    pub n: u64,
    /// Parts per seed.
    pub f: u64,
}

impl Fanout {
    /// Messages moved: seeds, parts, digests.
    pub fn messages(&self) -> u64 {
        self.n + 2 * self.n * self.f
    }
}

/// Sends the seeds `{"id": i, "body": "x" * 64}` to `expand`.
pub async fn send_seeds(producer: &warren::Producer, fanout: &Fanout) {
    send_all(
        producer,
        "expand",
        (0..fanout.n).map(|i| {
            (
                format!("s{i}"),
                serde_json::json!({"id": i, "body": "x".repeat(64)}),
            )
        }),
    )
    .await;
}

/// Sends `(id, body)` messages to `stage`, 256 awaiting their confirms at
/// once.
pub async fn send_all(
    producer: &warren::Producer,
    stage: &str,
    messages: impl Iterator<Item = (String, serde_json::Value)>,
) {
    let sends = messages.map(|(id, body)| {
        let producer = producer.clone();
        async move {
            producer.send_with_id(stage, &id, &body).await.unwrap();
        }
    });
    futures_util::stream::iter(sends)
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
}

use fanout::Variant;
use futures_util::StreamExt;

/// Counts the lines of a growing file without reading it again.
pub struct LineCounter {
    path: PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCounter {
    /// A counter of `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> LineCounter {
        LineCounter {
            path,
            offset: 0,
            lines: 0,
        }
    }

    /// Lines so far.
    pub fn count(&mut self) -> u64 {
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            use std::io::Seek;
            if file.seek(std::io::SeekFrom::Start(self.offset)).is_ok() {
                let mut buffer = Vec::new();
                if file.read_to_end(&mut buffer).is_ok() {
                    self.offset += buffer.len() as u64;
                    self.lines += buffer.iter().filter(|b| **b == b'\n').count() as u64;
                }
            }
        }
        self.lines
    }
}

struct Options {
    fanout: Fanout,
    rounds: usize,
    peers: bool,
    crawl: bool,
    /// Only the bare client's fanout3 (for profiling the limit).
    bare_only: bool,
    /// Only warren's fanout3 (for profiling warren).
    warren_only: bool,
    /// fanout3 with exec `work` stages, and the protocol's cost.
    exec: bool,
    /// Only warren's fanout3 on the single broker and on a three-node
    /// cluster started for the run.
    cluster: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Options {
        fanout: Fanout {
            n: value("--n", 2000),
            f: value("--f", 10),
        },
        rounds: value("--rounds", 3) as usize,
        peers: args.iter().any(|a| a == "--peers"),
        crawl: !args.iter().any(|a| a == "--skip-crawl"),
        bare_only: args.iter().any(|a| a == "--bare-only"),
        warren_only: args.iter().any(|a| a == "--warren-only"),
        exec: !args.iter().any(|a| a == "--skip-exec"),
        cluster: args.iter().any(|a| a == "--cluster"),
    }
}

/// Builds an example program in release mode; returns its path.
fn example(name: &str) -> PathBuf {
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "warren-supervisor",
            "--example",
            name,
        ])
        .status()
        .expect("cargo");
    assert!(status.success(), "building {name} failed");
    warren.parent().unwrap().join("examples").join(name)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mib(kib: &[u64]) -> String {
    if kib.is_empty() {
        return "-".into();
    }
    kib.iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// What every warren run of fanout3 shares.
struct Setup<'a> {
    url: &'a str,
    fanout: &'a Fanout,
    dir: &'a Path,
    warren: &'a Path,
    worker: &'a Path,
}

/// `rounds` runs of a variant of warren's fanout3 on `kind` queues, as one
/// row (the median time).
async fn variant_rounds(
    setup: &Setup<'_>,
    kind: &'static str,
    variant: Variant,
    rounds: usize,
) -> Row {
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for round in 0..rounds {
        let measured = fanout::run(
            setup.url,
            kind,
            setup.fanout,
            setup.dir,
            setup.warren,
            setup.worker,
            variant,
        )
        .await;
        eprintln!(
            "  {} {kind} round {}: {:.2}s",
            variant.system(),
            round + 1,
            measured.seconds
        );
        times.push(measured.seconds);
        rss = measured.worker_rss_kib;
    }
    Row {
        system: variant.system().into(),
        queue: kind,
        seconds: median(times),
        rss: mib(&rss),
    }
}

struct Row {
    system: String,
    queue: &'static str,
    seconds: f64,
    rss: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = options();
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let worker = example("fanout3-worker");
    let api = example("fake-grading-api");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fanout = &options.fanout;
    println!(
        "fanout3: N={} F={}, {} messages, {} rounds each (median kept); {} cores",
        fanout.n,
        fanout.f,
        fanout.messages(),
        options.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    if options.cluster {
        cluster::run(&url, fanout, dir.path(), &warren, &worker, options.rounds).await;
        return;
    }
    let mut rows: Vec<Row> = Vec::new();
    for kind in ["quorum", "classic"] {
        let mut bare_times = Vec::new();
        let mut warren_times = Vec::new();
        let mut rss_seen = Vec::new();
        for round in 0..options.rounds {
            let sink = dir.path().join(format!("bare-{kind}-{round}.jsonl"));
            let prefetch = std::env::var("BARE_PREFETCH")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(500);
            if !options.warren_only {
                bare_times.push(bare::run(&url, kind, fanout, &sink, prefetch).await);
            } else {
                bare_times.push(f64::NAN);
            }
            if options.bare_only {
                eprintln!(
                    "  {kind} round {}: bare {:.2}s",
                    round + 1,
                    bare_times[round]
                );
                continue;
            }
            let measured = fanout::run(
                &url,
                kind,
                fanout,
                dir.path(),
                &warren,
                &worker,
                Variant::Rust,
            )
            .await;
            warren_times.push(measured.seconds);
            rss_seen = measured.worker_rss_kib;
            eprintln!(
                "  {kind} round {}: bare {:.2}s, warren {:.2}s",
                round + 1,
                bare_times[round],
                warren_times[round]
            );
        }
        rows.push(Row {
            system: "bare lapin".into(),
            queue: kind,
            seconds: median(bare_times),
            rss: "-".into(),
        });
        if !warren_times.is_empty() {
            rows.push(Row {
                system: "warren".into(),
                queue: kind,
                seconds: median(warren_times),
                rss: mib(&rss_seen),
            });
        }
    }
    let setup = Setup {
        url: &url,
        fanout,
        dir: dir.path(),
        warren: &warren,
        worker: &worker,
    };
    // Job tracking's cost: the Rust pipeline again with `jobs.track`.
    if !options.bare_only {
        for kind in ["quorum", "classic"] {
            rows.push(variant_rounds(&setup, kind, Variant::Tracked, options.rounds).await);
        }
    }
    let mut exec_overhead = None;
    if options.exec && !options.bare_only {
        for variant in [Variant::Python, Variant::Php] {
            let program = if variant == Variant::Php {
                "php"
            } else {
                "python3"
            };
            if Command::new(program).arg("--version").output().is_err() {
                eprintln!(
                    "{}: `{program}` is not installed; not run",
                    variant.system()
                );
                continue;
            }
            rows.push(variant_rounds(&setup, "classic", variant, options.rounds).await);
        }
        let mut per_message = Vec::new();
        for _ in 0..options.rounds {
            per_message.push(exec::overhead(&url, dir.path(), &warren, 20_000).await);
        }
        exec_overhead = Some(median(per_message));
    }
    if options.peers {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/peers");
        match peers::install() {
            Ok(()) => {
                for system in ["celery", "dramatiq"] {
                    // As many rounds as warren's, the median kept: the
                    // peers' times vary as much as warren's between runs.
                    let mut times = Vec::new();
                    let mut rss = String::new();
                    for round in 0..options.rounds {
                        match peers::run(system, &scripts, fanout.n, fanout.f, &url) {
                            Ok(run) => {
                                eprintln!("  {system} round {}: {:.2}s", round + 1, run.seconds);
                                times.push(run.seconds);
                                rss = mib(&run.rss_kib);
                            }
                            Err(error) => eprintln!("{system}: {error}"),
                        }
                    }
                    if !times.is_empty() {
                        rows.push(Row {
                            system: system.into(),
                            queue: "classic",
                            seconds: median(times),
                            rss,
                        });
                    }
                }
            }
            Err(error) => eprintln!("peers not run: {error}"),
        }
    }

    println!();
    println!(
        "{:<11} {:<8} {:>9} {:>8} {:>9} {:>8}  peak RSS per worker process (MiB)",
        "system", "queue", "messages", "seconds", "msgs/s", "vs bare"
    );
    for row in &rows {
        let bare = rows
            .iter()
            .find(|r| r.system == "bare lapin" && r.queue == row.queue)
            .map_or(f64::NAN, |r| r.seconds);
        println!(
            "{:<11} {:<8} {:>9} {:>8.2} {:>9.0} {:>8.2}  {}",
            row.system,
            row.queue,
            fanout.messages(),
            row.seconds,
            fanout.messages() as f64 / row.seconds,
            bare / row.seconds,
            row.rss
        );
    }
    let warren_classic = rows
        .iter()
        .find(|r| r.system == "warren" && r.queue == "classic")
        .map(|r| r.seconds);
    for peer in rows
        .iter()
        .filter(|r| r.system == "celery" || r.system == "dramatiq")
    {
        if let Some(w) = warren_classic {
            println!(
                "warren (classic) is {:.1}x {}",
                peer.seconds / w,
                peer.system
            );
        }
    }
    for tracked in rows.iter().filter(|r| r.system == "warren+jobs") {
        if let Some(plain) = rows
            .iter()
            .find(|r| r.system == "warren" && r.queue == tracked.queue)
        {
            println!(
                "job tracking ({}): {:.2}x the throughput without it",
                tracked.queue,
                plain.seconds / tracked.seconds
            );
        }
    }
    let celery = rows.iter().find(|r| r.system == "celery");
    for exec in rows
        .iter()
        .filter(|r| r.system == "warren+py" || r.system == "warren+php")
    {
        if let Some(w) = warren_classic {
            print!(
                "{}: exec work stage at {:.2}x the Rust stage's throughput",
                exec.system,
                w / exec.seconds
            );
        }
        match celery {
            Some(celery) => println!(", {:.1}x Celery", celery.seconds / exec.seconds),
            None => println!(),
        }
    }
    if let Some(us) = exec_overhead {
        println!(
            "exec protocol: {us:.1} us of warren CPU per message (a child answering `done` at once; consuming and acknowledging included)"
        );
    }

    if options.crawl {
        let crawl = crawl::run(&url, dir.path(), &warren, &api, 2000, 100).await;
        println!();
        println!(
            "crawl: {} inputs x {} stages x {:.0} ms / {} in flight = limit {:.2}s; warren took {:.2}s: {:.2}x the limit",
            crawl.inputs,
            crawl.stages,
            crawl.latency * 1000.0,
            crawl.concurrency,
            crawl.limit(),
            crawl.seconds,
            crawl.seconds / crawl.limit()
        );
    }
    let (p50, p99) = latency::publish(&url, dir.path(), 2000).await;
    println!(
        "publish latency (Producer::send_with_id, one at a time, quorum queue, 2000 sends): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    let reaction = latency::reaction(&url, dir.path(), &warren, &api).await;
    println!(
        "supervisor reaction (poll 1s): backlog sent -> 4 workers consuming in {reaction:.2}s"
    );
    cleanup::run(&url).await;
}
