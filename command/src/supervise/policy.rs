//! How many workers a stage should have on this box: a pure function of what
//! one poll saw, plus the time since the stage became over-provisioned.
//!
//! - backlog = ready messages (all boxes) + messages this box's workers hold;
//!   the stage wants `ceil(backlog / backlog_per_worker)` workers in all;
//! - every supervisor of the pipeline (their count is known through the
//!   broker) takes its share of the difference between that and the workers
//!   running now (the stage's consumers on other boxes plus this box's
//!   workers): up at once by `ceil(deficit / supervisors)`, down by
//!   `floor(surplus / supervisors)` only once the stage has been
//!   over-provisioned (or idle) for `scale.idle`; an idle stage (nothing
//!   ready or held) goes down to `scale.min` on every box;
//! - a box whose workers are still starting does not grow further: the
//!   workers the other boxes started at the same time are not consumers
//!   yet either, so the deficit it sees is not real (on a loaded machine a
//!   start takes seconds, and each box would add the others' share again);
//! - a queue with ready messages and no consumer anywhere wakes at least one
//!   worker (`min: 0` scales to zero and back);
//! - a failing stage (crash loop) never grows, and shrinks to `scale.min`
//!   (at least one worker, restarting with backoff, to notice recovery);
//! - a paused stage (`warren pause`: its workers report it) does not grow;
//! - a stage whose calls fail (a worker's circuit breaker is open: the
//!   service it calls is down) or whose workers the broker blocks (a memory
//!   or disk alarm) does not grow: more workers would not help;
//! - the result stays within `scale.min..=scale.max` and never below the
//!   workers of this box that hold messages.

use std::time::Duration;

use warren::pipeline::Scale;

/// What one poll saw of a stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Ready messages in the stage queue.
    pub ready: u64,
    /// Consumers of the stage queue, on every box.
    pub consumers: u32,
    /// Supervisors of the pipeline, this one included.
    pub supervisors: u32,
    /// This box's workers, running or starting.
    pub running: u32,
    /// Those of them that consume (a consumer the broker counts).
    pub consuming: u32,
    /// Those of them still starting: not consuming yet (a worker that
    /// does not report counts until it has run for the settle time).
    pub starting: u32,
    /// Those of them that hold messages.
    pub busy: u32,
    /// Messages this box's workers hold.
    pub in_flight: u64,
    /// The stage is in a crash loop.
    pub failed: bool,
    /// A worker of this box reports its circuit breaker open, or the broker
    /// blocking its publishing.
    pub held_back: bool,
}

/// What the policy remembers between polls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleState {
    /// Since when (time of the poll) the stage has had more workers than it
    /// wants, if it has.
    pub over_since: Option<Duration>,
}

