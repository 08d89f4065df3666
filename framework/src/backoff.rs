//! Waiting before trying again: exponential, capped, with jitter (a random
//! extra of up to the delay itself, from `backon`), so that many workers
//! that lost the same broker do not come back in lockstep. Shared by the
//! worker's reconnection and opening a connection with retries; public
//! because the `warren` binary's senders use it too.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays that double from `first` up to `max`, each with jitter.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Delays from `first`, doubling, never above `max` before jitter.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays
            .next()
            .unwrap_or_else(|| self.builder.build().next().unwrap_or_default())
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_at_most_their_own_size_of_jitter() {
        let first = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let mut backoff = Backoff::new(first, max);
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        for (n, delay) in delays.iter().enumerate() {
            let base = (first * 2u32.pow(n as u32)).min(max);
            assert!(
                *delay >= base && *delay < base * 2,
                "delay {n}: {delay:?}, base {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() < first * 2);
    }
}
