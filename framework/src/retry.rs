//! Retry policy: how many attempts, which delay after which failure, and
//! which broker-side delay queue holds a message meanwhile.
//!
//! Delays live on the broker: a stage has one retry queue per distinct delay
//! of its backoff (`{pipeline}.{stage}.retry.{delay}`), whose message TTL is
//! that delay and whose dead-letter target is the stage queue. A delay asked
//! for explicitly (a handler's "retry after", an HTTP `Retry-After`) uses the
//! smallest level that is at least as long; a delay longer than every level
//! hops through the longest one as often as needed (the message carries the
//! time before which it must not run).

use std::time::Duration;

/// Attempts and backoff of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (at least 1).
    pub attempts: u32,
    /// Delay after the 1st, 2nd, ... failure; the last one repeats.
    pub backoff: Vec<Duration>,
}

/// Where a delayed message waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The retry level (queue TTL) it is published to.
    pub level: Duration,
    /// True when the level is shorter than the delay, so the message must
    /// carry a not-before time and hop again when it comes back early.
    pub again: bool,
}

impl RetryPolicy {
    /// The delay before the next attempt after attempt `attempt` (1-based)
    /// failed, or `None` when no attempt is left. `requested` is a delay the
    /// handler asked for; otherwise the backoff applies.
    pub fn delay_after(&self, attempt: u32, requested: Option<Duration>) -> Option<Duration> {
        if attempt >= self.attempts || self.backoff.is_empty() {
            return None;
        }
        Some(requested.unwrap_or_else(|| self.backoff_delay(attempt)))
    }

    /// The configured delay after failed attempt `attempt` (1-based).
    pub fn backoff_delay(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff.get(index).copied().unwrap_or_default()
    }

    /// The distinct delays of the backoff, shortest first: one retry queue
    /// each.
    pub fn levels(&self) -> Vec<Duration> {
        let mut levels = self.backoff.clone();
        levels.sort();
        levels.dedup();
        levels
    }

    /// The retry queue that holds a message for `delay`.
    /// `None` when the stage has no retry levels at all.
    pub fn hop(&self, delay: Duration) -> Option<Hop> {
        let levels = self.levels();
        let longest = *levels.last()?;
        Some(match levels.iter().find(|level| **level >= delay) {
            Some(level) => Hop {
                level: *level,
                again: false,
            },
            None => Hop {
                level: longest,
                again: true,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff: vec![secs(1), secs(10), secs(60)],
        }
    }

    #[test]
    fn backoff_follows_the_list_then_repeats_the_last() {
        let p = policy();
        let delays: Vec<_> = (1..5).map(|attempt| p.delay_after(attempt, None)).collect();
        assert_eq!(
            delays,
            vec![
                Some(secs(1)),
                Some(secs(10)),
                Some(secs(60)),
                Some(secs(60))
            ]
        );
    }

    #[test]
    fn gives_up_after_the_last_attempt() {
        assert_eq!(policy().delay_after(5, None), None);
        assert_eq!(policy().delay_after(9, None), None);
        let once = RetryPolicy {
            attempts: 1,
            backoff: vec![secs(1)],
        };
        assert_eq!(once.delay_after(1, None), None);
    }

    #[test]
    fn an_explicit_delay_overrides_the_backoff() {
        assert_eq!(policy().delay_after(1, Some(secs(30))), Some(secs(30)));
    }

    #[test]
    fn hops_to_the_smallest_level_that_is_long_enough() {
        let p = policy();
        assert_eq!(
            p.hop(secs(1)),
            Some(Hop {
                level: secs(1),
                again: false
            })
        );
        assert_eq!(
            p.hop(secs(5)),
            Some(Hop {
                level: secs(10),
                again: false
            })
        );
        assert_eq!(
            p.hop(secs(600)),
            Some(Hop {
                level: secs(60),
                again: true
            })
        );
    }

    #[test]
    fn levels_are_distinct_and_sorted() {
        let p = RetryPolicy {
            attempts: 4,
            backoff: vec![secs(10), secs(1), secs(10)],
        };
        assert_eq!(p.levels(), vec![secs(1), secs(10)]);
        let none = RetryPolicy {
            attempts: 1,
            backoff: vec![],
        };
        assert_eq!(none.hop(secs(1)), None);
    }
}
