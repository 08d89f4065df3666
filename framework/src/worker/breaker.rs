//! The circuit breaker of a stage: when calls fail at a high rate (the API
//! it calls is down), the stage stops consuming instead of burning through
//! retries; it probes with one message after a pause, and resumes when the
//! probe succeeds. Messages wait in the queue meanwhile, and the failures
//! that open the breaker or come while it is open go back to the queue
//! without counting as an attempt, so an outage dead-letters nothing. A
//! failed probe does count for its message: when only poison is left in a
//! queue, it still moves towards the dead-letter queue, one probe at a time.
//! Only the probe decides: calls that started before the breaker opened and
//! end after it half-opened are excused, not judged.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

/// When the breaker opens and how long it waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Outcomes considered.
    pub window: Duration,
    /// Fewest outcomes in the window before judging.
    pub min_calls: usize,
    /// Failure share that opens it.
    pub failure_rate: f64,
    /// First pause; doubles after each failed probe.
    pub first_pause: Duration,
    /// Longest pause.
    pub max_pause: Duration,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            window: Duration::from_secs(20),
            min_calls: 10,
            failure_rate: 0.5,
            first_pause: Duration::from_secs(2),
            max_pause: Duration::from_secs(30),
        }
    }
}

/// What the consumer loop may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Consume normally.
    Closed,
    /// Do not consume for this long.
    Open(Duration),
    /// Consume one message, alone, to see whether the calls work again.
    Probe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// Outcomes of one second of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Whole seconds since the breaker started.
    second: u64,
    calls: u32,
    failures: u32,
}

/// The breaker's state; pure, driven by the times it is given. Outcomes are
/// counted per second, so recording one costs the same whatever the rate.
#[derive(Debug)]
pub(crate) struct Core {
    rules: Rules,
    start: Instant,
    buckets: VecDeque<Bucket>,
    calls: u64,
    failures: u64,
    mode: Mode,
    pause: Duration,
    /// Opened by [`Core::trip`] (an outage the handler said), not by a
    /// failure rate: the consumer loop keeps its consumer meanwhile.
    outage: bool,
}

impl Core {
    pub fn new(rules: Rules) -> Core {
        Core {
            rules,
            start: Instant::now(),
            buckets: VecDeque::new(),
            calls: 0,
            failures: 0,
            mode: Mode::Closed,
            pause: rules.first_pause,
            outage: false,
        }
    }

    /// True while open or half-open because of an outage the handler
    /// said (see [`Core::trip`]).
    pub fn outage(&self) -> bool {
        self.outage && self.mode != Mode::Closed
    }

    /// Counts an outcome at `now` and forgets the seconds that left the
    /// window.
    fn count(&mut self, now: Instant, ok: bool) {
        let second = now.saturating_duration_since(self.start).as_secs();
        match self.buckets.back_mut() {
            Some(last) if last.second == second => {
                last.calls += 1;
                last.failures += u32::from(!ok);
            }
            _ => self.buckets.push_back(Bucket {
                second,
                calls: 1,
                failures: u32::from(!ok),
            }),
        }
        self.calls += 1;
        self.failures += u64::from(!ok);
        let window = self.rules.window.as_secs().max(1);
        while self
            .buckets
            .front()
            .is_some_and(|b| second.saturating_sub(b.second) >= window)
        {
            let old = self.buckets.pop_front().expect("a bucket");
            self.calls -= u64::from(old.calls);
            self.failures -= u64::from(old.failures);
        }
    }

    fn forget(&mut self) {
        self.buckets.clear();
        self.calls = 0;
        self.failures = 0;
    }

    /// What the consumer may do at `now`.
    pub fn gate(&mut self, now: Instant) -> Gate {
        match self.mode {
            Mode::Closed => Gate::Closed,
            Mode::Open { until } if now < until => Gate::Open(until - now),
            Mode::Open { .. } | Mode::HalfOpen => {
                self.mode = Mode::HalfOpen;
                Gate::Probe
            }
        }
    }

    /// True unless closed.
    pub fn tripped(&self) -> bool {
        self.mode != Mode::Closed
    }

