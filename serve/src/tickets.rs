//! Tickets: `GET /v1/jobs/{id}[?wait=30s]` and `GET /v1/jobs?state=failed`
//! answered from this process's job store, which a follower task keeps
//! folding from the job stream (as `warren job` does, but all the time).
//! A waiting request wakes when a fold changed anything; nothing polls the
//! broker. The follower reconnects like a worker after any loss (broker
//! restart, node loss, closed connection, a stream deleted and declared
//! again) and says whether tickets are behind ([`behind`]), which
//! `/readyz` answers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren::{
    Pipeline,
    backoff::Backoff,
    jobs::{JobState, JobView},
};

use warren_ops::jobs::{
    store::{self, Store},
    tracker::Tracker,
};

/// Longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Time an unknown job gets to appear (its `sent` event may be on its way).
const UNKNOWN_GRACE: Duration = Duration::from_millis(500);

/// Time a fold waits for events before the next.
const TURN: Duration = Duration::from_millis(200);

/// A follower whose last turn is older than this is stuck: behind.
const STUCK: Duration = Duration::from_secs(10);

/// Where the follower stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Not reading the stream (starting, or since a loss), since then.
    Lost(Instant),
    /// Reading what the stream held when it attached, up to a marker.
    CatchingUp,
    /// Caught up; its last turn ended then.
    Following(Instant),
}

/// Why tickets are behind the job stream at `now`, if they are: not
/// reading it, reading what it held before, or a follower whose turns
/// stopped coming.
pub fn behind(follow: Follow, now: Instant) -> Option<String> {
    match follow {
        Follow::Lost(since) => Some(format!(
            "job tickets are behind: not reading the job stream for {}s",
            now.saturating_duration_since(since).as_secs()
        )),
        Follow::CatchingUp => {
            Some("job tickets are behind: reading what the job stream holds".into())
        }
        Follow::Following(last) if now.saturating_duration_since(last) > STUCK => Some(format!(
            "job tickets are behind: the job stream's follower has not turned for {}s",
            now.saturating_duration_since(last).as_secs()
        )),
        Follow::Following(_) => None,
    }
}

/// The job store and word of its changes.
#[derive(Clone)]
pub struct Tickets {
    store: Arc<Store>,
    keep_ms: u64,
    folds: watch::Receiver<u64>,
    follow: Arc<Mutex<Follow>>,
}

impl Tickets {
    /// Opens `.warren/{pipeline}.serve.redb` and starts following the job
    /// stream into it until `stop`.
    pub async fn start(pipeline: &Pipeline, stop: CancellationToken) -> anyhow::Result<Tickets> {
        let path = store::path(&pipeline.name, "serve");
        let store = Store::open(&path)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is held by another `warren serve` in this directory",
                    path.display()
                )
            })?;
        let tracker = Tracker::detached(pipeline, store);
        let shared = tracker.store();
        let (folded, folds) = watch::channel(0u64);
        let follow = Arc::new(Mutex::new(Follow::Lost(Instant::now())));
        tokio::spawn(run(tracker, folded, follow.clone(), stop));
        Ok(Tickets {
            store: shared,
            keep_ms: pipeline.jobs.keep.as_millis() as u64,
            folds,
            follow,
        })
    }

    /// Why this store cannot answer for `job`, if it cannot: it was open
    /// when the store found a gap (events the stream's retention dropped
    /// before they were read), so some of its events may be missing.
    pub fn gap(&self, job: &str) -> Result<Option<String>, String> {
        Ok(self.store.stale(job)?.then(|| {
            "this job store has a gap (job stream events dropped by its retention before they were read) that may hold events of this job: its state may be out of date".to_string()
        }))
    }

    /// Why the tickets are behind the job stream, if they are.
    pub fn behind(&self) -> Option<String> {
        behind(*self.follow.lock().expect("follow"), Instant::now())
    }

    /// The job as known now.
    pub fn view(&self, job: &str) -> Result<JobView, String> {
        let now = warren::message::epoch_ms();
        Ok(match self.store.get(job)? {
            Some(record) => record.view(job, now, self.keep_ms),
            None => JobView::unknown(job),
        })
    }

    /// The job as known now; one not known yet gets the follower's next
    /// folds (up to half a second) to arrive, so that a job accepted a
    /// moment ago is not answered `unknown`.
    pub async fn lookup(&self, job: &str) -> Result<JobView, String> {
        let deadline = Instant::now() + UNKNOWN_GRACE;
        let mut folds = self.folds.clone();
        loop {
            folds.borrow_and_update();
            let view = self.view(job)?;
            if view.state != JobState::Unknown || !next_fold(&mut folds, deadline).await {
                return Ok(view);
            }
        }
    }

    /// The job once done or failed, or as it is after `wait`; an unknown
    /// job at once (after [`Tickets::lookup`]'s grace).
    pub async fn wait(&self, job: &str, wait: Duration) -> Result<JobView, String> {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let mut folds = self.folds.clone();
        loop {
            folds.borrow_and_update();
            let view = self.lookup(job).await?;
            if view.state == JobState::Unknown || view.state.is_settled() {
                return Ok(view);
            }
            if !next_fold(&mut folds, deadline).await {
                return Ok(view);
            }
        }
    }

    /// The failed jobs that changed last, newest first.
    pub fn failed(&self, limit: usize) -> Result<Vec<JobView>, String> {
        self.store
            .failed(limit)?
            .iter()
            .map(|job| self.view(job))
            .collect()
    }

    /// The last tick recorded for each schedule.
    pub fn ticks(
        &self,
    ) -> Result<std::collections::BTreeMap<String, warren::schedule::Tick>, String> {
        self.store.ticks()
    }

    /// Jobs per state.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, String> {
        self.store.counts()
    }
}

