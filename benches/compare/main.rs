//! warren's benchmarks, side by side in one run:
//!
//! ```sh
//! cargo bench -p warren-command --bench compare              # warren and the bare client
//! cargo bench -p warren-command --bench compare -- --peers   # and Celery and Dramatiq
//! ```
//!
//! fanout3 (N seeds -> F parts each -> sha256 -> sink; N + 2NF messages)
//! on a bare lapin client (on one connection, and with its publishing on a
//! second connection as warren does: `bare 2-conn`) and on warren, rounds
//! interleaved, with quorum and with classic queues; with `--peers`, Celery and Dramatiq (installed into a virtualenv
//! from PyPI if missing: `PEERS_VENV`, default /tmp/peers/venv); then the
//! latency-bound crawl, the producer's one-at-a-time publish latency and the
//! supervisor's reaction to a backlog. fanout3's `work` stage also runs as
//! a Python and a PHP exec stage (classic queues; each round against a
//! Rust-stage round run just before it), and the exec protocol's CPU per
//! message is measured; and the Rust pipeline runs again with job
//! tracking on (`warren+jobs`). Options: `--n 2000 --f 10`, `--rounds 3`
//! (fanout3 rounds for every system, the median is kept), `--skip-crawl`,
//! `--skip-light` (one seed at a time through fanout3, see `light.rs`),
//! `--skip-exec`, `--skip-tracking`, `--skip-instructions`, `--kind
//! quorum|classic`; `--cluster` runs only fanout3 on quorum queues:
//! warren on the single broker and on a three-node cluster started for
//! the run, and the bare client (both ways) on that cluster.
//! `WARREN_BENCH_BEFORE=DIR` (a `target/release` folder of an earlier
//! build, with `warren` and `examples/fanout3-worker`) runs that build's
//! fanout3 and exec protocol measure too, in the same rounds, as `before`.

mod bare;
mod bare_sink;
mod cleanup;
mod cluster;
mod crawl;
mod exec;
mod fanout;
mod instructions;
mod latency;
mod light;
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

use bare::Publishing;
use fanout::{Setup, Variant};
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
    /// One seed at a time through fanout3, warren and the bare client.
    light: bool,
    /// Only the bare client's fanout3 (for profiling the limit).
    bare_only: bool,
    /// Only warren's fanout3 (for profiling warren).
    warren_only: bool,
    /// fanout3 with exec `work` stages, and the protocol's cost.
    exec: bool,
    /// Only warren's fanout3 on the single broker and on a three-node
    /// cluster started for the run.
    cluster: bool,
    /// The queue types run (`--kind quorum` or `--kind classic`: one).
    kinds: Vec<&'static str>,
    /// Also fanout3 with job tracking on (not with `--skip-tracking`).
    tracking: bool,
    /// Instructions per message under callgrind (not with
    /// `--skip-instructions`).
    instructions: bool,
    /// Only the bare client's fanout3 on quorum queues at this size, and
    /// nothing else (what [`instructions`] runs under callgrind).
    bare_child: Option<Fanout>,
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
        light: !args.iter().any(|a| a == "--skip-light"),
        bare_only: args.iter().any(|a| a == "--bare-only"),
        warren_only: args.iter().any(|a| a == "--warren-only"),
        exec: !args.iter().any(|a| a == "--skip-exec"),
        cluster: args.iter().any(|a| a == "--cluster"),
        kinds: match args
            .iter()
            .position(|a| a == "--kind")
            .and_then(|i| args.get(i + 1))
        {
            Some(kind) if kind == "quorum" => vec!["quorum"],
            Some(kind) if kind == "classic" => vec!["classic"],
            Some(other) => panic!("--kind {other}: quorum or classic"),
            None => vec!["quorum", "classic"],
        },
        tracking: !args.iter().any(|a| a == "--skip-tracking"),
        instructions: !args.iter().any(|a| a == "--skip-instructions"),
        bare_child: args.iter().position(|a| a == "--bare-child").map(|i| {
            let number = |k: usize| -> u64 {
                args.get(i + k)
                    .and_then(|v| v.parse().ok())
                    .expect("--bare-child N F")
            };
            Fanout {
                n: number(1),
                f: number(2),
            }
        }),
    }
}