    /// Records one call's outcome (`probe`: the call was the probe): the new
    /// gate when it changed (for the log), and whether a failure is excused
    /// (goes back to the queue, its attempt not counted): the failure that
    /// opened the breaker and late ones while it is open or half-open are;
    /// a failed probe is not.
    pub fn record(&mut self, now: Instant, ok: bool, probe: bool) -> (Option<Gate>, bool) {
        match self.mode {
            Mode::Closed => {
                self.count(now, ok);
                if self.calls >= self.rules.min_calls as u64
                    && self.failures as f64 >= self.rules.failure_rate * self.calls as f64
                {
                    self.open(now);
                    self.outage = false;
                    return (Some(Gate::Open(self.pause)), !ok);
                }
                (None, false)
            }
            // A straggler: it started before the breaker opened.
            Mode::HalfOpen if !probe => (None, !ok),
            Mode::HalfOpen if ok => {
                self.mode = Mode::Closed;
                self.pause = self.rules.first_pause;
                self.forget();
                (Some(Gate::Closed), false)
            }
            Mode::HalfOpen => {
                self.pause = (self.pause * 2).min(self.rules.max_pause);
                self.open(now);
                self.outage = false;
                (Some(Gate::Open(self.pause)), false)
            }
            // Late outcomes of calls started before it opened.
            Mode::Open { .. } => (None, !ok),
        }
    }

    /// What the stage depends on is down (an outage said by the handler,
    /// not guessed from a rate): opens at once from closed; a probe that
    /// meets it opens again with twice the pause. Anything else (open
    /// already, a straggler) changes nothing. The new gate when it changed.
    pub fn trip(&mut self, now: Instant, probe: bool) -> Option<Gate> {
        match self.mode {
            Mode::Closed => {
                self.open(now);
                self.outage = true;
                Some(Gate::Open(self.pause))
            }
            Mode::HalfOpen if probe => {
                self.pause = (self.pause * 2).min(self.rules.max_pause);
                self.open(now);
                self.outage = true;
                Some(Gate::Open(self.pause))
            }
            Mode::HalfOpen | Mode::Open { .. } => None,
        }
    }

    fn open(&mut self, now: Instant) {
        self.mode = Mode::Open {
            until: now + self.pause,
        };
        self.forget();
    }
}

/// A stage's breaker, shared by its handlers and its consumer loop.
#[derive(Debug)]
pub(crate) struct Breaker {
    stage: String,
    core: Mutex<Core>,
    /// True unless closed: read without the lock on every delivery.
    tripped: AtomicBool,
}

impl Breaker {
    pub fn new(stage: &str) -> Breaker {
        Breaker {
            stage: stage.to_string(),
            core: Mutex::new(Core::new(Rules::default())),
            tripped: AtomicBool::new(false),
        }
    }

    pub fn gate(&self) -> Gate {
        if !self.is_open() {
            return Gate::Closed;
        }
        self.core.lock().expect("breaker").gate(Instant::now())
    }

