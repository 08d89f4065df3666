//! A pool's rolls (DESIGN.md, *Stage control*): started by a deploy (the
//! stage's program file changed, [`super::deploy`]) or by `warren
//! restart`, stepped at each tick by the pure [`Roll`].

use std::{path::Path, time::Instant};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{
    deploy,
    pool::{Pool, Slot, SlotState},
    process::{Environment, Exited},
    roll::{Roll, RollState, Seen, Step, WorkerState},
};

impl Pool {
    /// Starts rolling the stage's workers for `reason` (a roll under way
    /// starts over: every worker started before now is replaced).
    pub fn begin_roll(&mut self, reason: String) {
        self.generation += 1;
        let workers = self
            .slots
            .values()
            .filter(|s| !matches!(s.state, SlotState::Draining { .. }))
            .count();
        if workers == 0 {
            info!(stage = %self.stage.name, "{reason}: no worker to replace");
            self.roll = None;
            return;
        }
        info!(stage = %self.stage.name, "{reason}: replacing its {workers} workers one at a time");
        self.roll = Some(Roll::new(self.generation, reason));
    }

    /// A deploy: the stage's program files changed since the last polls.
    pub fn deployed(&mut self) -> bool {
        !self.files.is_empty() && self.watch.changed(deploy::prints(&self.files))
    }

    /// The stage's settings changed (SIGHUP): watch its files anew.
    pub fn refresh_files(&mut self, folder: &Path) {
        let files = deploy::files(&self.stage, folder);
        if files != self.files {
            self.watch = deploy::Watch::new(deploy::prints(&files));
            self.files = files;
        }
    }

    /// The roll's new worker in slot `index` exited after `ran`: it
    /// restarts with backoff, and a crash loop of the new program stops
    /// the roll.
    pub(super) fn surge_exited(
        &mut self,
        index: u32,
        now: Instant,
        ran: std::time::Duration,
        how: &str,
    ) {
        let rules = self.rules;
        let since = now - self.epoch;
        self.history.restarts += 1;
        let slot = self.slots.get_mut(&index).expect("slot");
        let roll = self.roll.as_mut().expect("a roll");
        let restart = roll.history.exited(&rules, since, ran, slot.quick_failures);
        slot.quick_failures += 1;
        warn!(stage = %self.stage.name, worker = index, "the new worker of the roll exited ({how}) after {:.1}s; restarting in {}s", ran.as_secs_f64(), restart.after.as_secs_f64());
        if restart.loop_started {
            let why = format!(
                "the new program exited {} times within {}s, last: {how}",
                rules.loop_exits,
                rules.loop_window.as_secs()
            );
            error!(stage = %self.stage.name, "ROLL STOPPED ({}): {why}; the old workers keep running; deploy a fixed program (or `warren restart`) to roll again", roll.reason);
            roll.stop(why);
            self.slots.remove(&index);
        } else {
            slot.state = SlotState::Restarting {
                at: now + restart.after,
            };
        }
    }

    /// One step (or a few) of the roll.
    pub(super) fn roll_tick(
        &mut self,
        now: Instant,
        env: &Environment,
        exits: &mpsc::UnboundedSender<Exited>,
    ) {
        for _ in 0..4 {
            let Some(roll) = self.roll.as_mut() else {
                return;
            };
            let generation = roll.generation;
            let seen: Vec<Seen> = self
                .slots
                .iter()
                .map(|(index, slot)| Seen {
                    index: *index,
                    old: slot.generation < generation,
                    state: match slot.state {
                        SlotState::Running { since, .. } => WorkerState::Running {
                            up: now - since,
                            reports: slot.reported,
                            consuming: slot.counts.consuming,
                            busy: slot.counts.in_flight > 0,
                        },
                        SlotState::Restarting { .. } => WorkerState::Restarting,
                        SlotState::Draining { .. } => WorkerState::Draining,
                    },
                })
                .collect();
            match roll.next(&seen) {
                Step::Wait => return,
                Step::Done => {
                    info!(stage = %self.stage.name, "roll done ({}): {} workers replaced", roll.reason, roll.replaced);
                    self.roll = None;
                    return;
                }
                Step::Start => {
                    let index = (0..)
                        .find(|i| !self.slots.contains_key(i))
                        .expect("a free index");
                    roll.started(index);
                    self.slots.insert(index, Slot::new(now, generation));
                    info!(stage = %self.stage.name, worker = index, "roll: starting a new worker");
                    self.start(index, now, env, exits);
                    return;
                }
                Step::Retire(index) => {
                    let waiting = matches!(
                        self.slots.get(&index).map(|s| &s.state),
                        Some(SlotState::Restarting { .. })
                    );
                    info!(stage = %self.stage.name, worker = index, "roll: the new worker is ready; draining an old one");
                    if waiting {
                        self.slots.remove(&index);
                    } else {
                        let deadline = now + self.grace();
                        self.drain(index, deadline);
                    }
                }
            }
        }
    }

    /// The roll in words for `warren status`; `None` without one.
    pub(super) fn describe_roll(&self) -> Option<String> {
        let roll = self.roll.as_ref()?;
        let old = self
            .slots
            .values()
            .filter(|s| {
                s.generation < roll.generation && !matches!(s.state, SlotState::Draining { .. })
            })
            .count() as u32;
        if roll.state == RollState::Done {
            return None;
        }
        roll.describe(old)
    }
}