/// Builds an example program in release mode; returns its path.
fn example(name: &str) -> PathBuf {
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    // Without what cargo set for this bench (CARGO_MANIFEST_DIR, ...): a
    // dependency's build script that watches one of them would run again,
    // and with it the build of everything above it, here and in the next
    // `cargo bench`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_PKG_")
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&name.as_ref())
        {
            cargo.env_remove(name.as_ref());
        }
    }
    let status = cargo
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "warren-command",
            "--example",
            name,
        ])
        .status()
        .expect("cargo");
    assert!(status.success(), "building {name} failed");
    warren.parent().unwrap().join("examples").join(name)
}

/// The row of the earlier build named by `WARREN_BENCH_BEFORE`.
const BEFORE: &str = "before";

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
        let measured = fanout::run(setup, kind, variant).await;
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
        times,
        rss: mib(&rss),
    }
}

/// The lowest and highest of `values`, `1.21-1.38`.
fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}-{max:.2}")
}

/// One system's rounds of fanout3 on one queue type.
struct Row {
    system: String,
    queue: &'static str,
    /// Seconds of each round.
    times: Vec<f64>,
    rss: String,
}

impl Row {
    /// The median round's seconds.
    fn seconds(&self) -> f64 {
        median(self.times.clone())
    }

    /// The fastest and slowest rounds.
    fn spread(&self) -> String {
        spread(&self.times)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = options();
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    if let Some(fanout) = &options.bare_child {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sink = dir.path().join("sink.jsonl");
        bare::start(
            &url,
            "quorum",
            fanout,
            &sink,
            500,
            Publishing::SameConnection,
        )
        .await
        .finish(fanout)
        .await;
        return;
    }
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
    let setup = Setup {
        url: &url,
        fanout,
        dir: dir.path(),
        warren: &warren,
        worker: &worker,
        wrapper: &[],
    };
    // An earlier build of warren, run in the same rounds (bare, warren,
    // earlier), so a change is judged against what it replaced.
    let before_dir = std::env::var_os("WARREN_BENCH_BEFORE").map(PathBuf::from);
    let before_paths = before_dir
        .as_ref()
        .map(|d| (d.join("warren"), d.join("examples/fanout3-worker")));
    let before = before_paths.as_ref().map(|(warren, worker)| Setup {
        warren,
        worker,
        ..setup
    });
    let mut rows: Vec<Row> = Vec::new();
    for &kind in &options.kinds {
        let mut bare_times = Vec::new();
        let mut bare2_times = Vec::new();
        let mut warren_times = Vec::new();
        let mut before_times = Vec::new();
        let mut rss_seen = Vec::new();
        for round in 0..options.rounds {
            let sink = dir.path().join(format!("bare-{kind}-{round}.jsonl"));
            let prefetch = std::env::var("BARE_PREFETCH")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(500);
            // Both limits: the bare client on one connection, and with
            // its publishing on a second one (warren's guarantee).
            for (publishing, times) in [
                (Publishing::SameConnection, &mut bare_times),
                (Publishing::OwnConnection, &mut bare2_times),
            ] {
                times.push(match options.warren_only {
                    false => {
                        bare::start(&url, kind, fanout, &sink, prefetch, publishing)
                            .await
                            .finish(fanout)
                            .await
                    }
                    true => f64::NAN,
                });
            }
            if options.bare_only {
                eprintln!(
                    "  {kind} round {}: bare {:.2}s, bare 2-conn {:.2}s",
                    round + 1,
                    bare_times[round],
                    bare2_times[round]
                );
                continue;
            }
            let measured = fanout::run(&setup, kind, Variant::Rust).await;
            warren_times.push(measured.seconds);
            rss_seen = measured.worker_rss_kib;
            eprintln!(
                "  {kind} round {}: bare {:.2}s, bare 2-conn {:.2}s, warren {:.2}s",
                round + 1,
                bare_times[round],
                bare2_times[round],
                warren_times[round]
            );
            if let Some(before) = &before {
                before_times.push(fanout::run(before, kind, Variant::Rust).await.seconds);
                eprintln!(
                    "  {kind} round {}: before {:.2}s",
                    round + 1,
                    before_times[round]
                );
            }
        }
        for (publishing, times) in [
            (Publishing::SameConnection, bare_times),
            (Publishing::OwnConnection, bare2_times),
        ] {
            rows.push(Row {
                system: publishing.system().into(),
                queue: kind,
                times,
                rss: "-".into(),
            });
        }
        if !warren_times.is_empty() {
            rows.push(Row {
                system: "warren".into(),
                queue: kind,
                times: warren_times,
                rss: mib(&rss_seen),
            });
        }
        if !before_times.is_empty() {
            rows.push(Row {
                system: BEFORE.into(),
                queue: kind,
                times: before_times,
                rss: "-".into(),
            });
        }
    }
    // Job tracking's cost: the Rust pipeline again with `jobs.track`.
    if !options.bare_only && options.tracking {
        for &kind in &options.kinds {
            rows.push(variant_rounds(&setup, kind, Variant::Tracked, options.rounds).await);
        }
    }
    let instructions = if options.instructions && !options.bare_only {
        let mut counted = instructions::run(&setup).await;
        if let Some(before) = &before {
            counted += &format!("\n{BEFORE}: {}", instructions::run(before).await);
        }
        Some(counted)
    } else {
        None
    };
    let mut exec_overhead = None;
    // Each exec variant's rounds against Rust-stage rounds run just before
    // them (round by round, like the bare client's): the ratio of each
    // pair, so that drift over the run hits both.
    let mut exec_ratios: Vec<(&str, Vec<f64>)> = Vec::new();
    if options.exec && !options.bare_only {
        let variants: Vec<Variant> = [(Variant::Python, "python3"), (Variant::Php, "php")]
            .into_iter()
            .filter(|(variant, program)| {
                let there = Command::new(program).arg("--version").output().is_ok();
                if !there {
                    eprintln!(
                        "{}: `{program}` is not installed; not run",
                        variant.system()
                    );
                }
                there
            })
            .map(|(variant, _)| variant)
            .collect();
        let mut times = vec![Vec::new(); variants.len()];
        let mut ratios = vec![Vec::new(); variants.len()];
        let mut rss = vec![Vec::new(); variants.len()];
        for round in 0..options.rounds {
            for (i, &variant) in variants.iter().enumerate() {
                let rust = fanout::run(&setup, "classic", Variant::Rust).await.seconds;
                let measured = fanout::run(&setup, "classic", variant).await;
                eprintln!(
                    "  classic round {}: warren {rust:.2}s, {} {:.2}s",
                    round + 1,
                    variant.system(),
                    measured.seconds
                );
                ratios[i].push(rust / measured.seconds);
                times[i].push(measured.seconds);
                rss[i] = measured.worker_rss_kib;
            }
        }
        for (i, variant) in variants.iter().enumerate() {
            rows.push(Row {
                system: variant.system().into(),
                queue: "classic",
                times: std::mem::take(&mut times[i]),
                rss: mib(&rss[i]),
            });
            exec_ratios.push((variant.system(), std::mem::take(&mut ratios[i])));
        }
        // With an earlier build, its rounds interleaved with this one's.
        let (mut per_message, mut per_message_before) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            per_message.push(exec::overhead(&url, dir.path(), &warren, 20_000).await);
            if let Some(before) = &before {
                per_message_before
                    .push(exec::overhead(&url, dir.path(), before.warren, 20_000).await);
            }
        }
        exec_overhead = Some((median(per_message), per_message_before));
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
                            times,
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
        "{:<11} {:<8} {:>9} {:>8} {:>11} {:>9} {:>8} {:>9}  peak RSS per worker process (MiB)",
        "system", "queue", "messages", "seconds", "min-max", "msgs/s", "vs bare", "vs 2-conn"
    );
    for row in &rows {
        let limit = |publishing: Publishing| {
            rows.iter()
                .find(|r| r.system == publishing.system() && r.queue == row.queue)
                .map_or(f64::NAN, Row::seconds)
        };
        println!(
            "{:<11} {:<8} {:>9} {:>8.2} {:>11} {:>9.0} {:>8.2} {:>9.2}  {}",
            row.system,
            row.queue,
            fanout.messages(),
            row.seconds(),
            row.spread(),
            fanout.messages() as f64 / row.seconds(),
            limit(Publishing::SameConnection) / row.seconds(),
            limit(Publishing::OwnConnection) / row.seconds(),
            row.rss
        );
    }
    // Interleaved rounds: the ratio of each round to the bare round run
    // just before it, so drift between rounds hits both.
    for &kind in &options.kinds {
        for (system, limit) in [
            ("warren", Publishing::OwnConnection),
            ("warren", Publishing::SameConnection),
            (BEFORE, Publishing::OwnConnection),
            (BEFORE, Publishing::SameConnection),
        ] {
            let bare = rows
                .iter()
                .find(|r| r.system == limit.system() && r.queue == kind);
            let warren = rows.iter().find(|r| r.system == system && r.queue == kind);
            if let (Some(bare), Some(warren)) = (bare, warren) {
                let ratios: Vec<f64> = bare
                    .times
                    .iter()
                    .zip(&warren.times)
                    .map(|(b, w)| b / w)
                    .collect();
                if ratios.iter().all(|r| r.is_finite()) && !ratios.is_empty() {
                    println!(
                        "{system} vs {} ({kind}), round by round: median {:.2}x ({})",
                        limit.system(),
                        median(ratios.clone()),
                        spread(&ratios)
                    );
                }
            }
        }
    }
    let warren_classic = rows
        .iter()
        .find(|r| r.system == "warren" && r.queue == "classic")
        .map(Row::seconds);
    for peer in rows
        .iter()
        .filter(|r| r.system == "celery" || r.system == "dramatiq")
    {
        if let Some(w) = warren_classic {
            println!(
                "warren (classic) is {:.1}x {}",
                peer.seconds() / w,
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
                plain.seconds() / tracked.seconds()
            );
        }
    }
    let celery = rows.iter().find(|r| r.system == "celery");
    for (system, ratios) in &exec_ratios {
        print!(
            "{system}: exec work stage at {:.2}x the Rust stage's throughput (round by round against the Rust stage's round just before: median, {})",
            median(ratios.clone()),
            spread(ratios)
        );
        let exec = rows.iter().find(|r| r.system == *system);
        match (celery, exec) {
            (Some(celery), Some(exec)) => {
                println!(", {:.1}x Celery", celery.seconds() / exec.seconds())
            }
            _ => println!(),
        }
    }
    if let Some(instructions) = instructions {
        println!("{instructions}");
    }
    if let Some((us, before)) = exec_overhead {
        println!(
            "exec protocol: {us:.1} us of warren CPU per message (a child answering `done` at once; consuming and acknowledging included)"
        );
        if !before.is_empty() {
            println!(
                "exec protocol, {BEFORE}: {:.1} us of warren CPU per message ({})",
                median(before.clone()),
                spread(&before)
            );
        }
    }

