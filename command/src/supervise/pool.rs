//! The worker processes of one stage on this box: slots that run, wait to
//! restart, or drain.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rustix::process::Signal;
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use warren::{pipeline::Stage, report::StageCounts, running::Running, worker::GRACE_MARGIN};
use warren_ops::status::{ProcessStatus, StageState, StageStatus};

use super::{
    deploy::Watch,
    policy::{Observation, ScaleState},
    process::{self, Environment, Exited, Launch},
    restart::{History, RestartRules},
    roll::{Roll, SETTLE},
};

/// Extra time, beyond the worker's own grace period, before a draining
/// worker is killed.
const KILL_MARGIN: Duration = Duration::from_secs(5);

/// One stage's workers.
pub struct Pool {
    /// The stage's settings.
    pub stage: Stage,
    launch: Launch,
    pub(super) slots: BTreeMap<u32, Slot>,
    /// Exits and crash-loop state.
    pub history: History,
    /// What the scaling policy remembers.
    pub scale_state: ScaleState,
    /// The last target of the policy.
    pub target: u32,
    /// Counts of workers that have exited.
    finished: StageCounts,
    /// The stage was removed from the file: drain everything, then go.
    pub retiring: bool,
    pub(super) rules: RestartRules,
    /// When the supervisor started: the clock of the restart history.
    pub(super) epoch: Instant,
    /// How the last worker that exited unexpectedly ended, and its last
    /// lines of output.
    pub(super) last_exit: Option<String>,
    /// Workers started now are of this generation (a roll starts a new
    /// one).
    pub(super) generation: u64,
    /// The current (or last stopped) roll of its workers.
    pub(super) roll: Option<Roll>,
    /// The stage's program files (deploys).
    pub(super) files: Vec<std::path::PathBuf>,
    pub(super) watch: Watch,
}

pub(super) struct Slot {
    pub(super) state: SlotState,
    /// Exits in a row without a healthy run: one that lasted
    /// `healthy_after`, or that finished a message (its start succeeded; a
    /// worker killed later, by the OOM killer say, restarts after the first
    /// pause, as supervisord's `startsecs` has it).
    pub(super) quick_failures: u32,
    /// The worker's last report.
    pub(super) counts: StageCounts,
    /// The handlings running in it, as of its last report.
    pub(super) running: Vec<Running>,
    /// The pool's generation when it started.
    pub(super) generation: u64,
    /// The worker has reported to the supervisor's socket (it speaks the
    /// protocol: it is ready once it reports consuming).
    pub(super) reported: bool,
}

impl Slot {
    /// A worker's place, waiting for its process (to start at `at`).
    pub(super) fn new(at: Instant, generation: u64) -> Slot {
        Slot {
            state: SlotState::Restarting { at },
            quick_failures: 0,
            counts: StageCounts::default(),
            running: Vec::new(),
            generation,
            reported: false,
        }
    }

    /// Still starting at `now`: running but not consuming yet (a worker
    /// that does not report counts for the settle time, one that reports
    /// for at most `STARTING`). A slot waiting to restart after an exit
    /// is not: the crash-loop rule looks after it.
    fn starting(&self, now: Instant) -> bool {
        match self.state {
            SlotState::Running { since, .. } => {
                let up = now.saturating_duration_since(since);
                !self.counts.consuming && up < if self.reported { STARTING } else { SETTLE }
            }
            SlotState::Restarting { .. } | SlotState::Draining { .. } => false,
        }
    }
}

/// How long a worker that reports may take to consume before the scaling
/// policy stops waiting for it.
const STARTING: Duration = Duration::from_secs(15);

#[derive(Clone, Copy)]
pub(super) enum SlotState {
    Running {
        pid: u32,
        since: Instant,
    },
    Restarting {
        at: Instant,
    },
    Draining {
        pid: u32,
        deadline: Instant,
        killed: bool,
    },
}

