//! What a worker tells its supervisor: one JSON line a second on the unix
//! socket named by `WARREN_SUPERVISOR_SOCKET` (set by `warren supervise`).
//! The supervisor uses it to never stop a worker that holds messages, not
//! to scale a stage whose calls fail, and for `warren status` and the
//! summary of `warren run`. Public because the `warren` binary reads it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    rate::Limiter,
    running::{Handlings, Running},
    timings::{Histogram, Recording},
};

/// The environment variable with the supervisor's socket path.
pub const SOCKET_ENV: &str = "WARREN_SUPERVISOR_SOCKET";

/// The environment variable with a new worker's first share of its stage's
/// rate limit (the supervisor's replies adjust it).
pub const RATE_SHARE_ENV: &str = "WARREN_RATE_SHARE";

/// One report line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's process id.
    pub pid: u32,
    /// Counters per stage served.
    pub stages: BTreeMap<String, StageCounts>,
    /// The handlings running now, per stage (the longest running,
    /// [`crate::running::REPORTED`] at most).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub running: BTreeMap<String, Vec<Running>>,
}

/// Counters of one stage in one worker process, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounts {
    /// Messages being handled now.
    pub in_flight: u64,
    /// Messages done (acknowledged after success).
    pub done: u64,
    /// Messages sent to a retry queue.
    pub retried: u64,
    /// Messages sent to the dead-letter queue.
    pub dead: u64,
    /// Messages acknowledged without being handled: their job was
    /// cancelled.
    #[serde(default)]
    pub cancelled: u64,
    /// The worker is connected and consuming.
    #[serde(default)]
    pub consuming: bool,
    /// The stage's circuit breaker is open (its calls fail at a high rate):
    /// consumption is paused or probing.
    #[serde(default)]
    pub breaker_open: bool,
    /// The broker blocks this worker's publishing (a memory or disk alarm).
    #[serde(default)]
    pub blocked: bool,
    /// An operator paused the stage (`warren pause`): it takes no message.
    #[serde(default)]
    pub paused: bool,
    /// How long handlings took.
    #[serde(default)]
    pub handle: Histogram,
    /// How long messages waited in the queue before their handling
    /// (from their timestamp, whole seconds).
    #[serde(default)]
    pub queue_wait: Histogram,
    /// When the worker took these counts (milliseconds since the Unix
    /// epoch; 0 from a worker that does not say): `warren drain` and
    /// `warren run` know from it that `in_flight` is newer than a moment.
    #[serde(default)]
    pub at_ms: u64,
}

impl StageCounts {
    /// Adds the monotonic totals of `other` (what finished workers did).
    pub fn add_totals(&mut self, other: &StageCounts) {
        self.done += other.done;
        self.retried += other.retried;
        self.dead += other.dead;
        self.cancelled += other.cancelled;
        self.handle.add(&other.handle);
        self.queue_wait.add(&other.queue_wait);
    }
}

/// Live counters of one stage, updated by the handlers.
#[derive(Debug, Default)]
pub(crate) struct StageStats {
    pub in_flight: AtomicU64,
    pub done: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub cancelled: AtomicU64,
    pub consuming: AtomicBool,
    pub breaker_open: AtomicBool,
    pub blocked: AtomicBool,
    pub paused: AtomicBool,
    pub handle: Recording,
    pub queue_wait: Recording,
    pub running: Handlings,
}

impl StageStats {
    pub fn set_paused(&self, open: bool) {
        self.breaker_open.store(open, Ordering::Relaxed);
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    pub fn set_held(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StageCounts {
        StageCounts {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            consuming: self.consuming.load(Ordering::Relaxed),
            breaker_open: self.breaker_open.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            paused: self.paused.load(Ordering::Relaxed),
            handle: self.handle.snapshot(),
            queue_wait: self.queue_wait.snapshot(),
            at_ms: crate::message::epoch_ms(),
        }
    }
}

/// What the supervisor answers to a report: this worker's share of each
/// stage's rate limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Stage name to share (0 < share <= 1).
    pub shares: BTreeMap<String, f64>,
}

/// A served stage as the reporter sees it.
pub(crate) struct Reported {
    pub name: String,
    pub stats: Arc<StageStats>,
    pub limiter: Option<Arc<Limiter>>,
}

/// Sends a report every second while the process lives (reconnecting
/// quietly if the supervisor's socket goes away), and applies the rate
/// shares the supervisor answers with.
pub(crate) async fn run(path: String, stages: Arc<Vec<Reported>>) {
    let pid = std::process::id();
    loop {
        if let Ok(socket) = tokio::net::UnixStream::connect(&path).await {
            let (read, mut write) = socket.into_split();
            let replies = tokio::spawn(apply_replies(read, stages.clone()));
            loop {
                let mut line =
                    serde_json::to_vec(&snapshot(pid, &stages)).expect("a report encodes");
                line.push(b'\n');
                if write.write_all(&line).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            replies.abort();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn snapshot(pid: u32, stages: &[Reported]) -> WorkerReport {
    WorkerReport {
        pid,
        stages: stages
            .iter()
            .map(|s| (s.name.clone(), s.stats.snapshot()))
            .collect(),
        running: stages
            .iter()
            .map(|s| (s.name.clone(), s.stats.running.longest()))
            .filter(|(_, running)| !running.is_empty())
            .collect(),
    }
}

async fn apply_replies(read: tokio::net::unix::OwnedReadHalf, stages: Arc<Vec<Reported>>) {
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(reply) = serde_json::from_str::<Reply>(&line) else {
            continue;
        };
        for stage in stages.iter() {
            if let (Some(limiter), Some(share)) = (&stage.limiter, reply.shares.get(&stage.name)) {
                limiter.set_share(*share);
            }
        }
    }
}

/// Sends one last report (at exit), so the supervisor's totals include the
/// final second of work.
pub(crate) async fn send_final(path: &str, stages: &[Reported]) {
    let report = snapshot(std::process::id(), stages);
    if let Ok(mut socket) = tokio::net::UnixStream::connect(path).await {
        let mut line = serde_json::to_vec(&report).expect("a report encodes");
        line.push(b'\n');
        let _ = socket.write_all(&line).await;
        let _ = socket.shutdown().await;
    }
}
