//! A rolling replacement of one stage's workers on this box (a deploy or
//! `warren restart`): pure, fed with the workers' states.
//!
//! One at a time: a new worker starts first (one above the stage's count);
//! once it is ready (it reports consuming; a program that does not report
//! to the supervisor: it has run for the settle time) one old worker is
//! drained (SIGTERM), and so on until no old
//! worker is left. The stage never has fewer workers running than before
//! the roll. A new program that crash-loops (the supervisor's crash-loop
//! rule applied to the roll's own new workers) stops the roll and leaves
//! the old workers running; a later deploy or restart starts a new roll.

use std::time::Duration;

use super::restart::History;

/// How long a new worker that does not report must run before it counts
/// as ready.
pub const SETTLE: Duration = Duration::from_secs(3);

/// A worker as the roll sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its slot index.
    pub index: u32,
    /// Started before the roll.
    pub old: bool,
    /// Where it is.
    pub state: WorkerState,
}

/// A worker's state, for the roll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Running for this long; `reports` when it has reported to the
    /// supervisor, `consuming` when it reported consuming.
    Running {
        up: Duration,
        reports: bool,
        consuming: bool,
        busy: bool,
    },
    /// Waiting to restart after an exit.
    Restarting,
    /// Stopping.
    Draining,
}

/// What the pool does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing now.
    Wait,
    /// Start one new worker (then tell [`Roll::started`] its index).
    Start,
    /// Drain (or drop, when it waits to restart) this old worker.
    Retire(u32),
    /// No old worker is left: the roll is over.
    Done,
}

/// Where a roll is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollState {
    /// Replacing workers.
    Rolling,
    /// Every old worker was replaced.
    Done,
    /// The new program crash-loops: the old workers keep running.
    Stopped(String),
}

/// One roll of one stage on this box.
#[derive(Debug)]
pub struct Roll {
    /// Workers started from this generation on are new.
    pub generation: u64,
    /// Why it rolls (`the program file changed`, `warren restart by ...`).
    pub reason: String,
    /// Where it is.
    pub state: RollState,
    /// The new worker started and not yet ready.
    surge: Option<u32>,
    /// Old workers replaced so far.
    pub replaced: u32,
    /// Exits of its new workers before they were ready: the crash-loop
    /// rule applied to the new program alone.
    pub history: History,
}

impl Roll {
    /// A roll whose new workers are of `generation`.
    pub fn new(generation: u64, reason: String) -> Roll {
        Roll {
            generation,
            reason,
            state: RollState::Rolling,
            surge: None,
            replaced: 0,
            history: History::default(),
        }
    }

    /// The new worker not yet ready (it does not count for scaling).
    pub fn surge(&self) -> Option<u32> {
        self.surge.filter(|_| self.state == RollState::Rolling)
    }

    /// The pool started the worker of [`Step::Start`] in slot `index`.
    pub fn started(&mut self, index: u32) {
        self.surge = Some(index);
    }

    /// The new program crash-loops: stop here.
    pub fn stop(&mut self, why: String) {
        self.state = RollState::Stopped(why);
    }

    /// The next step, given the stage's workers.
    pub fn next(&mut self, workers: &[Seen]) -> Step {
        if self.state != RollState::Rolling {
            return Step::Wait;
        }
        let old: Vec<&Seen> = workers
            .iter()
            .filter(|w| w.old && w.state != WorkerState::Draining)
            .collect();
        if old.is_empty() {
            self.state = RollState::Done;
            self.surge = None;
            return Step::Done;
        }
        let Some(surge) = self.surge else {
            return Step::Start;
        };
        let ready = match workers.iter().find(|w| w.index == surge) {
            // Gone (scaled down): start another.
            None => {
                self.surge = None;
                return Step::Start;
            }
            Some(worker) => match worker.state {
                WorkerState::Running {
                    up,
                    reports,
                    consuming,
                    ..
                } => consuming || (!reports && up >= SETTLE),
                WorkerState::Restarting => false,
                WorkerState::Draining => {
                    self.surge = None;
                    return Step::Start;
                }
            },
        };
        if !ready {
            return Step::Wait;
        }
        // Waiting restarts first, then idle ones, then the highest index.
        let pick = old
            .iter()
            .min_by_key(|w| {
                let rank = match w.state {
                    WorkerState::Restarting => 0,
                    WorkerState::Running { busy: false, .. } => 1,
                    _ => 2,
                };
                (rank, u32::MAX - w.index)
            })
            .expect("an old worker");
        self.surge = None;
        self.replaced += 1;
        Step::Retire(pick.index)
    }