impl Pool {
    /// A pool with no workers yet.
    pub fn new(
        stage: Stage,
        launch: Launch,
        rules: RestartRules,
        epoch: Instant,
        folder: &std::path::Path,
    ) -> Pool {
        let files = super::deploy::files(&stage, folder);
        let watch = Watch::new(super::deploy::prints(&files));
        Pool {
            stage,
            launch,
            slots: BTreeMap::new(),
            history: History::default(),
            scale_state: ScaleState::default(),
            target: 0,
            finished: StageCounts::default(),
            retiring: false,
            rules,
            epoch,
            last_exit: None,
            generation: 0,
            roll: None,
            files,
            watch,
        }
    }

    /// Time a draining worker gets before SIGKILL: its own grace period
    /// (the stage timeout plus a margin) and a little more.
    pub fn grace(&self) -> Duration {
        self.stage.timeout + GRACE_MARGIN + KILL_MARGIN
    }

    /// Running or restarting workers (the ones that count).
    /// A new worker of a roll that is not ready yet does not count.
    pub fn active(&self) -> u32 {
        let surge = self.surge();
        self.slots
            .iter()
            .filter(|(i, s)| !matches!(s.state, SlotState::Draining { .. }) && Some(**i) != surge)
            .count() as u32
    }

    /// The new worker of the current roll, not ready yet.
    pub(super) fn surge(&self) -> Option<u32> {
        self.roll.as_ref().and_then(Roll::surge)
    }

    /// True when no process is left.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// This box's part of a policy observation, at `now`.
    pub fn observe(&self, observation: &mut Observation, now: Instant) {
        let surge = self.surge();
        for (index, slot) in &self.slots {
            if matches!(slot.state, SlotState::Draining { .. }) || Some(*index) == surge {
                continue;
            }
            observation.running += 1;
            observation.consuming += u32::from(slot.counts.consuming);
            observation.starting += u32::from(slot.starting(now));
            observation.busy += u32::from(slot.counts.in_flight > 0);
            observation.in_flight += slot.counts.in_flight;
            observation.held_back |=
                slot.counts.breaker_open || slot.counts.blocked || slot.counts.paused;
        }
        observation.failed = self.history.failed;
    }

    /// Starts or drains workers to reach `target`.
    pub fn reconcile(
        &mut self,
        target: u32,
        now: Instant,
        env: &Environment,
        exits: &mpsc::UnboundedSender<Exited>,
    ) {
        self.target = target;
        let active = self.active();
        if target > active {
            for _ in active..target {
                let index = (0..)
                    .find(|i| !self.slots.contains_key(i))
                    .expect("a free index");
                self.slots.insert(index, Slot::new(now, self.generation));
                self.start(index, now, env, exits);
            }
            info!(stage = %self.stage.name, from = active, to = target, "scaling up");
        } else if target < active {
            self.stop(active - target, now);
            info!(stage = %self.stage.name, from = active, to = target, "scaling down (draining)");
        }
    }

    /// Drains `count` workers: waiting restarts first, then idle workers,
    /// highest index first.
    fn stop(&mut self, count: u32, now: Instant) {
        let mut left = count;
        let surge = self.surge();
        let waiting: Vec<u32> = self
            .slots
            .iter()
            .filter(|(i, _)| Some(**i) != surge)
            .filter(|(_, s)| matches!(s.state, SlotState::Restarting { .. }))
            .map(|(i, _)| *i)
            .collect();
        for index in waiting.into_iter().rev() {
            if left == 0 {
                return;
            }
            self.slots.remove(&index);
            left -= 1;
        }
        let mut running: Vec<(bool, u32)> = self
            .slots
            .iter()
            .filter(|(i, s)| matches!(s.state, SlotState::Running { .. }) && Some(**i) != surge)
            .map(|(i, s)| (s.counts.in_flight > 0, *i))
            .collect();
        // Idle ones first, then the highest index.
        running.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let deadline = now + self.grace();
        for (_, index) in running.into_iter().take(left as usize) {
            self.drain(index, deadline);
        }
    }

    /// Sends SIGTERM to the worker of slot `index` (if it runs).
    pub(super) fn drain(&mut self, index: u32, deadline: Instant) {
        let slot = self.slots.get_mut(&index).expect("slot");
        if let SlotState::Running { pid, .. } = slot.state {
            process::signal_group(pid, Signal::TERM);
            slot.state = SlotState::Draining {
                pid,
                deadline,
                killed: false,
            };
        }
    }

