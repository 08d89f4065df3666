//! Scale: a one-stage pipeline (a sink) fed 100,000, 1,000,000 and
//! 10,000,000 generated lines (about 100 bytes each, written to a temporary
//! folder, not committed):
//!
//! ```sh
//! cargo bench -p warren-command --bench scale                      # all three sizes
//! cargo bench -p warren-command --bench scale -- --sizes 100000,1000000
//! ```
//!
//! For each size it prints: the bare lapin client publishing the lines
//! (persistent, confirmed, 512 unconfirmed at most, the window `warren
//! send` uses) beside `warren send` of the same file (alternating, the
//! median of 3 rounds each up to 1,000,000 lines, one round above); the sink alone
//! working off that backlog; `warren run` (sending while working) with its
//! total time and the time to the last result; inputs/s; the peak RSS of
//! `warren send`, of `warren run` and of the sink worker; how long a
//! sink worker takes to start on the results file the run wrote; and, up
//! to 1,000,000 lines, the bare client's own overlap (`bare/max`): its sink
//! (`benches/compare/bare_sink.rs`) alone on the backlog, then publishing
//! while that sink works, against the longer of the two alone.

#[path = "../compare/bare_sink.rs"]
mod bare_sink;
#[allow(dead_code)]
#[path = "../compare/rss.rs"]
mod rss;
#[allow(dead_code)]
#[path = "../compare/run.rs"]
mod run;

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use rss::Peaks;
use run::Declared;

/// Sizes up to which sending alone and working alone are measured too.
const FULL_UP_TO: u64 = 1_000_000;

/// One size's figures.
struct Row {
    lines: u64,
    /// Sending alone and working alone (up to [`FULL_UP_TO`] lines).
    alone: Option<Alone>,
    run: f64,
    run_results: f64,
    run_rss: u64,
    sink_rss: u64,
    sink_start: f64,
}

/// The phases measured alone, in seconds, and `warren send`'s peak RSS.
struct Alone {
    bare: f64,
    send: f64,
    send_rss: u64,
    work: f64,
    /// The bare client's sink alone on the backlog, and the bare client
    /// publishing while its sink works (to the last line on disk).
    bare_work: f64,
    bare_together: f64,
}

impl Alone {
    /// The bare client's own overlap: publishing while its sink works,
    /// against the longer of the two alone.
    fn bare_overlap(&self) -> f64 {
        self.bare_together / self.bare.max(self.bare_work)
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<u64> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map_or("100000,1000000,10000000", String::as_str)
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("--sizes: numbers separated by commas")
        })
        .collect();
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for lines in sizes {
        let input = dir.path().join(format!("input-{lines}.jsonl"));
        generate(&input, lines);
        let row = measure(&url, &warren, dir.path(), &input, lines).await;
        print_row(&row);
        std::fs::remove_file(&input).expect("remove the input");
        rows.push(row);
    }
    summary(&rows);
}

/// Writes `lines` lines of about 100 bytes.
fn generate(path: &Path, lines: u64) {
    let mut out = BufWriter::new(std::fs::File::create(path).expect("create input"));
    for n in 0..lines {
        writeln!(out, "{{\"n\":{n:>10},\"body\":\"{}\"}}", "x".repeat(70)).expect("write input");
    }
    out.flush().expect("write input");
}

/// The pipeline: one sink stage, the defaults otherwise.
fn pipeline_file(dir: &Path, lines: u64) -> PathBuf {
    let path = dir.join(format!("scale-{lines}.yaml"));
    std::fs::write(
        &path,
        format!("pipeline: bench_scale_{lines}\nstages:\n  out:\n    sink: {{ path: out-{lines}.jsonl }}\n"),
    )
    .expect("write pipeline");
    path
}

async fn measure(url: &str, warren: &Path, dir: &Path, input: &Path, lines: u64) -> Row {
    let results = dir.join(format!("out-{lines}.jsonl"));
    let remove_results = || {
        run::remove_sink(&results);
        let _ = std::fs::remove_dir_all(dir.join(".warren"));
    };
    remove_results();

    // Above FULL_UP_TO lines only `warren run` is measured (sending alone
    // and working alone would take the better part of an hour more).
    let mut sink_peaks = Peaks::default();
    let alone = if lines <= FULL_UP_TO {
        Some(alone(url, warren, dir, input, lines, &mut sink_peaks).await)
    } else {
        None
    };
    remove_results();

    // Sending while working (tear_down removed the file).
    let file = pipeline_file(dir, lines);
    let started = Instant::now();
    let mut counter = LineCount::new(results.clone());
    let mut run_results = None;
    let (run, run_rss) = watch(
        Command::new(warren)
            .args(["run", file.to_str().unwrap(), "--input"])
            .arg(input)
            .env("AMQP_URL", url)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log(dir, "run.log")),
        |pid| {
            sink_peaks.sample_children_of(pid);
            if run_results.is_none() && counter.count() >= lines {
                run_results = Some(started.elapsed().as_secs_f64());
            }
            false
        },
    );
    assert!(
        run.success(),
        "warren run failed: {}",
        std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
    );
    let run = started.elapsed().as_secs_f64();
    let run_results = run_results.unwrap_or(run);

    // A sink worker starting on the results the run wrote.
    let file = pipeline_file(dir, lines);
    let declared = Declared::new(url, &file).await;
    let started = Instant::now();
    let mut worker = Command::new(warren)
        .args(["worker", file.to_str().unwrap(), "--stage", "out"])
        .env("AMQP_URL", url)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sink worker");
    declared
        .wait_for_consumers("out", 1, Duration::from_millis(10))
        .await;
    let sink_start = started.elapsed().as_secs_f64();
    let _ = worker.kill();
    let _ = worker.wait();
    declared.tear_down().await;
    remove_results();

    Row {
        lines,
        alone,
        run,
        run_results,
        run_rss: run_rss.iter().copied().max().unwrap_or(0),
        sink_rss: sink_peaks.values().into_iter().max().unwrap_or(0),
        sink_start,
    }
}

