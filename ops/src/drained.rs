//! Is a pipeline done? Every stage queue and retry queue empty, and nothing
//! in flight, seen for long enough.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use warren::{Pipeline, Topology, names};

use crate::{
    management::Management,
    monitor::Monitor,
    status::StageStatus,
    view::{self, Look},
};

/// What is left of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Left {
    /// Stage name.
    pub stage: String,
    /// Ready in the stage queue.
    pub ready: u64,
    /// Waiting in its retry queues.
    pub retrying: u64,
    /// Delivered and not acknowledged (or being handled).
    pub in_flight: u64,
    /// The management API counted what is in flight, and its figures for
    /// the stage queue are missing or older than the broker's live count
    /// of ready messages: what they say is not known yet.
    pub unsure: bool,
}

impl Left {
    /// Messages left in all.
    pub fn total(&self) -> u64 {
        self.ready + self.retrying + self.in_flight
    }
}

/// What this box's workers of one stage last reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// Messages they are handling.
    pub in_flight: u64,
    /// Workers consuming the stage queue.
    pub consuming: u32,
    /// One of them holds deliveries back: its breaker is open, the broker
    /// blocks its publishing or the stage is paused (what it prefetched
    /// waits in it).
    pub held_back: bool,
    /// When the oldest of their last reports was taken (milliseconds since
    /// the epoch; 0 when a worker has not reported, or does not say when);
    /// `None` without workers.
    pub oldest_report_ms: Option<u64>,
}

impl Local {
    /// Adds one supervisor's workers of a stage.
    pub fn add(&mut self, stage: &StageStatus) {
        self.in_flight += stage.counts.in_flight;
        for process in stage.processes.iter().filter(|p| p.pid != 0) {
            let counts = &process.counts;
            self.consuming += u32::from(counts.consuming);
            self.held_back |= counts.breaker_open || counts.blocked || counts.paused;
            self.oldest_report_ms = Some(
                self.oldest_report_ms
                    .map_or(counts.at_ms, |oldest| oldest.min(counts.at_ms)),
            );
        }
    }

    /// [`Local::add`] for every stage of `stages`, by stage name.
    pub fn add_all(locals: &mut HashMap<String, Local>, stages: &[StageStatus]) {
        for stage in stages {
            locals.entry(stage.name.clone()).or_default().add(stage);
        }
    }
}

/// Looks at a pipeline's queues.
pub struct Watcher {
    pipeline: Pipeline,
    /// The pipeline's queues and their names (planned once).
    topology: Topology,
    queue_names: Vec<String>,
    monitor: Monitor,
    management: Management,
    /// The last look needed the management API and it did not answer.
    pub management_missing: bool,
    /// Since when every look found nothing left.
    streak: Option<Streak>,
    /// How the last look counted what is in flight.
    last: Counted,
}

/// How a look counted what is in flight.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    /// From the workers' reports alone (not the management API).
    by_reports: bool,
    /// The oldest of those reports (milliseconds since the epoch).
    oldest_report_ms: Option<u64>,
}

/// A run of looks that found nothing left.
#[derive(Clone, Copy, Debug)]
struct Streak {
    since: Instant,
    /// Since when its looks, up to the last, were decided by the workers'
    /// reports alone (a look through the management API ends that run; the
    /// first looks of a run often come before the workers' first reports).
    reports: Option<Moment>,
}

impl Streak {
    /// Notes a look at `now`, decided by the workers' reports or not.
    fn note(&mut self, by_reports: bool, now: Moment) {
        self.reports = match self.reports {
            Some(run) if by_reports => Some(run),
            None if by_reports => Some(now),
            _ => None,
        };
    }
}

/// A moment on the clock of the looks and on the workers' clock.
#[derive(Clone, Copy, Debug)]
struct Moment {
    at: Instant,
    /// The same moment in milliseconds since the epoch (the clock of the
    /// workers' reports).
    at_ms: u64,
}

impl Moment {
    fn now() -> Moment {
        Moment {
            at: Instant::now(),
            at_ms: warren::message::epoch_ms(),
        }
    }
}

/// How long the pipeline must look empty when the management API counted
/// what is in flight: two of its 5 s samples (RabbitMQ's
/// `collect_statistics_interval`), as it can lag by more than one, so a
/// message a consumer took just after the last figures is not missed.
const SETTLE: Duration = Duration::from_secs(10);

/// How long it must look empty when every consumer is one of this box's
/// workers (whose reports count what they hold)...
const SETTLE_BY_REPORTS: Duration = Duration::from_millis(1500);