    /// Drains every worker (shutdown, a removed stage, a changed command).
    pub fn drain_all(&mut self, now: Instant) {
        self.roll = None;
        let active = self.active();
        self.stop(active, now);
    }

    pub(super) fn start(
        &mut self,
        index: u32,
        now: Instant,
        env: &Environment,
        exits: &mpsc::UnboundedSender<Exited>,
    ) {
        let stage = self.stage.name.clone();
        let share = 1.0 / f64::from(self.target.max(1));
        match process::spawn(&self.launch, env, &stage, index, share, exits.clone()) {
            Ok(pid) => {
                let slot = self.slots.get_mut(&index).expect("slot");
                slot.state = SlotState::Running { pid, since: now };
                slot.counts = StageCounts::default();
                slot.running.clear();
                slot.reported = false;
                slot.generation = self.generation;
            }
            Err(error) => {
                error!(%stage, worker = index, "{error}");
                self.failed_start(index, now, Duration::ZERO);
            }
        }
    }

    /// Restarts due workers, kills workers that outstayed their grace
    /// period, and ends a crash loop after a healthy run.
    pub fn tick(&mut self, now: Instant, env: &Environment, exits: &mpsc::UnboundedSender<Exited>) {
        let rules = self.rules;
        let due: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::Restarting { at } if at <= now))
            .map(|(i, _)| *i)
            .collect();
        for index in due {
            if !self.retiring {
                self.start(index, now, env, exits);
            }
        }
        for (index, slot) in &mut self.slots {
            match &mut slot.state {
                SlotState::Draining {
                    pid,
                    deadline,
                    killed,
                } if !*killed && now >= *deadline => {
                    warn!(stage = %self.stage.name, worker = index, "still running after its grace period; killing it");
                    process::signal_group(*pid, Signal::KILL);
                    *killed = true;
                }
                SlotState::Running { since, .. } => {
                    let ran = now - *since;
                    if ran >= rules.healthy_after {
                        slot.quick_failures = 0;
                    }
                    if self.history.running(&rules, ran) {
                        info!(stage = %self.stage.name, "recovered: a worker has run for {}s", ran.as_secs());
                    }
                }
                _ => {}
            }
        }
        if !self.retiring {
            self.roll_tick(now, env, exits);
        }
    }

    /// A process ended. Returns false if it was not one of this pool's.
    pub fn exited(&mut self, exit: &Exited, now: Instant, stopping: bool) -> bool {
        let Some((&index, slot)) = self.slots.iter_mut().find(|(_, s)| match s.state {
            SlotState::Running { pid, .. } | SlotState::Draining { pid, .. } => pid == exit.pid,
            SlotState::Restarting { .. } => false,
        }) else {
            return false;
        };
        // Its totals move to `finished`: not counted twice while the slot
        // waits to restart, nor its handlings shown as running.
        self.finished.add_totals(&std::mem::take(&mut slot.counts));
        slot.running.clear();
        let state = slot.state;
        match state {
            SlotState::Draining { .. } => {
                info!(stage = %self.stage.name, worker = index, "worker stopped ({})", exit.how);
                self.slots.remove(&index);
            }
            SlotState::Running { .. } if stopping || self.retiring => {
                self.slots.remove(&index);
            }
            SlotState::Running { since, .. } if self.surge() == Some(index) => {
                self.last_exit = Some(exit.how.clone());
                self.surge_exited(index, now, now - since, &exit.how);
            }
            SlotState::Running { since, .. } => {
                let ran = now - since;
                warn!(stage = %self.stage.name, worker = index, "worker exited unexpectedly ({}) after {:.1}s", exit.how, ran.as_secs_f64());
                self.last_exit = Some(exit.how.clone());
                if exit.misconfigured && self.history.misconfigured() {
                    error!(stage = %self.stage.name, "STAGE FAILING: its worker exited saying its setup is wrong ({}); it restarts with backoff until that is fixed", exit.how);
                }
                self.failed_start(index, now, ran);
            }
            SlotState::Restarting { .. } => {}
        }
        true
    }

    /// Schedules the restart of slot `index`, whose worker ran for `ran`.
    fn failed_start(&mut self, index: u32, now: Instant, ran: Duration) {
        let rules = self.rules;
        let slot = self.slots.get_mut(&index).expect("slot");
        let restart = self
            .history
            .exited(&rules, now - self.epoch, ran, slot.quick_failures);
        slot.quick_failures = if ran >= rules.healthy_after {
            1
        } else {
            slot.quick_failures + 1
        };
        slot.state = SlotState::Restarting {
            at: now + restart.after,
        };
        if restart.loop_started {
            error!(
                stage = %self.stage.name,
                "STAGE FAILING: its workers exited {} times within {}s; it will not be scaled up, and restarts continue every {}s at most until a worker runs for {}s",
                rules.loop_exits,
                rules.loop_window.as_secs(),
                rules.max_pause.as_secs(),
                rules.healthy_after.as_secs()
            );
        } else {
            info!(stage = %self.stage.name, worker = index, "restarting in {}s", restart.after.as_secs_f64());
        }
    }

    /// Records a worker's report.
    pub fn report(&mut self, pid: u32, counts: StageCounts, running: Vec<Running>) -> bool {
        for slot in self.slots.values_mut() {
            if let SlotState::Running { pid: p, .. } | SlotState::Draining { pid: p, .. } =
                slot.state
                && p == pid
            {
                if counts.done > 0 {
                    slot.quick_failures = 0;
                }
                slot.counts = counts;
                slot.running = running;
                slot.reported = true;
                return true;
            }
        }
        false
    }

    /// Totals: in flight now, and done, retried, dead since the start.
    pub fn counts(&self) -> StageCounts {
        let mut total = self.finished;
        for slot in self.slots.values() {
            total.in_flight += slot.counts.in_flight;
            total.add_totals(&slot.counts);
        }
        total
    }

    /// Replaces the stage's settings. Workers keep running unless what they
    /// run changed (returns true then: the caller drains them).
    pub fn update(&mut self, stage: Stage, launch: Launch) -> bool {
        let restart = launch != self.launch
            || Stage {
                scale: self.stage.scale,
                ..stage.clone()
            } != self.stage;
        self.stage = stage;
        self.launch = launch;
        restart
    }

    /// The stage as `warren status` shows it.
    pub fn status(&self) -> StageStatus {
        let processes = self
            .slots
            .iter()
            .map(|(index, slot)| {
                let (pid, state, started_ms) = match slot.state {
                    SlotState::Running { pid, since } => (
                        pid,
                        "running",
                        warren::message::epoch_ms()
                            .saturating_sub(since.elapsed().as_millis() as u64),
                    ),
                    SlotState::Draining { pid, .. } => (pid, "draining", 0),
                    SlotState::Restarting { .. } => (0, "restarting", 0),
                };
                ProcessStatus {
                    index: *index,
                    pid,
                    state: state.into(),
                    started_ms,
                    counts: slot.counts,
                    running: slot.running.clone(),
                }
            })
            .collect();
        let running = || {
            self.slots
                .values()
                .filter(|s| matches!(s.state, SlotState::Running { .. }))
        };
        let state = if self.retiring {
            StageState::Stopping
        } else if self.history.failed {
            StageState::Failing
        } else if running().any(|s| s.counts.paused) {
            StageState::Paused
        } else if running().any(|s| s.counts.blocked) {
            StageState::Blocked
        } else if running().any(|s| s.counts.breaker_open) {
            StageState::CallsFailing
        } else {
            StageState::Running
        };
        StageStatus {
            name: self.stage.name.clone(),
            state,
            workers: self
                .slots
                .values()
                .filter(|s| matches!(s.state, SlotState::Running { .. }))
                .count() as u32,
            target: self.target,
            restarts: self.history.restarts,
            last_exit: self.last_exit.clone(),
            deploy: self.describe_roll(),
            counts: self.counts(),
            processes,
        }
    }
}
