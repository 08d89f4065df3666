//! warren on a three-node RabbitMQ cluster that the test starts from the
//! installed `rabbitmq-server` (`tests/support/cluster.sh`: its own node
//! names, ports 5701-5703, data, logs and Erlang cookie; the broker on 5672
//! is never touched), and removes after. Every warren process gets the
//! three nodes' URLs. Scenarios, one after another, each checked like the
//! fault suite (nothing lost, nothing written twice at the sink):
//!
//! - `stop`: fanout3 on quorum queues while the node most workers are
//!   connected to is stopped (`rabbitmqctl stop_app`), then started again;
//! - `kill`: the same with SIGKILL of that node's `beam.smp`;
//! - `stream`: a job-tracked pipeline while the node that leads its job
//!   stream is stopped: nothing is charged an attempt or dead-lettered
//!   because the stream was away;
//! - `cut`: a second worker box, whose connections go through 127.0.0.2,
//!   is cut off by iptables (its packets dropped, no reset) for 40 s: the
//!   other box takes over its messages, and after healing the cut box
//!   consumes again, with the same worker processes;
//! - `rolling`: the three nodes restarted one by one under load.
//!
//! ```sh
//! cargo test -p warren-command --test cluster -- --nocapture
//! WARREN_CLUSTER=stop,cut cargo test -p warren-command --test cluster
//! ```

mod common;
#[allow(dead_code)]
#[path = "faults/harness.rs"]
mod harness;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use harness::*;

/// The scenarios, in the order they run.
const SCENARIOS: &[&str] = &["stop", "kill", "stream", "cut", "rolling"];

/// The first node's AMQP port; node i listens on `BASE + i`.
const BASE: u16 = 5701;

/// The three-node cluster, and what the scenarios ask of it.
type Cluster = OwnBroker;

trait Nodes {
    fn beam_pid(&self, node: usize) -> u32;
    fn running(&self, via: usize) -> usize;
    fn wait_all_running(&self, skip: usize);
    fn worker_connections(&self, via: usize, pipeline: &str) -> [usize; 3];
}

impl Nodes for Cluster {
    /// The operating system pid of node `node`.
    fn beam_pid(&self, node: usize) -> u32 {
        let text = self.ctl(node, &["eval", "list_to_integer(os:getpid())."]);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid from node {}: {text}", node + 1))
    }

