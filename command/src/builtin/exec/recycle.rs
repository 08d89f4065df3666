//! Recycling of an `exec` stage's program (`max_messages`, `max_memory`,
//! DESIGN.md *exec stages*): when the running program was given that many
//! messages, or its resident size is above the limit, a fresh one takes the
//! next messages while the old one, its stdin closed, finishes what it
//! holds and exits (the drain path). No message fails for it: the old
//! program's answers reach their handlings as usual. Only if the retiring
//! program dies, or lets a message pass its deadline, before it answered
//! everything, are its unfinished messages failed, as on any crash.
//!
//! [`due`] decides; [`Retiring`] is an old program while it finishes.

use std::{
    collections::{HashSet, VecDeque},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;
use tracing::{info, warn};
use warren::pipeline::Recycle;

use super::{
    child::{Running, Unfinished},
    culprit::Stopped,
};

/// How often the running program's resident size is read.
pub const MEMORY_EVERY: Duration = Duration::from_millis(200);

/// How long a retiring program that answered everything may take to exit
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// How long the answers of a retiring program that exited are awaited
/// (its last lines may still be in the pipe) before its unfinished
/// messages fail.
const LAST_ANSWERS: Duration = Duration::from_secs(1);

/// Why a program is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It was given `max_messages` messages.
    Count(u64),
    /// Its resident size (bytes) is above `max_memory`.
    Memory(u64),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Count(n) => write!(f, "it was given {n} messages (max_messages)"),
            Reason::Memory(rss) => write!(
                f,
                "its resident size is {:.1} MiB, above max_memory",
                *rss as f64 / (1024.0 * 1024.0)
            ),
        }
    }
}

/// Whether a program given `given` messages, whose resident size is `rss`
/// (when it was read), is to be replaced. One that was given nothing is
/// kept whatever its size: a fresh one would be no smaller.
pub fn due(limits: &Recycle, given: u64, rss: Option<u64>) -> Option<Reason> {
    if limits.max_messages.is_some_and(|max| given >= max) {
        return Some(Reason::Count(given));
    }
    match (limits.max_memory, rss) {
        (Some(max), Some(rss)) if given > 0 && rss > max => Some(Reason::Memory(rss)),
        _ => None,
    }
}

/// The resident size of process `pid` in bytes (`VmRSS` of
/// `/proc/PID/status`), or `None` where it cannot be read.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss(&status)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => number.checked_mul(1024),
        _ => None,
    }
}

/// A replaced program while it finishes what it holds.
pub struct Retiring {
    pub pid: u32,
    stage: String,
    /// Its messages not answered yet.
    pub pending: Unfinished,
    /// Its last stderr lines.
    tail: Arc<Mutex<VecDeque<String>>>,
    running: Running,
    /// When (and how) it ended or went wrong.
    ended: Option<(Instant, String)>,
    /// Since when it holds nothing.
    idle_since: Option<Instant>,
}

/// What became of a retiring program at a look.
pub enum Look {
    /// It still works, or may still answer.
    Working,
    /// It answered everything and is gone (or was killed, idle).
    Gone,
    /// It must be stopped, its unfinished messages failed, for this reason.
    Failed(String),
}

impl Retiring {
    /// Closes the program's stdin: it finishes what it holds and exits.
    pub fn new(
        mut running: Running,
        pending: Unfinished,
        tail: Arc<Mutex<VecDeque<String>>>,
        stage: &str,
    ) -> Retiring {
        running.stdin = None;
        Retiring {
            pid: running.pid,
            tail,
            stage: stage.to_string(),
            pending,
            running,
            ended: None,
            idle_since: None,
        }
    }

    /// Whether it holds message `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.pending.lock().expect("pending").contains_key(id)
    }

    /// Looks at it (every tick): whether it exited or went wrong (its
    /// exit, a bad line: its last answers are then awaited a moment), and
    /// what it still holds.
    pub fn look(&mut self, now: Instant) -> Look {
        if self.ended.is_none()
            && let Ok(reason) = self.running.trouble.try_recv()
        {
            self.ended = Some((now, reason));
        }
        let (empty, late) = {
            let pending = self.pending.lock().expect("pending");
            let late = pending
                .iter()
                .find(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| id.clone());
            (pending.is_empty(), late)
        };
        if empty {
            let idle = *self.idle_since.get_or_insert(now);
            if self.ended.is_some() {
                return Look::Gone;
            }
            if now.duration_since(idle) > EXIT_GRACE {
                warn!(stage = %self.stage, pid = self.pid, "the replaced program did not exit within {}s of its stdin closing; killing it", EXIT_GRACE.as_secs());
                return Look::Gone;
            }
            return Look::Working;
        }
        if let Some(id) = late {
            return Look::Failed(format!(
                "message `{id}` passed its deadline in the replaced program (pid {}): it was stopped",
                self.pid
            ));
        }
        match &self.ended {
            Some((at, reason)) if now.duration_since(*at) > LAST_ANSWERS => {
                Look::Failed(format!("the replaced program (pid {}): {reason}", self.pid))
            }
            _ => Look::Working,
        }
    }

    /// Stops it: its process group is killed and each unfinished message
    /// fails with `reason` and the program's last stderr lines, charged only
    /// if it was the one message held (`culprit`).
    pub fn fail(self, reason: &str) {
        self.running.group.kill();
        let last: Vec<String> = self.tail.lock().expect("tail").iter().cloned().collect();
        let full = if last.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}; its last lines: {}", last.join(" / "))
        };
        // Only the culprit pays, as for a crash of the running program.
        let held: HashSet<String> = self
            .pending
            .lock()
            .expect("pending")
            .drain()
            .map(|(id, _)| id)
            .collect();
        warn!(stage = %self.stage, unfinished = held.len(), "{full}");
        let stopped = Stopped { reason: full, held };
        let _ = self.running.crash.send(Some(Arc::new(stopped)));
    }

    /// It answered everything: its process group goes (anything it left
    /// running with it).
    pub fn gone(self) {
        info!(stage = %self.stage, pid = self.pid, "the replaced program finished its messages and exited");
        self.running.group.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_replaced_after_its_count_or_above_its_size() {
        let none = Recycle::default();
        assert_eq!(due(&none, 1_000_000, Some(u64::MAX)), None);
        let count = Recycle {
            max_messages: Some(10),
            max_memory: None,
        };
        assert_eq!(due(&count, 9, None), None);
        assert_eq!(due(&count, 10, None), Some(Reason::Count(10)));
        let size = Recycle {
            max_messages: None,
            max_memory: Some(1000),
        };
        assert_eq!(due(&size, 3, Some(1000)), None);
        assert_eq!(due(&size, 3, Some(1001)), Some(Reason::Memory(1001)));
        assert_eq!(due(&size, 3, None), None, "a size not read");
        assert_eq!(
            due(&size, 0, Some(5000)),
            None,
            "a fresh program is no smaller"
        );
    }

    #[test]
    fn the_resident_size_is_read_from_proc_status() {
        let status = "Name:\tphp\nVmPeak:\t  300000 kB\nVmRSS:\t   20480 kB\nThreads:\t1\n";
        assert_eq!(vm_rss(status), Some(20480 * 1024));
        assert_eq!(vm_rss("Name:\tzombie\n"), None);
        assert!(resident_bytes(std::process::id()).is_some_and(|rss| rss > 0));
    }

    #[test]
    fn reasons_say_what_was_reached() {
        assert!(Reason::Count(10).to_string().contains("10 messages"));
        assert!(
            Reason::Memory(64 * 1024 * 1024)
                .to_string()
                .contains("64.0 MiB")
        );
    }
}