/// The number of workers this box should run for the stage, at time `now`
/// (any monotonic clock; tests pass simulated time).
pub fn target(scale: &Scale, state: &mut ScaleState, seen: &Observation, now: Duration) -> u32 {
    let per_worker = u64::from(scale.backlog_per_worker.max(1));
    let backlog = seen.ready + seen.in_flight;
    let wanted = u32::try_from(backlog.div_ceil(per_worker)).unwrap_or(u32::MAX);
    let shares = seen.supervisors.max(1);
    let others = seen.consumers.saturating_sub(seen.consuming);
    let now_total = others + seen.running;

    let mut target = seen.running;
    if wanted > now_total {
        state.over_since = None;
        if seen.starting == 0 {
            target = seen.running + (wanted - now_total).div_ceil(shares);
        }
    } else if wanted < now_total {
        let since = *state.over_since.get_or_insert(now);
        if now.saturating_sub(since) >= scale.idle {
            // Nothing to do: every box sees it, and each goes down to its
            // minimum (a share of a surplus of 1 would be 0 for ever).
            let surplus = now_total - wanted;
            let cut = if wanted == 0 {
                seen.running
            } else {
                surplus / shares
            };
            target = seen.running.saturating_sub(cut);
            state.over_since = None;
        }
    } else {
        state.over_since = None;
    }
    if seen.ready > 0 && seen.consumers == 0 {
        target = target.max(1);
    }
    if seen.failed {
        // Keep probing with the fewest workers that still restart.
        target = target.min(scale.min.max(1));
    }
    if seen.held_back {
        target = target.min(seen.running);
    }
    target
        .clamp(scale.min, scale.max)
        .max(seen.busy.min(scale.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_whose_calls_fail_is_not_scaled_up_into_the_outage() {
        let mut state = ScaleState::default();
        let outage = Observation {
            held_back: true,
            ..alone(50_000, 1)
        };
        assert_eq!(target(&scale(1, 8), &mut state, &outage, SECOND), 1);
        // Once the calls work again, the backlog brings the workers.
        let recovered = alone(50_000, 1);
        assert_eq!(target(&scale(1, 8), &mut state, &recovered, 2 * SECOND), 8);
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn scale(min: u32, max: u32) -> Scale {
        Scale {
            min,
            max,
            backlog_per_worker: 100,
            idle: Duration::from_secs(30),
        }
    }

    /// One box alone, its workers all consuming.
    fn alone(ready: u64, running: u32) -> Observation {
        Observation {
            ready,
            consumers: running,
            supervisors: 1,
            running,
            consuming: running,
            ..Default::default()
        }
    }

    #[test]
    fn a_burst_scales_up_at_once_to_max() {
        let mut state = ScaleState::default();
        assert_eq!(target(&scale(1, 8), &mut state, &alone(0, 1), SECOND), 1);
        assert_eq!(
            target(&scale(1, 8), &mut state, &alone(5_000, 1), 2 * SECOND),
            8
        );
        assert_eq!(
            target(&scale(1, 8), &mut state, &alone(350, 1), 3 * SECOND),
            4
        );
    }

    #[test]
    fn a_steady_trickle_keeps_one_worker() {
        let mut state = ScaleState::default();
        for t in 0..600 {
            let seen = Observation {
                in_flight: 3,
                busy: 1,
                ..alone(20, 1)
            };
            assert_eq!(
                target(&scale(1, 8), &mut state, &seen, t * SECOND),
                1,
                "at {t}s"
            );
        }
    }

    #[test]
    fn draining_to_zero_scales_down_only_after_the_idle_time() {
        let s = scale(0, 8);
        let mut state = ScaleState::default();
        assert_eq!(target(&s, &mut state, &alone(800, 8), Duration::ZERO), 8);
        // Drained at t=10s: nothing changes for 30 s.
        for t in 10..40 {
            assert_eq!(
                target(&s, &mut state, &alone(0, 8), t * SECOND),
                8,
                "at {t}s"
            );
        }
        assert_eq!(target(&s, &mut state, &alone(0, 8), 40 * SECOND), 0);
        // And wakes as soon as a message arrives.
        assert_eq!(target(&s, &mut state, &alone(1, 0), 41 * SECOND), 1);
    }

    #[test]
    fn scaling_down_respects_min_and_busy_workers() {
        let mut state = ScaleState::default();
        let idle = Observation {
            busy: 3,
            in_flight: 3,
            ..alone(0, 6)
        };
        target(&scale(2, 8), &mut state, &idle, Duration::ZERO);
        // Wants 1 (3 in flight), but 3 workers still hold messages.
        assert_eq!(target(&scale(2, 8), &mut state, &idle, 31 * SECOND), 3);
        let quiet = alone(0, 6);
        target(&scale(2, 8), &mut state, &quiet, 40 * SECOND);
        assert_eq!(target(&scale(2, 8), &mut state, &quiet, 71 * SECOND), 2);
    }

    #[test]
    fn flapping_input_does_not_oscillate() {
        let s = scale(1, 8);
        let mut state = ScaleState::default();
        let mut running = 1;
        let mut changes = 0;
        for t in 0..300u32 {
            // 5 s of backlog, 5 s of nothing, over and over.
            let ready = if (t / 5) % 2 == 0 { 600 } else { 0 };
            let next = target(&s, &mut state, &alone(ready, running), t * SECOND);
            if next != running {
                changes += 1;
                running = next;
            }
        }
        assert_eq!(running, 6);
        assert_eq!(changes, 1, "it scaled up once and stayed");
    }

    #[test]
    fn a_crash_looping_stage_never_grows_and_shrinks_to_one_probe() {
        let mut state = ScaleState::default();
        let seen = Observation {
            failed: true,
            ..alone(10_000, 2)
        };
        assert_eq!(target(&scale(1, 8), &mut state, &seen, SECOND), 1);
        let seen = Observation {
            failed: true,
            ..alone(10_000, 0)
        };
        assert_eq!(
            target(&scale(0, 8), &mut state, &seen, SECOND),
            1,
            "one probe even with min 0"
        );
        let seen = Observation {
            failed: true,
            ..alone(10_000, 5)
        };
        assert_eq!(
            target(&scale(3, 8), &mut state, &seen, SECOND),
            3,
            "min still holds"
        );
    }

    #[test]
    fn several_supervisors_share_the_deficit() {
        let mut state = ScaleState::default();
        // 2 boxes, 1 worker each, 1000 ready: 10 wanted, 8 missing, 4 each.
        let seen = Observation {
            ready: 1_000,
            consumers: 2,
            supervisors: 2,
            running: 1,
            consuming: 1,
            ..Default::default()
        };
        assert_eq!(target(&scale(0, 20), &mut state, &seen, SECOND), 5);
    }

    /// Two boxes polling in turn, with workers that consume `delays[box]`
    /// polls after they start (a loaded machine starts them slowly): the
    /// total settles near what the backlog wants and never exceeds 1.5
    /// times it.
    fn two_boxes(delays: [u32; 2]) {
        let s = Scale {
            min: 0,
            max: 10,
            backlog_per_worker: 100,
            idle: Duration::from_secs(10),
        };
        let mut states = [ScaleState::default(); 2];
        // The poll at which each box's workers started, oldest first.
        let mut started: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let consuming = |b: usize, started: &[Vec<u32>; 2], t: u32| {
            started[b].iter().filter(|&&at| at + delays[b] <= t).count() as u32
        };
        let delay = delays[0].max(delays[1]);
        for t in 0..120u32 {
            let ready = if t < 60 { 1_200 } else { 0 };
            let desired = if t < 60 { 12 } else { 0 };
            for b in 0..2 {
                let consumers = consuming(0, &started, t) + consuming(1, &started, t);
                let running = started[b].len() as u32;
                let mine = consuming(b, &started, t);
                let seen = Observation {
                    ready,
                    consumers,
                    supervisors: 2,
                    running,
                    consuming: mine,
                    starting: running - mine,
                    ..Default::default()
                };
                let target = target(&s, &mut states[b], &seen, t * SECOND) as usize;
                started[b].resize(target.min(started[b].len()), 0);
                while started[b].len() < target {
                    started[b].push(t);
                }
            }
            let total = (started[0].len() + started[1].len()) as u32;
            if desired > 0 {
                assert!(
                    total * 2 <= desired * 3,
                    "delays {delays:?}: t={t}s total {total} desired {desired}"
                );
            }
            if (10 + 2 * delay..60).contains(&t) {
                assert!(
                    total >= desired,
                    "delays {delays:?}: t={t}s total {total} below {desired}"
                );
            }
        }
        assert_eq!(started[0].len() + started[1].len(), 0);
    }

    #[test]
    fn two_boxes_together_approach_the_desired_total() {
        for delays in [[1, 1], [2, 2], [5, 5], [10, 10], [1, 5], [5, 1], [2, 10]] {
            two_boxes(delays);
        }
    }

    #[test]
    fn a_box_with_workers_starting_does_not_grow_yet() {
        let mut state = ScaleState::default();
        let seen = Observation {
            ready: 1_000,
            consumers: 1,
            supervisors: 2,
            running: 4,
            consuming: 1,
            starting: 3,
            ..Default::default()
        };
        assert_eq!(target(&scale(0, 20), &mut state, &seen, SECOND), 4);
        let started = Observation {
            consumers: 4,
            consuming: 4,
            starting: 0,
            ..seen
        };
        assert_eq!(target(&scale(0, 20), &mut state, &started, 2 * SECOND), 7);
    }
}
