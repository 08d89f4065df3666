//! How `warren run` knows that the jobs it sent are finished, on a tracked
//! pipeline: it keeps the ids of its jobs not settled yet, and folds the
//! job stream until none is left. Only unsettled jobs are kept, so memory
//! follows the backlog, not the input.

use std::collections::HashSet;

use tokio::time::Instant;
use warren::{Pipeline, jobs::JobState};

use super::{store::Store, tracker::Tracker};

/// The jobs of one run that are still going.
pub struct Settling {
    tracker: Tracker,
    keep_ms: u64,
    open: HashSet<String>,
    /// Jobs that settled as failed, in the order seen.
    failed: Vec<String>,
    /// Jobs that settled as done.
    done: u64,
}

impl Settling {
    /// Follows `pipeline`'s job stream into `store`.
    pub async fn open(pipeline: &Pipeline, store: Store) -> Result<Settling, warren::Error> {
        let mut tracker = Tracker::open(pipeline, store).await?;
        tracker.prune().await?;
        tracker.take_changed();
        Ok(Settling {
            tracker,
            keep_ms: pipeline.jobs.keep.as_millis() as u64,
            open: HashSet::new(),
            failed: Vec::new(),
            done: 0,
        })
    }

    /// Notes a job the run sent.
    pub fn sent(&mut self, job: String) {
        self.open.insert(job);
    }

    /// Jobs not settled yet.
    pub fn going(&self) -> usize {
        self.open.len()
    }

    /// Jobs settled as done.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Jobs settled as failed.
    pub fn failed(&self) -> &[String] {
        &self.failed
    }

    /// Folds what the stream holds until `until`, then settles the jobs
    /// whose records say so. The first call looks at every open job (some
    /// may have settled before the tracker started).
    pub async fn follow(&mut self, until: Instant, everyone: bool) -> Result<(), warren::Error> {
        self.tracker.fold_some(until).await?;
        let mut look = self.tracker.take_changed();
        look.retain(|job, _| self.open.contains(job));
        if everyone {
            for job in &self.open {
                if !look.contains_key(job)
                    && let Some(record) = self.tracker.record(job)?
                {
                    look.insert(job.clone(), record);
                }
            }
        }
        let now = warren::message::epoch_ms();
        for (job, record) in look {
            match record.state(now, self.keep_ms) {
                JobState::Done => self.done += 1,
                JobState::Failed => self.failed.push(job.clone()),
                // Cancelled on purpose: settled, neither done nor failed.
                JobState::Cancelled => {}
                _ => continue,
            }
            self.open.remove(&job);
        }
        Ok(())
    }

    /// Closes the tracker's connection.
    pub async fn close(self) {
        self.tracker.close().await;
    }
}
