//! Tickets: `GET /v1/jobs/{id}[?wait=30s]` and `GET /v1/jobs?state=failed`
//! answered from this process's job store, which a follower task keeps
//! folding from the job stream (as `warren job` does, but all the time).
//! A waiting request wakes when a fold changed anything; nothing polls the
//! broker.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use warren::{
    Pipeline,
    jobs::{JobState, JobView},
};

use crate::jobs::{
    store::{self, Store},
    tracker::Tracker,
};

/// Longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Time an unknown job gets to appear (its `sent` event may be on its way).
const UNKNOWN_GRACE: Duration = Duration::from_millis(500);

/// Time a fold waits for events before the next.
const TURN: Duration = Duration::from_millis(200);

/// The job store and word of its changes.
#[derive(Clone)]
pub struct Tickets {
    store: Arc<Store>,
    keep_ms: u64,
    folds: watch::Receiver<u64>,
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
        let mut tracker = Tracker::open(pipeline, store).await?;
        let shared = tracker.store();
        let (folded, folds) = watch::channel(0u64);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                match tracker.fold_some(Instant::now() + TURN).await {
                    Ok(0) => {}
                    Ok(_) => {
                        n += 1;
                        folded.send_replace(n);
                    }
                    Err(error) => {
                        // The job stream is gone (the broker restarted):
                        // answers stay as they were until serve restarts.
                        warn!(%error, "the job stream's follower stopped; job answers no longer change");
                        return;
                    }
                }
                if let Err(error) = tracker.prune() {
                    warn!(%error, "pruning the job store");
                }
            }
            tracker.close().await;
        });
        Ok(Tickets {
            store: shared,
            keep_ms: pipeline.jobs.keep.as_millis() as u64,
            folds,
        })
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