/// The bare client and `warren send` alone, then the sink alone on the
/// backlog.
async fn alone(
    url: &str,
    warren: &Path,
    dir: &Path,
    input: &Path,
    lines: u64,
    peaks: &mut Peaks,
) -> Alone {
    let results = dir.join(format!("out-{lines}.jsonl"));
    // The bare client and `warren send`, round after round (so drift hits
    // both); the median of each is kept. The last send's backlog stays for
    // the sink alone.
    let rounds = 3;
    let (mut bare, mut send, mut send_rss) = (Vec::new(), Vec::new(), 0);
    let mut declared = None;
    for round in 0..rounds {
        bare.push(bare_publish(url, &format!("bench_scale_bare_{lines}"), input).await);
        let file = pipeline_file(dir, lines);
        let fresh = Declared::new(url, &file).await;
        let started = Instant::now();
        let (status, peaks) = watch(
            Command::new(warren)
                .args(["send", file.to_str().unwrap(), "out"])
                .arg(input)
                .env("AMQP_URL", url)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(log(dir, "send.log")),
            |_| false,
        );
        assert!(
            status.success(),
            "warren send failed: {}",
            std::fs::read_to_string(dir.join("send.log")).unwrap_or_default()
        );
        send.push(started.elapsed().as_secs_f64());
        send_rss = send_rss.max(peaks.into_iter().max().unwrap_or(0));
        if round + 1 < rounds {
            fresh.tear_down().await;
        } else {
            declared = Some(fresh);
        }
    }
    let (bare, send) = (median(bare), median(send));
    let declared = declared.expect("a last round");
    let file = pipeline_file(dir, lines);

    let started = Instant::now();
    let supervisor = Command::new(warren)
        .args(["supervise", file.to_str().unwrap()])
        .env("AMQP_URL", url)
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren supervise");
    let mut counter = LineCount::new(results.clone());
    while counter.count() < lines {
        peaks.sample_children_of(supervisor.id());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let work = started.elapsed().as_secs_f64();
    stop(supervisor);
    declared.tear_down().await;
    let (bare_work, bare_together) =
        bare_pair(url, &format!("bench_scale_bare_{lines}"), input, lines, dir).await;
    Alone {
        bare,
        send,
        send_rss,
        work,
        bare_work,
        bare_together,
    }
}

/// Runs `command` to its end, sampling its peak RSS (and calling `each`
/// with its pid) every 100 ms.
fn watch(
    command: &mut Command,
    mut each: impl FnMut(u32) -> bool,
) -> (std::process::ExitStatus, Vec<u64>) {
    let mut child = command.spawn().expect("start warren");
    let mut peaks = Peaks::default();
    loop {
        if let Some(status) = child.try_wait().expect("wait for warren") {
            return (status, peaks.values());
        }
        peaks.sample(child.id());
        each(child.id());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh log file in `dir`.
fn log(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name))
        .expect("log file")
        .into()
}

/// SIGTERM, then wait.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Publishes every line of `input` to a fresh quorum queue as the bare
/// client does: persistent, confirmed, at most 512 unconfirmed. Seconds.
async fn bare_publish(url: &str, queue: &str, input: &Path) -> f64 {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = fresh_queue(&conn, queue).await;
    let seconds = publish_lines(&channel, queue, input).await;
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
    let _ = conn.close(200, "done".into()).await;
    seconds
}

/// The bare client's own run, the floor under `warren run`'s overlap: its
/// sink (`benches/compare/bare_sink.rs`) alone on a backlog of the lines,
/// then publishing the lines while that sink works, timed to the last line
/// on disk. Seconds (working alone, together).
async fn bare_pair(url: &str, queue: &str, input: &Path, lines: u64, dir: &Path) -> (f64, f64) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let sink_path = dir.join("bare-sink.jsonl");
    let mut phases = Vec::new();
    for together in [false, true] {
        run::remove_sink(&sink_path);
        let channel = fresh_queue(&conn, queue).await;
        if !together {
            publish_lines(&channel, queue, input).await;
        }
        let written = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let sink = tokio::spawn(bare_sink::sink(
            conn.create_channel().await.expect("channel"),
            queue.to_string(),
            sink_path.clone(),
            1000,
            written.clone(),
        ));
        if together {
            publish_lines(&channel, queue, input).await;
        }
        while written.load(Ordering::Relaxed) < lines {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        phases.push(started.elapsed().as_secs_f64());
        sink.abort();
        let _ = channel.queue_delete(queue.into(), Default::default()).await;
    }
    run::remove_sink(&sink_path);
    let _ = conn.close(200, "done".into()).await;
    (phases[0], phases[1])
}

/// A confirm-mode channel on `conn` and `queue` declared afresh (quorum,
/// durable).
async fn fresh_queue(conn: &Connection, queue: &str) -> Channel {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare");
    channel
}

/// Publishes every line of `input` to `queue`: persistent, confirmed, at
/// most 512 unconfirmed. Seconds.
async fn publish_lines(channel: &Channel, queue: &str, input: &Path) -> f64 {
    let started = Instant::now();
    let reader = BufReader::with_capacity(64 * 1024, std::fs::File::open(input).expect("input"));
    let mut window = VecDeque::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.expect("read input");
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(n.to_string().into());
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                line.as_bytes(),
                properties,
            )
            .await
            .expect("publish");
        window.push_back(confirm);
        if window.len() >= 512 {
            let confirmed = window.pop_front().unwrap().await.expect("confirm");
            assert!(confirmed.is_ack());
        }
    }
    for confirm in window {
        assert!(confirm.await.expect("confirm").is_ack());
    }
    started.elapsed().as_secs_f64()
}

