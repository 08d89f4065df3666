//! How long a message can stay unacknowledged in a worker, worst case, and
//! whether that reaches the broker's acknowledgement timeout (RabbitMQ's
//! `consumer_timeout`, after which it closes the channel). Pure arithmetic.
//!
//! A delivery waits behind the others its worker prefetched, in rounds of
//! `concurrency` handlings, each within `timeout` (the handler and the
//! confirms of what it emitted share that budget); then its retry or dead
//! letter is published within [`SETTLE_TIMEOUT`]. With a rate limit, each
//! worker starts handlers at its share of the limit, and a stage may run
//! `scale.max` workers on a box, so the prefetch drains at `rate / max`.

use std::time::Duration;

use crate::{limits::SETTLE_TIMEOUT, rate::RateLimit};

/// What decides how long a stage holds a message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holding {
    pub timeout: Duration,
    pub prefetch: u16,
    pub concurrency: u32,
    pub rate: Option<RateLimit>,
    /// Workers sharing the rate limit (`scale.max`).
    pub workers: u32,
}

/// A way a message can outstay the acknowledgement timeout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Overrun {
    /// One handling alone is too long.
    Timeout,
    /// Waiting behind the prefetch, `rounds` handlings of `timeout`, then
    /// settling, takes `held`.
    Prefetch { rounds: u32, held: Duration },
    /// Starting the prefetched messages at this worker's share of the rate
    /// limit takes `wait` (handling and settling included).
    Rate { wait: Duration },
}

impl Holding {
    /// Every way a message can reach `ack_timeout` unacknowledged.
    pub fn overruns(&self, ack_timeout: Duration) -> Vec<Overrun> {
        if self.timeout + SETTLE_TIMEOUT >= ack_timeout {
            return vec![Overrun::Timeout];
        }
        let mut found = Vec::new();
        let rounds = u32::from(self.prefetch).div_ceil(self.concurrency.max(1));
        let held = self.timeout.saturating_mul(rounds) + SETTLE_TIMEOUT;
        if held >= ack_timeout {
            found.push(Overrun::Prefetch { rounds, held });
        }
        if let Some(rate) = self.rate {
            let share = rate.per_second() / f64::from(self.workers.max(1));
            let starts = Duration::from_secs_f64(f64::from(self.prefetch) / share);
            let wait = starts + self.timeout + SETTLE_TIMEOUT;
            if wait >= ack_timeout {
                found.push(Overrun::Rate { wait });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(timeout: u64, prefetch: u16, concurrency: u32) -> Holding {
        Holding {
            timeout: Duration::from_secs(timeout),
            prefetch,
            concurrency,
            rate: None,
            workers: 1,
        }
    }

    #[test]
    fn a_timeout_plus_settling_at_the_ack_timeout_is_too_long() {
        let ack = Duration::from_secs(60);
        assert_eq!(holding(50, 1, 1).overruns(ack), vec![Overrun::Timeout]);
        assert!(holding(40, 1, 1).overruns(ack).is_empty());
    }

    #[test]
    fn prefetched_messages_wait_in_rounds() {
        let ack = Duration::from_secs(30 * 60);
        assert!(holding(30, 64, 32).overruns(ack).is_empty());
        // 64 rounds of 30 s = 32 min.
        assert!(matches!(
            holding(30, 64, 1).overruns(ack)[..],
            [Overrun::Prefetch { rounds: 64, .. }]
        ));
    }

    #[test]
    fn each_worker_runs_at_its_share_of_the_rate_limit() {
        let ack = Duration::from_secs(30 * 60);
        let mut h = holding(1, 64, 32);
        h.rate = Some(RateLimit::parse("10/m").unwrap());
        // One worker: 64 starts at 10/m = 6.4 min, fine.
        assert!(h.overruns(ack).is_empty());
        // Five workers share it: 2/m each, 32 min.
        h.workers = 5;
        match h.overruns(ack)[..] {
            [Overrun::Rate { wait }] => assert!(wait > Duration::from_secs(32 * 60), "{wait:?}"),
            ref other => panic!("{other:?}"),
        }
    }
}