    /// True while consumption is paused or probing (for the supervisor,
    /// which does not scale up a stage whose calls fail).
    pub fn is_open(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// Records an outcome and logs each change of state once; true when a
    /// failure is excused (see [`Core::record`]).
    pub fn record(&self, ok: bool, probe: bool) -> bool {
        let (changed, excused) = {
            let mut core = self.core.lock().expect("breaker");
            let recorded = core.record(Instant::now(), ok, probe);
            self.tripped.store(core.tripped(), Ordering::Release);
            recorded
        };
        match changed {
            Some(Gate::Open(pause)) => warn!(
                stage = %self.stage,
                "calls are failing at a high rate: pausing consumption for {:.0}s; messages wait in the queue",
                pause.as_secs_f64()
            ),
            Some(Gate::Closed) => info!(stage = %self.stage, "calls succeed again: consuming"),
            _ => {}
        }
        excused
    }

    /// True while paused by an outage the handler said (see
    /// [`Core::trip`]): the consumer loop keeps its consumer then.
    pub fn outage(&self) -> bool {
        self.is_open() && self.core.lock().expect("breaker").outage()
    }

    /// What the stage depends on is down: pause now (see [`Core::trip`]).
    pub fn trip(&self, probe: bool, reason: &str) {
        let changed = {
            let mut core = self.core.lock().expect("breaker");
            let changed = core.trip(Instant::now(), probe);
            self.tripped.store(core.tripped(), Ordering::Release);
            changed
        };
        if let Some(Gate::Open(pause)) = changed {
            warn!(
                stage = %self.stage,
                %reason,
                "what the stage writes to is unavailable: pausing consumption for {:.0}s; messages wait in the queue, no attempt counted",
                pause.as_secs_f64()
            );
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
    fn a_few_failures_among_successes_keep_it_closed() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        for i in 0..100 {
            assert_eq!(
                core.record(at(start, i * 10), i % 20 != 0, false),
                (None, false)
            );
        }
        assert_eq!(core.gate(at(start, 1_000)), Gate::Closed);
    }

    #[test]
    fn a_failure_rate_above_half_opens_it_then_a_probe_closes_it() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        let mut opened = None;
        for i in 0..10 {
            opened = core.record(at(start, i * 10), i % 3 == 0, false).0;
        }
        assert_eq!(opened, Some(Gate::Open(Duration::from_secs(2))));
        assert!(core.tripped());
        assert!(matches!(core.gate(at(start, 1_000)), Gate::Open(_)));
        assert_eq!(core.gate(at(start, 2_200)), Gate::Probe);
        assert_eq!(
            core.record(at(start, 2_300), true, true),
            (Some(Gate::Closed), false)
        );
        assert_eq!(core.gate(at(start, 2_400)), Gate::Closed);
        assert!(!core.tripped());
    }

    #[test]
    fn failed_probes_double_the_pause_up_to_the_cap() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        for i in 0..10 {
            core.record(at(start, i), false, false);
        }
        let mut now = 0;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            now += 100_000;
            assert_eq!(core.gate(at(start, now)), Gate::Probe);
            match core.record(at(start, now), false, true) {
                (Some(Gate::Open(pause)), false) => pauses.push(pause.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pauses, vec![4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        for i in 0..9 {
            core.record(at(start, i), false, false);
        }
        // 30 s later, one more failure: the old ones no longer count.
        assert_eq!(core.record(at(start, 30_000), false, false), (None, false));
        assert_eq!(core.gate(at(start, 30_001)), Gate::Closed);
    }

    #[test]
    fn failures_while_open_are_excused_but_a_failed_probe_counts() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        let excused: Vec<bool> = (0..10)
            .map(|i| core.record(at(start, i), false, false).1)
            .collect();
        assert_eq!(
            excused.iter().filter(|e| **e).count(),
            1,
            "the one that opened it"
        );
        assert!(excused[9]);
        assert!(
            core.record(at(start, 20), false, false).1,
            "late, while open"
        );
        assert!(
            !core.record(at(start, 21), true, false).1,
            "a success is never excused"
        );
        assert_eq!(core.gate(at(start, 3_000)), Gate::Probe);
        assert!(
            !core.record(at(start, 3_100), false, true).1,
            "the probe counts"
        );
    }

    #[test]
    fn an_outage_opens_at_once_and_a_probe_that_meets_it_doubles_the_pause() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        assert_eq!(
            core.trip(at(start, 0), false),
            Some(Gate::Open(Duration::from_secs(2)))
        );
        assert_eq!(core.trip(at(start, 10), false), None, "open already");
        assert_eq!(core.gate(at(start, 2_100)), Gate::Probe);
        assert_eq!(core.trip(at(start, 2_110), false), None, "a straggler");
        assert_eq!(
            core.trip(at(start, 2_200), true),
            Some(Gate::Open(Duration::from_secs(4)))
        );
        assert!(core.outage());
        assert_eq!(core.gate(at(start, 6_300)), Gate::Probe);
        assert_eq!(
            core.record(at(start, 6_400), true, true),
            (Some(Gate::Closed), false)
        );
        assert!(!core.outage());
    }

    #[test]
    fn only_a_trip_is_an_outage() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        for i in 0..10 {
            core.record(at(start, i), false, false);
        }
        assert!(core.tripped() && !core.outage(), "opened by a failure rate");
        assert_eq!(core.gate(at(start, 3_000)), Gate::Probe);
        core.trip(at(start, 3_100), true);
        assert!(core.outage(), "the probe met an outage");
        assert_eq!(core.gate(at(start, 8_000)), Gate::Probe);
        core.record(at(start, 8_100), false, true);
        assert!(
            core.tripped() && !core.outage(),
            "the probe failed otherwise"
        );
    }

    #[test]
    fn only_the_probe_decides_a_half_open_breaker() {
        let start = Instant::now();
        let mut core = Core::new(Rules::default());
        for i in 0..10 {
            core.record(at(start, i), false, false);
        }
        assert_eq!(core.gate(at(start, 3_000)), Gate::Probe);
        // A call that started before it opened fails now: excused, and the
        // breaker stays half-open with its pause unchanged.
        assert_eq!(core.record(at(start, 3_010), false, false), (None, true));
        assert_eq!(core.record(at(start, 3_020), true, false), (None, false));
        assert_eq!(core.gate(at(start, 3_030)), Gate::Probe);
        // The probe fails: open again for twice the first pause.
        assert_eq!(
            core.record(at(start, 3_040), false, true),
            (Some(Gate::Open(Duration::from_secs(4))), false)
        );
    }
}
