//! What a worker handles right now: each handling registers itself while
//! its handler runs (a [`Started`] guard, which also unregisters a
//! handling whose task is aborted), so that the worker's reports can say
//! which messages it holds and since when (`warren status`'s supervisors
//! keep them; the dashboard's Busy page shows them).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

/// Running handlings a report holds per stage at most: the longest
/// running.
pub const REPORTED: usize = 20;

/// A handling running now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The message id.
    pub id: String,
    /// Its job.
    pub job: String,
    /// Its attempt.
    pub attempt: u32,
    /// When its handler started (ms since the Unix epoch).
    pub started_ms: u64,
}

/// The handlings of one stage running now in this process, in the order
/// they started.
#[derive(Debug, Default)]
pub(crate) struct Handlings {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Running>>,
}

impl Handlings {
    /// Registers a handling until the guard is dropped.
    pub fn start(&self, id: &str, job: &str, attempt: u32) -> Started<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let running = Running {
            id: id.to_string(),
            job: job.to_string(),
            attempt,
            started_ms: crate::message::epoch_ms(),
        };
        self.running
            .lock()
            .expect("running handlings")
            .insert(key, running);
        Started {
            handlings: self,
            key,
        }
    }

    /// The [`REPORTED`] longest running, longest first.
    pub fn longest(&self) -> Vec<Running> {
        let running = self.running.lock().expect("running handlings");
        running.values().take(REPORTED).cloned().collect()
    }
}

/// A registered handling; dropping it unregisters it.
pub(crate) struct Started<'a> {
    handlings: &'a Handlings,
    key: u64,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.handlings
            .running
            .lock()
            .expect("running handlings")
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handling_is_listed_while_it_runs_longest_first() {
        let handlings = Handlings::default();
        let first = handlings.start("a", "j", 1);
        let second = handlings.start("b", "j", 2);
        let ids = |h: &Handlings| h.longest().into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&handlings), ["a", "b"]);
        drop(first);
        assert_eq!(ids(&handlings), ["b"]);
        assert_eq!(handlings.longest()[0].attempt, 2);
        drop(second);
        assert!(handlings.longest().is_empty());
        let many: Vec<Started<'_>> = (0..30)
            .map(|n| handlings.start(&n.to_string(), "j", 1))
            .collect();
        assert_eq!(handlings.longest().len(), REPORTED);
        assert_eq!(handlings.longest()[0].id, "0");
        drop(many);
    }
}
