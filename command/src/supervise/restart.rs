//! When to restart a worker that exited, and when a stage is in a crash
//! loop: pure, fed with the times of exits and starts.

use std::{collections::VecDeque, time::Duration};

/// Restart settings.
#[derive(Clone, Copy, Debug)]
pub struct RestartRules {
    /// Pause before the first restart of a slot.
    pub first_pause: Duration,
    /// Longest pause.
    pub max_pause: Duration,
    /// A worker that ran this long was healthy: its slot's pause resets and
    /// a failed stage counts as recovered.
    pub healthy_after: Duration,
    /// This many unexpected exits of a stage's workers...
    pub loop_exits: usize,
    /// ...within this window make a crash loop.
    pub loop_window: Duration,
}

impl Default for RestartRules {
    fn default() -> RestartRules {
        RestartRules {
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(60),
            healthy_after: Duration::from_secs(30),
            loop_exits: 5,
            loop_window: Duration::from_secs(60),
        }
    }
}

/// The restart history of one stage.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Times of recent unexpected exits.
    exits: VecDeque<Duration>,
    /// In a crash loop.
    pub failed: bool,
    /// Unexpected exits since the supervisor started.
    pub restarts: u32,
}

/// What to do after a worker exited unexpectedly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// Wait this long, then start it again.
    pub after: Duration,
    /// The stage just entered a crash loop (say so, loudly, once).
    pub loop_started: bool,
}

impl History {
    /// A worker that had run for `ran` exited unexpectedly at `now`; it had
    /// already failed `quick_failures` times in a row without running
    /// healthily.
    pub fn exited(
        &mut self,
        rules: &RestartRules,
        now: Duration,
        ran: Duration,
        quick_failures: u32,
    ) -> Restart {
        self.restarts += 1;
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > rules.loop_window)
        {
            self.exits.pop_front();
        }
        let was_failed = self.failed;
        if self.exits.len() >= rules.loop_exits {
            self.failed = true;
        }
        let failures = if ran >= rules.healthy_after {
            0
        } else {
            quick_failures
        };
        let pause = rules
            .first_pause
            .saturating_mul(1 << failures.min(16))
            .min(rules.max_pause);
        Restart {
            after: pause,
            loop_started: self.failed && !was_failed,
        }
    }

    /// A worker exited saying its setup is wrong (exit 78): restarting it
    /// cannot help, so the stage fails at once. Returns true when it just
    /// did.
    pub fn misconfigured(&mut self) -> bool {
        let was_failed = self.failed;
        self.failed = true;
        !was_failed
    }

    /// A worker has been running for `ran`: a long enough run ends a crash
    /// loop. Returns true when it just did.
    pub fn running(&mut self, rules: &RestartRules, ran: Duration) -> bool {
        if self.failed && ran >= rules.healthy_after {
            self.failed = false;
            self.exits.clear();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pauses_grow_and_reset_after_a_healthy_run() {
        let rules = RestartRules::default();
        let mut history = History::default();
        let pauses: Vec<u64> = (0..8)
            .map(|n| history.exited(&rules, n * 100 * S, S, n).after.as_secs())
            .collect();
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            history.exited(&rules, 10_000 * S, 45 * S, 7).after,
            S,
            "it ran 45 s: healthy"
        );
    }

    #[test]
    fn five_quick_exits_within_a_minute_are_a_crash_loop_reported_once() {
        let rules = RestartRules::default();
        let mut history = History::default();
        let started: Vec<bool> = (0..7)
            .map(|n| history.exited(&rules, n * 5 * S, S, n).loop_started)
            .collect();
        assert_eq!(
            started,
            vec![false, false, false, false, true, false, false]
        );
        assert!(history.failed);
        assert_eq!(history.restarts, 7);
    }

    #[test]
    fn exits_spread_over_time_are_not_a_crash_loop() {
        let rules = RestartRules::default();
        let mut history = History::default();
        for n in 0..10 {
            history.exited(&rules, n * 20 * S, 10 * S, 0);
        }
        assert!(!history.failed);
    }

    #[test]
    fn a_healthy_run_ends_the_crash_loop() {
        let rules = RestartRules::default();
        let mut history = History::default();
        for n in 0..5 {
            history.exited(&rules, n * S, S, n);
        }
        assert!(history.failed);
        assert!(!history.running(&rules, 10 * S));
        assert!(history.running(&rules, 31 * S));
        assert!(!history.failed);
    }
}