    /// Nodes running, as node `via` sees them.
    fn running(&self, via: usize) -> usize {
        let text = self.ctl(via, &["cluster_status", "--formatter", "json"]);
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// Waits until every node runs, as the nodes other than `skip` see it.
    fn wait_all_running(&self, skip: usize) {
        let via = (skip + 1) % 3;
        let started = Instant::now();
        while self.running(via) < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "node {} did not rejoin",
                skip + 1
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Connections of `pipeline`'s workers per node.
    fn worker_connections(&self, via: usize, pipeline: &str) -> [usize; 3] {
        let text = self.ctl(
            via,
            &[
                "list_connections",
                "port",
                "client_properties",
                "-q",
                "--no-table-headers",
            ],
        );
        let mut counts = [0; 3];
        for line in text.lines() {
            if !line.contains(&format!("warren worker {pipeline}")) {
                continue;
            }
            // The port the connection came in on names the node.
            let port: Option<u16> = line.split_whitespace().next().and_then(|p| p.parse().ok());
            if let Some(node) = port.and_then(|p| p.checked_sub(BASE)).filter(|n| *n < 3) {
                counts[usize::from(node)] += 1;
            }
        }
        counts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_nothing_when_a_node_or_a_box_goes() {
    let cluster = OwnBroker::start("wc", BASE, 3);
    use_broker(&cluster.urls("127.0.0.1"), &cluster.management());
    let cluster = &cluster;
    let rows = run_scenarios("WARREN_CLUSTER", SCENARIOS, |scenario| async move {
        match scenario {
            "stop" => lose_a_node(cluster, false).await,
            "kill" => lose_a_node(cluster, true).await,
            "stream" => lose_the_job_stream_leader(cluster).await,
            "cut" => cut_a_box(cluster).await,
            "rolling" => rolling_restart(cluster).await,
            other => unreachable!("scenario {other}"),
        }
    })
    .await;
    assert_all_ok(&rows);
}

/// Seconds each worker took to consume again after losing its node, from
/// the log.
fn resume_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("reconnected after ").nth(1)?;
            rest.split('s').next()?.parse().ok()
        })
        .collect()
}

/// fanout3 while the node most workers are connected to is stopped (or
/// SIGKILLed) for 10 s.
async fn lose_a_node(cluster: &Cluster, kill: bool) -> Row {
    let scenario = if kill {
        "cluster: kill"
    } else {
        "cluster: stop"
    };
    let run = fanout3_held(if kill { "ckill" } else { "cstop" }, 1500, 300).await;
    let started = Instant::now();
    while run.progress() < 500 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = cluster.worker_connections(0, &run.pipeline.name);
    let node = (0..3).max_by_key(|i| counts[*i]).unwrap();
    let at = run.progress();
    if kill {
        let pid = cluster.beam_pid(node);
        signal(pid, "KILL");
    } else {
        cluster.ctl(node, &["stop_app"]);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    if kill {
        cluster.start_node(node);
    } else {
        cluster.ctl(node, &["start_app"]);
    }
    cluster.wait_all_running(node);
    run.release();
    let done = run.until_done(Duration::from_secs(300), |_| {}).await;
    let resumed = resume_times(&run.log());
    eprintln!(
        "{scenario}: worker connections per node {counts:?}; node {} lost at {at} of {} records; workers resumed after {resumed:?} s",
        node + 1,
        run.expected.len()
    );
    let fault = format!(
        "{} node {} of 3 ({} of the workers' {} connections) at {at} of {} records, back 10 s later",
        if kill {
            "SIGKILL of the beam.smp of"
        } else {
            "rabbitmqctl stop_app on"
        },
        node + 1,
        counts[node],
        counts.iter().sum::<usize>(),
        run.expected.len()
    );
    finish(run, scenario, fault, done, &[at], true).await
}

/// [`finish_with_faults`] for faults at `at`; and a worker must say it
/// reconnected, when `resumes`.
async fn finish(
    run: Run,
    scenario: &'static str,
    fault: String,
    done: bool,
    at: &[usize],
    resumes: bool,
) -> Row {
    let reconnected = !resume_times(&run.log()).is_empty();
    let mut row = finish_with_faults(run, scenario, fault, done, at, at.len()).await;
    if resumes && !reconnected {
        row.fail("no worker says it reconnected");
    }
    row
}

/// Drops the packets between 127.0.0.2 and the nodes while it lives (no
/// reset: the peers only notice through missing heartbeats).
struct Cut;

const CUT_RULES: [&[&str]; 2] = [
    &[
        "-d",
        "127.0.0.2",
        "-p",
        "tcp",
        "--dport",
        "5701:5703",
        "-j",
        "DROP",
    ],
    &[
        "-s",
        "127.0.0.2",
        "-p",
        "tcp",
        "--sport",
        "5701:5703",
        "-j",
        "DROP",
    ],
];

impl Cut {
    fn start() -> Cut {
        for rule in CUT_RULES {
            let status = Command::new("iptables")
                .args(["-I", "INPUT"])
                .args(rule)
                .status()
                .expect("iptables (Debian: iptables; .ci/test installs it)");
            assert!(status.success(), "iptables -I INPUT {rule:?}");
        }
        Cut
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for rule in CUT_RULES {
            let _ = Command::new("iptables")
                .args(["-D", "INPUT"])
                .args(rule)
                .status();
        }
    }
}

/// Seconds since midnight (UTC) now.
fn seconds_of_day() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    now % 86_400.0
}

/// Seconds since midnight (UTC) of a log line (`2026-12-02T08:13:57.350123Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let time = line.get(11..26)?;
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.trim_end_matches('Z').parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// The children of `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split_whitespace().nth(1) == Some(&parent.to_string()) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

/// `step` (the test worker, `workers` processes of 4 handlers, each
/// message taking 50 ms) -> sink, with `messages` messages sent: a run
/// whose length does not depend on how fast the cluster is.
async fn paced(prefix: &str, messages: u64, workers: u32) -> Run {
    let mut run = paced_declared(prefix, messages, workers, "").await;
    run.supervise();
    send_paced(&run, messages).await;
    run
}

/// The pipeline of [`paced`] (with `extra` at its top level), declared but
/// not yet supervised nor sent.
async fn paced_declared(prefix: &str, messages: u64, workers: u32, extra: &str) -> Run {
    let yaml = format!(
        "
pipeline: {{name}}
{extra}
defaults:
  prefetch: 8
  concurrency: 4
  timeout: 10s
  retry: {{ attempts: 5, backoff: [1s] }}
stages:
  step:
    command: [{worker}, step]
    outputs: [sink]
    scale: {{ min: {workers}, max: {workers} }}
  sink:
    sink: {{ path: {{sink}} }}
",
        worker = example_bin("test-worker").display()
    );
    let mut run = Run::declared(prefix, &yaml, None, |line| {
        Some(line["n"].as_u64()?.to_string())
    })
    .await;
    run.sent = messages;
    run.expected = (0..messages).map(|n| n.to_string()).collect();
    run
}

/// Sends the `messages` of a [`paced`] run.
async fn send_paced(run: &Run, messages: u64) {
    let bodies =
        (0..messages).map(|n| (format!("m{n}"), format!("{{\"n\": {n}, \"sleep_ms\": 50}}")));
    send_all(&run.pipeline, "step", bodies).await;
}

/// Two boxes share a stage; the second, connected through 127.0.0.2, is
/// cut off for 40 s.
async fn cut_a_box(cluster: &Cluster) -> Row {
    const MESSAGES: u64 = 12_000;
    let run = paced("ccut", MESSAGES, 1).await;
    let record_b = run.file.file("record-b.txt");
    let box_b = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", run.file.path.to_str().unwrap()])
            .args(["--stages", "step", "--poll", "500ms"])
            .env("AMQP_URL", cluster.urls("127.0.0.2"))
            // Its management API is out of reach too.
            .env("WARREN_MANAGEMENT_URL", "http://127.0.0.2:1")
            .env("WARREN_TEST_RECORD", &record_b)
            .stdout(Stdio::null())
            .stderr(log_file(&run.file.file("box-b.log")))
            .spawn()
            .expect("start the second box"),
    );