/// Counts the lines of a growing file, reading each byte once.
struct LineCount {
    path: PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCount {
    fn new(path: PathBuf) -> LineCount {
        LineCount {
            path,
            offset: 0,
            lines: 0,
        }
    }

    fn count(&mut self) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.lines;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.lines;
        }
        let mut buffer = vec![0u8; 1 << 20];
        while let Ok(read) = file.read(&mut buffer) {
            if read == 0 {
                break;
            }
            self.offset += read as u64;
            self.lines += buffer[..read].iter().filter(|b| **b == b'\n').count() as u64;
        }
        self.lines
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print_row(row: &Row) {
    let n = row.lines as f64;
    let alone = match &row.alone {
        Some(a) => format!(
            "bare client {:.0} msgs/s, warren send {:.0} msgs/s ({:.2}x bare, peak RSS {} MiB); \
             sink alone {:.0} inputs/s; ",
            n / a.bare,
            n / a.send,
            a.bare / a.send,
            mib(a.send_rss),
            n / a.work,
        ),
        None => String::new(),
    };
    let overlap = match &row.alone {
        Some(a) => format!(
            ", {:.2}x the longer of sending alone ({:.1} s) and working alone ({:.1} s); \
             the bare client publishing while its sink works {:.1} s, {:.2}x the longer of \
             the two alone (its sink alone {:.1} s)",
            row.run_results / a.send.max(a.work),
            a.send,
            a.work,
            a.bare_together,
            a.bare_overlap(),
            a.bare_work,
        ),
        None => String::new(),
    };
    println!(
        "{:>9} lines: {alone}warren run {:.0} inputs/s to the last result ({:.1} s; {:.1} s to exit){overlap}; \
         peak RSS MiB: run {}, sink worker {}; a sink worker started on {} results in {:.2} s",
        row.lines,
        n / row.run_results,
        row.run_results,
        row.run,
        mib(row.run_rss),
        mib(row.sink_rss),
        row.lines,
        row.sink_start,
    );
}

fn summary(rows: &[Row]) {
    println!();
    println!(
        "{:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "lines",
        "bare/s",
        "send/s",
        "vs bare",
        "run in/s",
        "run/max",
        "bare/max",
        "send MiB",
        "run MiB",
        "sink MiB",
        "exit s",
        "sink up s"
    );
    for row in rows {
        let n = row.lines as f64;
        let (bare, send, vs, over, bare_over, send_mib) = match &row.alone {
            Some(a) => (
                format!("{:.0}", n / a.bare),
                format!("{:.0}", n / a.send),
                format!("{:.2}", a.bare / a.send),
                format!("{:.2}", row.run_results / a.send.max(a.work)),
                format!("{:.2}", a.bare_overlap()),
                mib(a.send_rss),
            ),
            None => Default::default(),
        };
        let dash = |text: String| if text.is_empty() { "-".into() } else { text };
        println!(
            "{:>10} {:>9} {:>9} {:>7} {:>9.0} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8.1} {:>9.2}",
            row.lines,
            dash(bare),
            dash(send),
            dash(vs),
            n / row.run_results,
            dash(over),
            dash(bare_over),
            dash(send_mib),
            mib(row.run_rss),
            mib(row.sink_rss),
            row.run,
            row.sink_start,
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let rate = |row: &Row| row.lines as f64 / row.run_results;
        println!(
            "warren run inputs/s at {} lines: {:.2}x the rate at {} lines",
            last.lines,
            rate(last) / rate(first),
            first.lines
        );
    }
}
