//! Whether a tracked pipeline's job stream takes events. When a write
//! fails (the stream's leader moving after a node loss, the stream
//! deleted), the stage pauses like an open circuit breaker: its deliveries
//! whose events were refused go back to their queue uncharged, since they
//! never failed, and nothing new starts. After a pause the consumer loop
//! probes the stream (it declares it, then writes an empty batch); when
//! the probe is confirmed the stage consumes again, otherwise the pause
//! doubles, up to a cap.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use super::breaker::Gate;

/// The first pause after the stream stopped answering.
const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause between probes.
const MAX_PAUSE: Duration = Duration::from_secs(15);

/// The gate's state; pure, driven by the times it is given.
#[derive(Debug)]
pub(crate) struct Core {
    /// Since when the stream has not answered, and when to probe it next.
    away: Option<(Instant, Instant)>,
    pause: Duration,
}

impl Core {
    pub fn new() -> Core {
        Core {
            away: None,
            pause: FIRST_PAUSE,
        }
    }

    /// A write failed at `now`. True when the stream was answering until
    /// then (the stage pauses from now on).
    pub fn lost(&mut self, now: Instant) -> bool {
        if self.away.is_some() {
            return false;
        }
        self.away = Some((now, now + self.pause));
        true
    }

    /// What the consumer loop may do at `now`: consume (the stream
    /// answers), wait, or probe the stream.
    pub fn gate(&self, now: Instant) -> Gate {
        match self.away {
            None => Gate::Closed,
            Some((_, probe_at)) if now < probe_at => Gate::Open(probe_at - now),
            Some(_) => Gate::Probe,
        }
    }

    /// A probe ended at `now`: `Some(how long the stream was away)` when it
    /// was confirmed (the gate closes), `None` when it was not (the pause
    /// doubles).
    pub fn probed(&mut self, now: Instant, ok: bool) -> Option<Duration> {
        let (since, _) = self.away?;
        if ok {
            self.away = None;
            self.pause = FIRST_PAUSE;
            return Some(now.saturating_duration_since(since));
        }
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        self.away = Some((since, now + self.pause));
        None
    }
}

/// A stage's gate on its job stream, shared by its handlings (which report
/// refused writes) and its consumer loop (which pauses and probes).
#[derive(Debug)]
pub(crate) struct StreamGate {
    stage: String,
    core: Mutex<Core>,
    /// True while the stream does not answer: read without the lock on
    /// every handling's event.
    away: AtomicBool,
}

impl StreamGate {
    pub fn new(stage: &str) -> StreamGate {
        StreamGate {
            stage: stage.to_string(),
            core: Mutex::new(Core::new()),
            away: AtomicBool::new(false),
        }
    }

    /// True while the stream does not answer.
    pub fn is_away(&self) -> bool {
        self.away.load(Ordering::Acquire)
    }

    /// What the consumer loop may do now.
    pub fn gate(&self) -> Gate {
        if !self.is_away() {
            return Gate::Closed;
        }
        self.core.lock().expect("stream gate").gate(Instant::now())
    }

    /// A write to `stream` failed because of `reason`; logs the change once.
    pub fn lost(&self, stream: &str, reason: &str) {
        let changed = {
            let mut core = self.core.lock().expect("stream gate");
            let changed = core.lost(Instant::now());
            self.away.store(true, Ordering::Release);
            changed
        };
        if changed {
            warn!(
                stage = %self.stage,
                "the job stream does not take events ({reason}): the stage pauses until {stream} answers; the messages whose events it refused go back to their queue, their attempt not counted"
            );
        }
    }

    /// A probe of `stream` ended; logs when the stream answers again.
    pub fn probed(&self, stream: &str, result: Result<(), String>) {
        let (away_for, capped) = {
            let mut core = self.core.lock().expect("stream gate");
            let away_for = core.probed(Instant::now(), result.is_ok());
            if away_for.is_some() {
                self.away.store(false, Ordering::Release);
            }
            (away_for, core.pause == MAX_PAUSE)
        };
        match (away_for, result) {
            (Some(away_for), _) => info!(
                stage = %self.stage,
                "the job stream {stream} takes events again after {:.1}s: consuming",
                away_for.as_secs_f64()
            ),
            // Once the pauses are long, every failed probe says why.
            (None, Err(reason)) if capped => warn!(
                stage = %self.stage,
                "the job stream {stream} still does not take events ({reason}): the stage stays paused"
            ),
            (None, Err(reason)) => {
                debug!(stage = %self.stage, %reason, "the job stream still does not answer")
            }
            (None, Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_stream_that_answers_keeps_it_closed() {
        let core = Core::new();
        assert_eq!(core.gate(Instant::now()), Gate::Closed);
    }

    #[test]
    fn a_refused_write_pauses_then_a_probe_is_due() {
        let start = Instant::now();
        let mut core = Core::new();
        assert!(core.lost(at(start, 0)));
        assert_eq!(
            core.gate(at(start, 400)),
            Gate::Open(Duration::from_millis(600))
        );
        assert_eq!(core.gate(at(start, 1_000)), Gate::Probe);
    }

    #[test]
    fn more_refusals_while_away_change_nothing() {
        let start = Instant::now();
        let mut core = Core::new();
        assert!(core.lost(at(start, 0)));
        assert!(
            !core.lost(at(start, 900)),
            "late handlings of the same outage"
        );
        assert_eq!(core.gate(at(start, 1_000)), Gate::Probe);
    }

    #[test]
    fn failed_probes_double_the_pause_up_to_the_cap() {
        let start = Instant::now();
        let mut core = Core::new();
        core.lost(at(start, 0));
        let mut now = 0;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            now += 100_000;
            assert_eq!(core.gate(at(start, now)), Gate::Probe);
            assert_eq!(core.probed(at(start, now), false), None);
            match core.gate(at(start, now)) {
                Gate::Open(pause) => pauses.push(pause.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pauses, vec![2, 4, 8, 15, 15, 15]);
    }

    #[test]
    fn a_confirmed_probe_closes_it_and_resets_the_pause() {
        let start = Instant::now();
        let mut core = Core::new();
        core.lost(at(start, 0));
        core.probed(at(start, 1_000), false);
        assert_eq!(
            core.probed(at(start, 3_500), true),
            Some(Duration::from_millis(3_500))
        );
        assert_eq!(core.gate(at(start, 3_500)), Gate::Closed);
        assert!(core.lost(at(start, 10_000)), "a new outage");
        assert_eq!(core.gate(at(start, 10_000)), Gate::Open(FIRST_PAUSE));
    }

    #[test]
    fn a_probe_without_an_outage_changes_nothing() {
        let mut core = Core::new();
        assert_eq!(core.probed(Instant::now(), true), None);
        assert_eq!(core.gate(Instant::now()), Gate::Closed);
    }
}