    let handled_by_b = || records(&record_b).len();
    let started = Instant::now();
    while handled_by_b() < 50 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let workers_b = children(box_b.0.id());
    let at = run.progress();
    let cut_at = seconds_of_day();
    let cut = Cut::start();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let halfway = run.progress();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before_heal = run.progress();
    drop(cut);
    let b_at_heal = handled_by_b();
    let done = run.until_done(Duration::from_secs(400), |_| {}).await;
    let b_after = handled_by_b();
    let workers_b_after = children(box_b.0.id());
    let log_b = std::fs::read_to_string(run.file.file("box-b.log")).unwrap_or_default();
    let resumed = resume_times(&log_b);
    // When box B's worker saw its connection go (missing heartbeats).
    let noticed = log_b
        .lines()
        .filter(|line| line.contains("lost the broker"))
        .find_map(log_time)
        .map(|at| at - cut_at);
    eprintln!(
        "cluster: cut: box B cut at {at} records, {halfway} after 20 s, {before_heal} at healing; B's worker noticed after {noticed:.1?} s; B handled {b_at_heal} before healing, {b_after} in all; B's workers resumed after {resumed:?} s"
    );
    let fault = format!(
        "the second box's packets dropped (iptables, no reset) for 40 s at {at} of {MESSAGES} records"
    );
    let mut row = finish(run, "cluster: cut", fault, done, &[at], false).await;
    if before_heal <= at {
        row.fail("the other box did not go on while the box was cut off");
    }
    if b_after <= b_at_heal {
        row.fail(format!(
            "the cut box handled nothing after healing:\n{}",
            log_b.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        ));
    }
    if workers_b.is_empty() || workers_b != workers_b_after {
        row.fail(format!(
            "the cut box's workers changed: {workers_b:?} before, {workers_b_after:?} after"
        ));
    }
    drop(box_b);
    row
}

