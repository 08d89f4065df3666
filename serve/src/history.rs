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
    /// The totals each supervisor (by pid) had for each stage at the last
    /// look that reached it.
    last: BTreeMap<(u32, String), Counts>,
    /// Whether a look was noted: what the supervisors of the first look
    /// did before it is not this history's.
    started: bool,
}

impl History {
    /// Adds what each stage did since the last look, given each
    /// supervisor's totals now (`(pid, stage, totals)`, counters since it
    /// started) at `now_ms`. A supervisor of the first look counts from
    /// there; one that appears later counts from zero (it started since);
    /// one missing from a look (it did not answer in time) is counted
    /// again when it answers, from where it was; totals that went down (a
    /// pid reused) count from there.
    pub fn note<'a>(
        &mut self,
        now_ms: u64,
        totals: impl IntoIterator<Item = (u32, &'a str, Counts)>,
    ) {
        let minute = now_ms / 60_000;
        let first = !self.started;
        self.started = true;
        for (pid, stage, now) in totals {
            let before = self.last.insert((pid, stage.to_string()), now);
            let before = match before {
                Some(before) if (0..3).all(|i| now[i] >= before[i]) => before,
                Some(_) => continue,
                None if first => continue,
                None => [0; 3],
            };
            let done = [now[0] - before[0], now[1] - before[1], now[2] - before[2]];
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
        history.note(start, [(1, "a", [100, 5, 1])]);
        history.note(start + 1_000, [(1, "a", [110, 5, 1])]);
        history.note(start + 30_000, [(1, "a", [115, 7, 1])]);
        history.note(start + MINUTE, [(1, "a", [120, 7, 2])]);
        let series = history.series("a", start + MINUTE);
        assert_eq!(series.len(), MINUTES);
        assert_eq!(series[MINUTES - 2], [15, 2, 0]);
        assert_eq!(series[MINUTES - 1], [5, 0, 1]);
        assert_eq!(series[..MINUTES - 2].iter().flatten().sum::<u64>(), 0);
        assert_eq!(history.series("b", start + MINUTE), vec![[0; 3]; MINUTES]);
    }

    #[test]
    fn supervisors_are_counted_each_on_its_own() {
        let mut history = History::default();
        history.note(0, [(1, "a", [50, 0, 0]), (2, "a", [70, 0, 0])]);
        history.note(1_000, [(1, "a", [53, 0, 0]), (2, "a", [71, 0, 0])]);
        assert_eq!(history.series("a", 1_000)[MINUTES - 1], [4, 0, 0]);
        // Supervisor 2 did not answer this look: nothing of it is lost or
        // counted twice when it answers again.
        history.note(2_000, [(1, "a", [54, 0, 0])]);
        history.note(3_000, [(1, "a", [54, 0, 0]), (2, "a", [75, 1, 0])]);
        assert_eq!(history.series("a", 3_000)[MINUTES - 1], [9, 1, 0]);
        // Supervisor 1 restarted as 3: its new totals are all new work.
        history.note(4_000, [(3, "a", [2, 0, 0]), (2, "a", [75, 1, 0])]);
        assert_eq!(history.series("a", 4_000)[MINUTES - 1], [11, 1, 0]);
    }

    #[test]
    fn totals_that_go_down_count_from_there() {
        let mut history = History::default();
        history.note(0, [(1, "a", [50, 0, 0])]);
        history.note(1_000, [(1, "a", [3, 0, 0])]);
        history.note(2_000, [(1, "a", [5, 0, 0])]);
        assert_eq!(history.series("a", 2_000)[MINUTES - 1], [2, 0, 0]);
    }

    #[test]
    fn a_day_is_kept_and_no_more() {
        let mut history = History::default();
        history.note(0, [(1, "a", [0, 0, 0])]);
        for minute in 1..=(2 * MINUTES as u64) {
            history.note(minute * MINUTE, [(1, "a", [minute, 0, 0])]);
        }
        let now = 2 * MINUTES as u64 * MINUTE;
        let series = history.series("a", now);
        assert!(series.iter().all(|c| *c == [1, 0, 0]));
        assert_eq!(history.minutes.len(), MINUTES);
    }
}