/// ... and every one of them must have reported this long after the
/// pipeline first looked empty, so no report is older than the looks.
const FRESH: u64 = 500;

/// The rule, apart from the clock: empty for [`SETTLE`] whoever counted;
/// or, since the workers' reports decide, empty for [`SETTLE_BY_REPORTS`]
/// with every report taken well after they began to decide (a worker whose
/// report is late holds the decision back).
fn settled_at(streak: &Streak, now: Instant, oldest_report_ms: Option<u64>) -> bool {
    if now.saturating_duration_since(streak.since) >= SETTLE {
        return true;
    }
    streak.reports.is_some_and(|run| {
        now.saturating_duration_since(run.at) >= SETTLE_BY_REPORTS
            && oldest_report_ms.is_none_or(|oldest| oldest >= run.at_ms + FRESH)
    })
}

impl Watcher {
    /// A watcher of `pipeline`.
    pub fn new(pipeline: &Pipeline) -> Watcher {
        let topology = Topology::plan(pipeline);
        Watcher {
            queue_names: topology.looked_at(),
            topology,
            monitor: Monitor::new(pipeline.broker.urls.clone(), &pipeline.name, "drain", false),
            management: Management::for_broker(&pipeline.broker.urls),
            pipeline: pipeline.clone(),
            management_missing: false,
            streak: None,
            last: Counted::default(),
        }
    }

    /// What is left per stage, with `local` (what this box's workers last
    /// reported). Messages delivered and not yet acknowledged are counted
    /// from the workers' reports when every consumer of every stage queue is
    /// one of those workers, and from the management API otherwise (its
    /// figures are up to 5 s old). `None` when the broker cannot be reached.
    pub async fn look(&mut self, local: &HashMap<String, Local>) -> Option<Vec<Left>> {
        let mut look = Look {
            queues: Some(self.monitor.queues(&self.queue_names).await?),
            ..Default::default()
        };
        let local_of = |stage: &str| local.get(stage).copied().unwrap_or_default();
        let by_reports = view::view(&self.pipeline, &self.topology, &look)
            .iter()
            .all(|stage| {
                let local = local_of(&stage.stage);
                stage.consumers <= local.consuming
                    && !local.held_back
                    && local.oldest_report_ms != Some(0)
            });
        if !by_reports {
            look.sampled = self
                .management
                .figures(&names::prefix(&self.pipeline.name))
                .await;
            self.management_missing = look.sampled.is_none();
        }
        self.last = Counted {
            by_reports,
            oldest_report_ms: local.values().filter_map(|l| l.oldest_report_ms).min(),
        };
        let left = view::view(&self.pipeline, &self.topology, &look)
            .into_iter()
            .map(|stage| {
                let sampled = look.sampled.as_ref().map(|figures| {
                    figures.get(&names::stage_queue(&self.pipeline.name, &stage.stage))
                });
                Left {
                    in_flight: local_of(&stage.stage).in_flight.max(stage.in_flight),
                    // The management API's figures are older than the
                    // broker's live count of ready messages.
                    unsure: sampled.is_some_and(|f| f.map(|f| f.ready) != Some(stage.ready)),
                    ready: stage.ready,
                    // Isolated messages wait their turn like retries do.
                    retrying: stage.retrying + stage.isolated,
                    stage: stage.stage,
                }
            })
            .collect();
        Some(left)
    }

    /// True when `left` (the last look) is empty and every look was for
    /// long enough (see [`settled_at`]).
    pub fn settled(&mut self, left: &[Left]) -> bool {
        if left.iter().any(|l| l.total() > 0 || l.unsure) {
            self.streak = None;
            return false;
        }
        let Counted {
            by_reports,
            oldest_report_ms,
        } = self.last;
        let now = Moment::now();
        let streak = self.streak.get_or_insert(Streak {
            since: now.at,
            reports: None,
        });
        streak.note(by_reports, now);
        settled_at(streak, now.at, oldest_report_ms)
    }

    /// Closes the connection.
    pub async fn close(&mut self) {
        self.monitor.close().await;
    }
}