/// Work while the nodes are restarted one after the other.
async fn rolling_restart(cluster: &Cluster) -> Row {
    let run = paced("croll", 12_000, 2).await;
    let started = Instant::now();
    while run.progress() < 500 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut at = Vec::new();
    for node in 0..3 {
        at.push(run.progress());
        cluster.ctl(node, &["stop_app"]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.ctl(node, &["start_app"]);
        cluster.wait_all_running(node);
        // Let the restarted node's queue members catch up.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let done = run.until_done(Duration::from_secs(300), |_| {}).await;
    let resumed = resume_times(&run.log());
    eprintln!(
        "cluster: rolling: nodes restarted at {at:?} records; workers resumed after {resumed:?} s"
    );
    let fault = format!(
        "nodes 1, 2, 3 restarted one by one (stop_app, 3 s, start_app) at {at:?} of {} records",
        run.expected.len()
    );
    finish(run, "cluster: rolling", fault, done, &at, true).await
}

/// A job-tracked pipeline (`jobs: { track: true }`) while the node that
/// leads its job stream is stopped for 15 s. The stage queues lead on
/// another node and the workers connect to the other two, so what goes away
/// is the stream alone: the handlings whose events it does not take go
/// back to their queue uncharged and the stage pauses until it answers.
/// Every message done, none charged an attempt (the test worker records
/// each handling's attempt), none dead-lettered.
async fn lose_the_job_stream_leader(cluster: &Cluster) -> Row {
    const MESSAGES: u64 = 3000;
    let mut run = paced_declared("cstream", MESSAGES, 2, "jobs: { track: true }").await;
    // Queues lead where they are declared (client-local): the stream stays
    // on node 1, where the run declared it; the rest moves to node 2.
    let topology = warren::Topology::plan(&run.pipeline);
    let node = |i: u16| format!("amqp://guest:guest@127.0.0.1:{}/%2f", BASE + i);
    let one = lapin::Connection::connect(&node(0), Default::default())
        .await
        .expect("node 1");
    let channel = one.create_channel().await.unwrap();
    for queue in &topology.queues {
        if queue.role != warren::topology::Role::JobStream {
            channel
                .queue_delete(queue.name.as_str().into(), Default::default())
                .await
                .unwrap();
        }
    }
    let _ = one.close(200, "".into()).await;
    let two = lapin::Connection::connect(&node(1), Default::default())
        .await
        .expect("node 2");
    topology.declare(&two).await.expect("declare on node 2");
    let _ = two.close(200, "".into()).await;
    let others = format!("{},{}", node(1), node(2));
    run.supervisor = Some(ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "supervise",
                run.file.path.to_str().unwrap(),
                "--poll",
                "500ms",
            ])
            .env("AMQP_URL", &others)
            .env(
                "WARREN_MANAGEMENT_URL",
                format!(
                    "http://127.0.0.1:{},http://127.0.0.1:{}",
                    BASE + 10_001,
                    BASE + 10_002
                ),
            )
            .env("WARREN_TEST_RECORD", run.file.file("record.txt"))
            .stdout(Stdio::null())
            .stderr(log_file(&run.file.file("supervisor.log")))
            .spawn()
            .expect("start warren supervise"),
    ));
    send_paced(&run, MESSAGES).await;
    let started = Instant::now();
    while run.progress() < 300 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = topology
        .queues
        .iter()
        .find(|q| q.role == warren::topology::Role::JobStream)
        .map(|q| q.name.to_string())
        .expect("a tracked pipeline has a job stream");
    let leader = |via: usize| {
        let listed = cluster.ctl(via, &["list_queues", "name", "leader", "-q"]);
        listed
            .lines()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(stream.as_str())).then(|| words.next().map(str::to_owned))
            })
            .flatten()
    };
    let leader_before = leader(0);
    let at = run.progress();
    cluster.ctl(0, &["stop_app"]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    cluster.ctl(0, &["start_app"]);
    cluster.wait_all_running(0);
    let leader_after = leader(1);
    let done = run.until_done(Duration::from_secs(300), |_| {}).await;
    let log = run.log();
    let pauses = log.matches("the job stream does not take events").count();
    let handled = records(&run.file.file("record.txt"));
    let charged: Vec<&(String, String, u32)> = handled.iter().filter(|r| r.2 != 1).collect();
    let again = handled.len() as u64 - MESSAGES.min(handled.len() as u64);
    eprintln!(
        "cluster: stream: node 1 (the stream's leader: {leader_before:?}, then {leader_after:?}) stopped at {at} of {MESSAGES} records; the stage paused {pauses} times for the stream; {} handlings for {MESSAGES} messages, {} charged an attempt",
        handled.len(),
        charged.len()
    );
    let fault = format!(
        "jobs tracked; rabbitmqctl stop_app on node 1 of 3, the job stream's leader (the workers on nodes 2 and 3), at {at} of {MESSAGES} records, back 15 s later: {pauses} pauses for the stream, {again} handlings given back uncharged and done again, {} charged",
        charged.len()
    );
    let mut row = finish(run, "cluster: stream", fault, done, &[at], false).await;
    if !charged.is_empty() {
        row.fail(format!(
            "{} handlings were charged an attempt: {:?}",
            charged.len(),
            &charged[..charged.len().min(5)]
        ));
    }
    // The stream went away when a stage paused for it, or when its leader
    // moved off the stopped node (a new leader elected quickly enough takes
    // the writes waiting for their confirms, and no stage pauses).
    let moved = leader_before.is_some() && leader_after.is_some() && leader_before != leader_after;
    if pauses == 0 && !moved {
        row.fail(format!(
            "no stage paused for the job stream and its leader did not move ({leader_before:?}, then {leader_after:?}): the stream never went away, the scenario proved nothing"
        ));
    }
    row
}
