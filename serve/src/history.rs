//! What each stage did per minute over the last 24 hours: messages done,
//! retried and dead-lettered by the workers of this box's supervisors, for
//! the dashboard's charts. Kept in this process's memory, fed by the
//! refresher's looks (pure: [`History::note`] takes the time); a restart
//! starts it again (Prometheus keeps the long history, `/metrics`).

use std::collections::{BTreeMap, VecDeque};

/// Minutes kept: 24 hours.
pub const MINUTES: usize = 24 * 60;

/// Done, retried, dead.
pub type Counts = [u64; 3];

/// The per-minute counts of every stage.
#[derive(Debug, Default)]
pub struct History {
    /// (minute since the Unix epoch, per stage), oldest first, at most
    /// [`MINUTES`] apart.
    minutes: VecDeque<(u64, BTreeMap<String, Counts>)>,
    /// The totals each stage had at the last look.
    last: BTreeMap<String, Counts>,
}

impl History {
    /// Adds what each stage did since the last look, given its totals now
    /// (counters since its supervisors started) at `now_ms`. A stage seen
    /// for the first time counts from here; totals that went down (a
    /// supervisor started again) count from zero.
    pub fn note<'a>(&mut self, now_ms: u64, totals: impl IntoIterator<Item = (&'a str, Counts)>) {
        let minute = now_ms / 60_000;
        for (stage, now) in totals {
            let Some(before) = self.last.insert(stage.to_string(), now) else {
                continue;
            };
            let mut done = [0; 3];
            for i in 0..3 {
                done[i] = if now[i] >= before[i] {
                    now[i] - before[i]
                } else {
                    now[i]
                };
            }
            if done == [0; 3] {
                continue;
            }
            if self.minutes.back().is_none_or(|(m, _)| *m < minute) {
                self.minutes.push_back((minute, BTreeMap::new()));
            }
            let (_, stages) = self.minutes.back_mut().expect("pushed above");
            let counts = stages.entry(stage.to_string()).or_default();
            for i in 0..3 {
                counts[i] += done[i];
            }
        }
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| *m + MINUTES as u64 <= minute)
        {
            self.minutes.pop_front();
        }
    }

    /// `stage`'s counts for each of the [`MINUTES`] minutes up to the one
    /// of `now_ms`, oldest first (zeros where it did nothing).
    pub fn series(&self, stage: &str, now_ms: u64) -> Vec<Counts> {
        let last = now_ms / 60_000;
        let mut series = vec![[0; 3]; MINUTES];
        for (minute, stages) in &self.minutes {
            if let (Some(counts), Some(ago)) = (stages.get(stage), last.checked_sub(*minute))
                && (ago as usize) < MINUTES
            {
                series[MINUTES - 1 - ago as usize] = *counts;
            }
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    #[test]
    fn each_minute_gets_what_was_done_in_it() {
        let mut history = History::default();
        let start = 1_000 * MINUTE;
        // First sight: what came before is not this history's.
        history.note(start, [("a", [100, 5, 1])]);
        history.note(start + 1_000, [("a", [110, 5, 1])]);
        history.note(start + 30_000, [("a", [115, 7, 1])]);
        history.note(start + MINUTE, [("a", [120, 7, 2])]);
        let series = history.series("a", start + MINUTE);
        assert_eq!(series.len(), MINUTES);
        assert_eq!(series[MINUTES - 2], [15, 2, 0]);
        assert_eq!(series[MINUTES - 1], [5, 0, 1]);
        assert_eq!(series[..MINUTES - 2].iter().flatten().sum::<u64>(), 0);
        assert_eq!(history.series("b", start + MINUTE), vec![[0; 3]; MINUTES]);
    }

    #[test]
    fn totals_that_go_down_count_from_zero() {
        let mut history = History::default();
        history.note(0, [("a", [50, 0, 0])]);
        history.note(1_000, [("a", [3, 0, 0])]);
        assert_eq!(history.series("a", 1_000)[MINUTES - 1], [3, 0, 0]);
    }

    #[test]
    fn a_day_is_kept_and_no_more() {
        let mut history = History::default();
        history.note(0, [("a", [0, 0, 0])]);
        for minute in 1..=(2 * MINUTES as u64) {
            history.note(minute * MINUTE, [("a", [minute, 0, 0])]);
        }
        let now = 2 * MINUTES as u64 * MINUTE;
        let series = history.series("a", now);
        assert!(series.iter().all(|c| *c == [1, 0, 0]));
        assert_eq!(history.minutes.len(), MINUTES);
    }
}
