//! How long stages take, as fixed-bucket histograms: a worker counts each
//! handling's duration and each message's wait in the queue, reports the
//! totals to its supervisor with its counters, and `/metrics` shows them
//! as `warren_handle_seconds` and `warren_queue_wait_seconds`. Public
//! because the `warren` binary adds them up.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// A histogram's buckets: their upper bounds, in seconds (plus `+Inf`:
/// the count).
pub type Bounds = [f64; 12];

/// The buckets of `warren_handle_seconds`: 5 ms to 30 s.
pub const HANDLE: Bounds = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The buckets of `warren_queue_wait_seconds`: 100 ms to 12 hours (a
/// message can wait hours in a backlog, or for its `x-warren-not-before`).
pub const QUEUE_WAIT: Bounds = [
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 43200.0,
];

/// A histogram's totals: observations per bucket (not cumulative), their
/// count and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations at most the `i`th bound and above the bucket before.
    pub buckets: [u64; 12],
    /// All observations.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Adds another histogram's observations.
    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
    }

    /// `(upper bound, observations in the bucket)`, the last bucket
    /// `+Inf` (what the others do not hold): the form `prometheus-client`
    /// encodes (it adds them up into Prometheus' cumulative buckets).
    pub fn per_bucket(&self, bounds: &Bounds) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = bounds.iter().copied().zip(self.buckets).collect();
        let held: u64 = self.buckets.iter().sum();
        out.push((f64::INFINITY, self.count.saturating_sub(held)));
        out
    }

    /// The sum in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

/// A histogram handlers add to at once.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Recording {
    /// Counts one observation, in the bucket of `bounds` it falls in.
    pub fn observe(&self, took: Duration, bounds: &Bounds) {
        let seconds = took.as_secs_f64();
        if let Some(i) = bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_add_up() {
        let recording = Recording::default();
        recording.observe(Duration::from_millis(3), &HANDLE);
        recording.observe(Duration::from_millis(5), &HANDLE);
        recording.observe(Duration::from_millis(700), &HANDLE);
        recording.observe(Duration::from_secs(60), &HANDLE);
        let mut h = recording.snapshot();
        assert_eq!(h.buckets[0], 2, "<= 5 ms");
        assert_eq!(h.buckets[7], 1, "<= 1 s");
        assert_eq!(h.count, 4, "+Inf holds the minute");
        assert_eq!(h.sum_us, 60_708_000);
        h.add(&recording.snapshot());
        let buckets = h.per_bucket(&HANDLE);
        assert_eq!(buckets[0], (0.005, 4));
        assert_eq!(buckets[7], (1.0, 2));
        assert_eq!(buckets[11], (30.0, 0));
        assert_eq!(buckets[12], (f64::INFINITY, 2), "the two minutes");
        assert!((h.sum_seconds() - 121.416).abs() < 1e-9);
    }

    #[test]
    fn a_queue_wait_of_hours_lands_below_infinity() {
        let recording = Recording::default();
        recording.observe(Duration::from_secs(2 * 3600), &QUEUE_WAIT);
        recording.observe(Duration::from_secs(86_400), &QUEUE_WAIT);
        let buckets = recording.snapshot().per_bucket(&QUEUE_WAIT);
        assert_eq!(buckets[10], (10800.0, 1), "two hours, at most three");
        assert_eq!(buckets[12], (f64::INFINITY, 1), "a day");
    }
}
