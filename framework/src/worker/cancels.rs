//! The cancelled jobs a worker knows of (DESIGN.md, *Jobs*: cancel). A
//! cancel is one message on the pipeline's cancel stream
//! ([`crate::names::cancel_stream`], kept for `jobs.keep`); every session of a
//! tracked pipeline's worker reads it from its start, and starts consuming
//! its stages only once it has read up to a marker it wrote, so that a
//! worker started after a cancel still knows it (`control_stream.rs`).
//! Later cancels reach the reader as the broker pushes them (well within a
//! second).
//!
//! [`Cancels`] is what the stages ask: a delivery of a cancelled job is
//! acknowledged without being handled, and a handling that runs when its
//! job is cancelled has its context cancelled.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    control_stream::Apply,
    jobs::{Event, What},
    message,
};

/// The cancelled jobs of a pipeline, and the handlings running for jobs.
#[derive(Debug)]
pub(crate) struct Cancels {
    keep_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Cancelled jobs, with when.
    jobs: HashMap<String, u64>,
    /// Handlings running, by job: a key and the context's token.
    running: HashMap<String, Vec<(u64, CancellationToken)>>,
    next: u64,
}

/// A handling's registration: its context is cancelled if its job is;
/// dropped when the handling ends.
pub(crate) struct Watch {
    cancels: Arc<Cancels>,
    job: String,
    key: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.cancels.state.lock().expect("cancels");
        if let Some(list) = state.running.get_mut(&self.job) {
            list.retain(|(key, _)| *key != self.key);
            if list.is_empty() {
                state.running.remove(&self.job);
            }
        }
    }
}

impl Cancels {
    /// Cancels remembered for `keep` (`jobs.keep`).
    pub fn new(keep: Duration) -> Cancels {
        Cancels {
            keep_ms: keep.as_millis() as u64,
            state: Mutex::default(),
        }
    }

    /// Whether `job` was cancelled.
    pub fn is_cancelled(&self, job: &str) -> bool {
        self.state.lock().expect("cancels").jobs.contains_key(job)
    }

    /// Notes that `job` was cancelled at `at_ms` (unless that is older than
    /// `jobs.keep`), and cancels its running handlings.
    pub fn cancel(&self, job: &str, at_ms: u64) {
        let now = message::epoch_ms();
        let mut state = self.state.lock().expect("cancels");
        state
            .jobs
            .retain(|_, at| now.saturating_sub(*at) <= self.keep_ms);
        if now.saturating_sub(at_ms) > self.keep_ms {
            return;
        }
        if state.jobs.insert(job.to_string(), at_ms).is_none() {
            info!(%job, "job cancelled: its messages are acknowledged without being handled");
        }
        for (_, token) in state.running.get(job).into_iter().flatten() {
            token.cancel();
        }
    }

    /// Registers a handling of `job` whose context stops with `token`; it
    /// is cancelled at once when the job already is.
    pub fn watch(self: &Arc<Self>, job: &str, token: CancellationToken) -> Watch {
        let mut state = self.state.lock().expect("cancels");
        if state.jobs.contains_key(job) {
            token.cancel();
        }
        state.next += 1;
        let key = state.next;
        state
            .running
            .entry(job.to_string())
            .or_default()
            .push((key, token));
        Watch {
            cancels: self.clone(),
            job: job.to_string(),
            key,
        }
    }
}

/// What a message of the cancel stream does: a `cancelled` event notes its
/// job (see `control_stream.rs` for how the stream is read).
pub(crate) fn apply(cancels: Arc<Cancels>) -> Apply {
    Arc::new(move |body: &[u8]| {
        if let Ok(event) = Event::decode(body)
            && event.what == What::Cancelled
        {
            cancels.cancel(&event.job, event.at_ms);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_stops_the_running_handlings_of_its_job_and_later_ones() {
        let cancels = Arc::new(Cancels::new(Duration::from_secs(3600)));
        let mine = CancellationToken::new();
        let other = CancellationToken::new();
        let _a = cancels.watch("j", mine.clone());
        let _b = cancels.watch("k", other.clone());
        assert!(!cancels.is_cancelled("j"));
        cancels.cancel("j", message::epoch_ms());
        assert!(cancels.is_cancelled("j") && !cancels.is_cancelled("k"));
        assert!(mine.is_cancelled() && !other.is_cancelled());
        let late = CancellationToken::new();
        let watch = cancels.watch("j", late.clone());
        assert!(late.is_cancelled(), "a handling started after the cancel");
        drop(watch);
        drop(_a);
        assert!(!cancels.state.lock().unwrap().running.contains_key("j"));
        // A cancel older than jobs.keep is not remembered.
        cancels.cancel("old", 0);
        assert!(!cancels.is_cancelled("old"));
    }
}