    /// The roll in words, for `warren status`; `None` once it is done.
    pub fn describe(&self, old_left: u32) -> Option<String> {
        match &self.state {
            RollState::Rolling => Some(format!(
                "rolling ({}): {} replaced, {old_left} to go",
                self.reason, self.replaced
            )),
            RollState::Done => None,
            RollState::Stopped(why) => Some(format!(
                "roll stopped ({}): {why}; the old workers keep running",
                self.reason
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn running(index: u32, old: bool, up: Duration, consuming: bool) -> Seen {
        Seen {
            index,
            old,
            state: WorkerState::Running {
                up,
                reports: consuming,
                consuming,
                busy: false,
            },
        }
    }

    /// Plays a roll on `count` old workers with simulated time: each new
    /// worker reports consuming `ready_after` after it starts. Returns the
    /// fewest workers running (not draining) seen at any moment.
    fn play(count: u32, ready_after: Duration) -> (u32, Vec<Seen>) {
        let mut roll = Roll::new(1, "test".into());
        let mut workers: Vec<(Seen, Duration)> = (0..count)
            .map(|i| (running(i, true, 100 * S, true), Duration::ZERO))
            .collect();
        let mut fewest = u32::MAX;
        let mut now = Duration::ZERO;
        for _ in 0..1000 {
            now += S / 2;
            let seen: Vec<Seen> = workers
                .iter()
                .map(|(w, started)| match w.state {
                    WorkerState::Running { .. } if !w.old => {
                        let up = now - *started;
                        running(w.index, false, up, up >= ready_after)
                    }
                    _ => *w,
                })
                .collect();
            let up = seen
                .iter()
                .filter(|w| matches!(w.state, WorkerState::Running { .. }))
                .count() as u32;
            fewest = fewest.min(up);
            match roll.next(&seen) {
                Step::Wait => {}
                Step::Start => {
                    let index = (0..)
                        .find(|i| !workers.iter().any(|(w, _)| w.index == *i))
                        .unwrap();
                    workers.push((running(index, false, Duration::ZERO, false), now));
                    roll.started(index);
                }
                Step::Retire(index) => {
                    let (worker, _) = workers.iter_mut().find(|(w, _)| w.index == index).unwrap();
                    assert!(worker.old, "only old workers are retired");
                    worker.state = WorkerState::Draining;
                }
                Step::Done => return (fewest, seen),
            }
        }
        panic!("the roll never ended");
    }

    #[test]
    fn a_roll_replaces_every_old_worker_never_running_fewer() {
        let (fewest, end) = play(3, 2 * S);
        assert_eq!(fewest, 3, "never fewer than before the roll");
        let new = end
            .iter()
            .filter(|w| !w.old && matches!(w.state, WorkerState::Running { .. }));
        assert_eq!(new.count(), 3);
        assert!(
            end.iter()
                .filter(|w| w.old)
                .all(|w| w.state == WorkerState::Draining)
        );
    }

    #[test]
    fn a_worker_that_does_not_report_is_ready_after_the_settle_time() {
        let mut roll = Roll::new(1, "test".into());
        let old = running(0, true, 100 * S, true);
        assert_eq!(roll.next(&[old]), Step::Start);
        roll.started(1);
        assert_eq!(roll.next(&[old, running(1, false, S, false)]), Step::Wait);
        assert_eq!(
            roll.next(&[old, running(1, false, SETTLE, false)]),
            Step::Retire(0)
        );
        assert_eq!(roll.replaced, 1);
    }

    #[test]
    fn a_new_worker_that_restarts_is_waited_for_and_a_stopped_roll_does_nothing() {
        let mut roll = Roll::new(1, "test".into());
        let old = running(0, true, 100 * S, true);
        assert_eq!(roll.next(&[old]), Step::Start);
        roll.started(1);
        let restarting = Seen {
            index: 1,
            old: false,
            state: WorkerState::Restarting,
        };
        assert_eq!(roll.next(&[old, restarting]), Step::Wait);
        assert_eq!(roll.surge(), Some(1));
        roll.stop("crash loop".into());
        assert_eq!(roll.surge(), None, "the new worker no longer waits");
        assert_eq!(roll.next(&[old, restarting]), Step::Wait);
        assert!(roll.describe(1).unwrap().contains("roll stopped"));
    }

    #[test]
    fn waiting_restarts_then_idle_workers_are_retired_first() {
        let mut roll = Roll::new(1, "test".into());
        let busy = Seen {
            index: 2,
            old: true,
            state: WorkerState::Running {
                up: 100 * S,
                reports: true,
                consuming: true,
                busy: true,
            },
        };
        let idle = running(1, true, 100 * S, true);
        let waiting = Seen {
            index: 0,
            old: true,
            state: WorkerState::Restarting,
        };
        let new = running(3, false, S, true);
        roll.started(3);
        assert_eq!(roll.next(&[waiting, idle, busy, new]), Step::Retire(0));
        roll.started(4);
        let new2 = running(4, false, S, true);
        assert_eq!(roll.next(&[idle, busy, new, new2]), Step::Retire(1));
        roll.started(5);
        let new3 = running(5, false, S, true);
        assert_eq!(roll.next(&[busy, new, new2, new3]), Step::Retire(2));
        assert_eq!(roll.next(&[new, new2, new3]), Step::Done);
        assert_eq!(roll.state, RollState::Done);
    }

    #[test]
    fn a_worker_that_reports_is_ready_only_once_it_consumes() {
        let mut roll = Roll::new(1, "test".into());
        let old = running(0, true, 100 * S, true);
        roll.started(1);
        let connecting = Seen {
            index: 1,
            old: false,
            state: WorkerState::Running {
                up: 10 * SETTLE,
                reports: true,
                consuming: false,
                busy: false,
            },
        };
        assert_eq!(roll.next(&[old, connecting]), Step::Wait);
        assert_eq!(
            roll.next(&[old, running(1, false, S, true)]),
            Step::Retire(0)
        );
    }

    #[test]
    fn a_surge_worker_scaled_away_is_started_again() {
        let mut roll = Roll::new(1, "test".into());
        let old = running(0, true, 100 * S, true);
        roll.started(1);
        assert_eq!(roll.next(&[old]), Step::Start);
    }
}