/// Waits for the follower's next fold; false at `deadline`, or when the
/// follower stopped (nothing will change any more).
async fn next_fold(folds: &mut watch::Receiver<u64>, deadline: Instant) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, folds.changed()).await,
        Ok(Ok(()))
    )
}

/// The follower: attaches, catches up, then folds turn after turn until
/// `stop`; after any error it lets go and attaches again, with backoff.
async fn run(
    mut tracker: Tracker,
    folded: watch::Sender<u64>,
    follow: Arc<Mutex<Follow>>,
    stop: CancellationToken,
) {
    let set = |state| *follow.lock().expect("follow") = state;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut n = 0u64;
    let mut lost = false;
    while !stop.is_cancelled() {
        let turn = async {
            if !tracker.attached() {
                tracker.reconnect().await?;
                set(Follow::CatchingUp);
            }
            if *follow.lock().expect("follow") == Follow::CatchingUp {
                // Everything the stream held at attaching, before saying
                // ready: a new `serve` would answer `unknown` for jobs it
                // has not read yet.
                if tracker.catch_up_until(Instant::now() + TURN).await? {
                    set(Follow::Following(Instant::now()));
                }
                return Ok::<usize, warren::Error>(1);
            }
            let read = tracker.fold_some(Instant::now() + TURN).await?;
            set(Follow::Following(Instant::now()));
            Ok(read)
        };
        let turned = tokio::select! {
            _ = stop.cancelled() => break,
            turned = turn => turned,
        };
        match turned {
            Ok(read) => {
                if lost && matches!(*follow.lock().expect("follow"), Follow::Following(_)) {
                    info!("the job stream's follower caught up again; job answers are current");
                    lost = false;
                    backoff.reset();
                }
                if read > 0 {
                    n += 1;
                    folded.send_replace(n);
                }
            }
            Err(error) => {
                tracker.disconnect().await;
                if !matches!(*follow.lock().expect("follow"), Follow::Lost(_)) {
                    set(Follow::Lost(Instant::now()));
                }
                lost = true;
                let delay = backoff.next_delay();
                warn!(%error, "the job stream's follower lost the stream; job answers are behind until it reads again (next try in {delay:?})");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        if let Err(error) = tracker.prune().await {
            warn!(%error, "pruning the job store");
        }
    }
    tracker.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_behind_until_caught_up_and_while_lost_or_stuck() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(behind(Follow::Lost(start), at(0)).is_some());
        assert!(
            behind(Follow::Lost(start), at(42))
                .unwrap()
                .contains("for 42s")
        );
        assert!(behind(Follow::CatchingUp, at(1)).is_some());
        assert_eq!(behind(Follow::Following(at(5)), at(5)), None);
        assert_eq!(behind(Follow::Following(at(5)), at(15)), None);
        assert!(
            behind(Follow::Following(at(5)), at(16))
                .unwrap()
                .contains("not turned for 11s")
        );
    }
}