/// `stage: 3 ready, 1 retrying, 2 in flight` for the stages with something.
pub fn describe(left: &[Left]) -> String {
    let busy: Vec<String> = left
        .iter()
        .filter(|l| l.total() > 0 || l.unsure)
        .map(|l| {
            let unsure = if l.unsure {
                " (the management API's figures are not current yet)"
            } else {
                ""
            };
            format!(
                "{}: {} ready, {} retrying, {} in flight{unsure}",
                l.stage, l.ready, l.retrying, l.in_flight
            )
        })
        .collect();
    if busy.is_empty() {
        "nothing left".into()
    } else {
        busy.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streak that began at `since`, its looks decided by the reports
    /// from `reports_after` on (milliseconds later), if ever.
    fn streak(reports_after: Option<u64>) -> (Streak, Instant) {
        let since = Instant::now();
        let streak = Streak {
            since,
            reports: reports_after.map(|ms| Moment {
                at: since + Duration::from_millis(ms),
                at_ms: 1_000_000 + ms,
            }),
        };
        (streak, since)
    }

    #[test]
    fn reports_decide_once_every_worker_reported_after_it_looked_empty() {
        let (streak, since) = streak(Some(0));
        let at = |ms: u64| since + Duration::from_millis(ms);
        // Long enough, but one worker's last report is from before.
        assert!(!settled_at(&streak, at(3000), Some(999_000)));
        assert!(!settled_at(&streak, at(3000), Some(1_000_400)));
        // Fresh reports, but not empty for long enough yet.
        assert!(!settled_at(&streak, at(1400), Some(1_000_600)));
        assert!(settled_at(&streak, at(1500), Some(1_000_500)));
        // No workers on this box: the time alone.
        assert!(settled_at(&streak, at(1500), None));
    }

    #[test]
    fn the_management_api_needs_the_longer_wait() {
        let (streak, since) = streak(None);
        let at = |ms: u64| since + Duration::from_millis(ms);
        assert!(!settled_at(&streak, at(9500), Some(2_000_000)));
        assert!(settled_at(&streak, at(10_000), Some(0)));
    }

    #[test]
    fn reports_that_begin_to_decide_late_count_from_then() {
        // The first looks came before the workers' first reports (the
        // management API counted); from 2 s on the reports decide.
        let (streak, since) = streak(Some(2000));
        let at = |ms: u64| since + Duration::from_millis(ms);
        assert!(!settled_at(&streak, at(3000), Some(1_002_600)));
        assert!(
            !settled_at(&streak, at(3500), Some(1_002_400)),
            "a report from before they decided"
        );
        assert!(settled_at(&streak, at(3500), Some(1_002_500)));
    }

    #[test]
    fn a_look_through_the_management_api_ends_the_run_of_reports() {
        let (mut streak, since) = streak(None);
        let moment = |ms: u64| Moment {
            at: since + Duration::from_millis(ms),
            at_ms: 1_000_000 + ms,
        };
        streak.note(true, moment(1000));
        streak.note(true, moment(2000));
        assert_eq!(streak.reports.map(|r| r.at_ms), Some(1_001_000));
        assert!(settled_at(
            &streak,
            since + Duration::from_millis(2600),
            None
        ));
        streak.note(false, moment(3000));
        assert!(streak.reports.is_none());
        assert!(!settled_at(&streak, since + Duration::from_secs(5), None));
        streak.note(true, moment(6000));
        assert_eq!(streak.reports.map(|r| r.at_ms), Some(1_006_000));
    }

    #[test]
    fn local_counts_add_up_over_supervisors_and_keep_the_oldest_report() {
        use crate::status::ProcessStatus;
        use warren::report::StageCounts;
        let process = |pid, in_flight, at_ms, blocked| ProcessStatus {
            pid,
            counts: StageCounts {
                in_flight,
                consuming: pid != 3,
                blocked,
                at_ms,
                ..Default::default()
            },
            ..Default::default()
        };
        let stage = |processes: Vec<ProcessStatus>| StageStatus {
            name: "work".into(),
            counts: StageCounts {
                in_flight: processes.iter().map(|p| p.counts.in_flight).sum(),
                ..Default::default()
            },
            processes,
            ..Default::default()
        };
        let mut locals = HashMap::new();
        Local::add_all(
            &mut locals,
            &[stage(vec![
                process(1, 2, 700, false),
                process(0, 0, 0, false),
            ])],
        );
        Local::add_all(&mut locals, &[stage(vec![process(3, 1, 500, false)])]);
        assert_eq!(
            locals["work"],
            Local {
                in_flight: 3,
                consuming: 1,
                held_back: false,
                oldest_report_ms: Some(500),
            },
            "a restarting slot (pid 0) is not a worker"
        );
        Local::add_all(&mut locals, &[stage(vec![process(4, 0, 900, true)])]);
        assert!(locals["work"].held_back);
    }
}