    if options.light && !options.bare_only && !options.warren_only {
        light::run(&setup, 200, options.rounds).await;
    }
    if options.crawl {
        let mut ratios = Vec::new();
        let mut flat = Vec::new();
        let mut last = None;
        for round in 0..options.rounds {
            let crawl = crawl::run(&url, dir.path(), &warren, &api, 2000, 100).await;
            eprintln!("  crawl round {}: {:.2}s", round + 1, crawl.seconds);
            ratios.push(crawl.seconds / crawl.limit());
            flat.push(crawl.seconds / crawl.flat_limit());
            last = Some(crawl);
        }
        if let Some(crawl) = last {
            println!();
            println!(
                "crawl: {} inputs, {} stages of {} calls in flight, {:.0} ms each: {} rounds per stage, limit ({} + {}) x {:.0} ms = {:.2}s; warren took {:.2}x the limit (median of {}, {}); {:.2}x inputs x stages x latency / calls in flight = {:.2}s",
                crawl.inputs,
                crawl.stages,
                crawl.concurrency / crawl.stages,
                crawl.latency * 1000.0,
                crawl.rounds(),
                crawl.rounds(),
                crawl.stages - 1,
                crawl.latency * 1000.0,
                crawl.limit(),
                median(ratios.clone()),
                ratios.len(),
                spread(&ratios),
                median(flat),
                crawl.flat_limit(),
            );
        }
    }
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let (p50, p99) = latency::publish(&url, dir.path(), 2000).await;
        p50s.push(p50);
        p99s.push(p99);
    }
    println!(
        "publish latency (Producer::send_with_id, one at a time, quorum queue, 2000 sends; median of {} rounds): p50 {:.2} ms ({}), p99 {:.2} ms ({})",
        p50s.len(),
        median(p50s.clone()),
        spread(&p50s),
        median(p99s.clone()),
        spread(&p99s)
    );
    let reaction = latency::reaction(&url, dir.path(), &warren, &api).await;
    println!(
        "supervisor reaction (poll 1s): backlog sent -> 4 workers consuming in {reaction:.2}s"
    );
    cleanup::run(&url).await;
}
