//! `GET /metrics` (DESIGN.md, *HTTP*): the figures of the last look, in
//! Prometheus' text format, encoded by `prometheus-client` from a snapshot
//! on each scrape. A refresher fills the snapshot every second: queue
//! depths, dead letters and consumers from the broker (every box); messages,
//! timings, in-flight counts, open breakers, crash loops, restarts, blocked
//! publishing, callbacks and schedule ticks from the supervisors of this box
//! (their workers' and keepers' reports); job counts from the job store.
//! The HTTP requests are counted as they are answered. Every series carries
//! the `pipeline` label and exists, at 0, from the start; each help text
//! says whether it counts the whole broker or this box.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use warren::{
    jobs::JobState,
    timings::{self, Bounds, Histogram},
};
use warren_ops::{jobs::store::COUNTED, status::StageState};

/// What `/metrics` shows of one stage: its view ([`warren_ops::view`]).
pub type StageFigures = warren_ops::view::StageView;

/// Everything `/metrics` shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The pipeline's name: the `pipeline` label of every series.
    pub pipeline: String,
    /// Per stage, every stage of the pipeline.
    pub stages: BTreeMap<String, StageFigures>,
    /// The broker blocks publishing of a worker of this box.
    pub broker_blocked: bool,
    /// Jobs per state, on a tracked pipeline.
    pub jobs: Vec<(JobState, u64)>,
    /// Ticks fired per schedule by the job keeper of this box's
    /// supervisors, since each took over.
    pub schedule_ticks: BTreeMap<String, u64>,
    /// Callbacks delivered and callback attempts failed by the job keeper
    /// of this box's supervisors, since each took over.
    pub callbacks: Callbacks,
    /// HTTP requests answered, per route template and status code.
    pub http_requests: BTreeMap<(String, u16), u64>,
}

/// What the job keepers of this box's supervisors did with callbacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callbacks {
    /// Answered with a 2xx.
    pub delivered: u64,
    /// Attempts that failed (each attempt counts).
    pub failed: u64,
}

impl Snapshot {
    /// A snapshot of `pipeline` with every stage at 0.
    pub fn empty(pipeline: &str, stages: &[&str]) -> Snapshot {
        Snapshot {
            pipeline: pipeline.to_string(),
            stages: stages
                .iter()
                .map(|s| (s.to_string(), StageFigures::default()))
                .collect(),
            jobs: COUNTED.iter().map(|state| (*state, 0)).collect(),
            ..Snapshot::default()
        }
    }

    /// The snapshot with every schedule's ticks at 0.
    pub fn with_schedules(mut self, schedules: &[&str]) -> Snapshot {
        self.schedule_ticks = schedules.iter().map(|s| (s.to_string(), 0)).collect();
        self
    }

    /// Counts one answered HTTP request.
    pub fn answered(&mut self, route: &str, code: u16) {
        *self
            .http_requests
            .entry((route.to_string(), code))
            .or_default() += 1;
    }
}

/// The snapshot, shared with the refresher.
pub type Shared = Arc<Mutex<Snapshot>>;

/// The registry that encodes the snapshots of `shared` (one per pipeline
/// served) on each scrape.
pub fn registry(shared: Vec<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures(shared)));
    registry
}

/// The page.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String does not fail");
    text
}

#[derive(Debug)]
struct Figures(Vec<Shared>);

/// A series' labels: `pipeline` first, then its own.
type Labels = Vec<(&'static str, String)>;

/// The labels of a series of `snapshot`'s pipeline: `pipeline`, then `more`.
fn labels(snapshot: &Snapshot, more: &[(&'static str, &str)]) -> Labels {
    std::iter::once(("pipeline", snapshot.pipeline.clone()))
        .chain(more.iter().map(|(k, v)| (*k, v.to_string())))
        .collect()
}

/// One series per stage of every snapshot: what `f` reads in its figures.
fn per_stage<T>(snapshots: &[Snapshot], f: impl Fn(&StageFigures) -> T) -> Vec<(Labels, T)> {
    each(snapshots, |snapshot| {
        snapshot
            .stages
            .iter()
            .map(|(s, fig)| (labels(snapshot, &[("stage", s)]), f(fig)))
            .collect()
    })
}

/// One series per snapshot, of what `f` reads in it (with its labels).
fn each<T>(snapshots: &[Snapshot], f: impl Fn(&Snapshot) -> Vec<(Labels, T)>) -> Vec<(Labels, T)> {
    snapshots.iter().flat_map(f).collect()
}

/// One figure of a stage.
type Figure = dyn Fn(&StageFigures) -> u64;

/// Writes one family: its descriptor, then each series with its labels.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, n) in series {
        let family = metric.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*n).encode(family)?,
            _ => ConstGauge::new(*n as i64).encode(family)?,
        }
    }
    Ok(())
}

/// Writes one histogram family.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &Bounds,
    series: &[(Labels, Histogram)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        metric
            .encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum_seconds(),
                h.count,
                &h.per_bucket(bounds),
                None,
            )?;
    }
    Ok(())
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let snapshots: Vec<Snapshot> = self
            .0
            .iter()
            .map(|shared| shared.lock().expect("metrics").clone())
            .collect();
        let messages = each(&snapshots, |snapshot| {
            let mut messages = Vec::new();
            for (stage, figures) in &snapshot.stages {
                let c = &figures.counts;
                for (outcome, n) in [
                    ("done", c.done),
                    ("retried", c.retried),
                    ("dead", c.dead),
                    ("cancelled", c.cancelled),
                ] {
                    messages.push((
                        labels(snapshot, &[("stage", stage), ("outcome", outcome)]),
                        n,
                    ));
                }
            }
            messages
        });
        // prometheus-client adds `_total` to a counter's name.
        family(
            &mut encoder,
            "warren_messages",
            "Messages handled by this box's workers, by outcome (done, retried, dead; cancelled: acknowledged unhandled, their job cancelled).",
            Counter,
            &messages,
        )?;
        histogram(
            &mut encoder,
            "warren_handle_seconds",
            "How long handlings took (this box's workers).",
            &timings::HANDLE,
            &per_stage(&snapshots, |f| f.counts.handle),
        )?;
        histogram(
            &mut encoder,
            "warren_queue_wait_seconds",
            "How long messages waited in the queue before a worker of this box took them, from their timestamp (whole seconds).",
            &timings::QUEUE_WAIT,
            &per_stage(&snapshots, |f| f.counts.queue_wait),
        )?;
        let gauges: [(&str, &str, &Figure); 8] = [
            (
                "warren_in_flight",
                "Deliveries not yet acknowledged (every box when the management API answers, else this box).",
                &|f| f.in_flight,
            ),
            (
                "warren_queue_ready",
                "Ready messages in the stage queue (broker: every box).",
                &|f| f.ready,
            ),
            (
                "warren_retrying",
                "Messages waiting in the stage's retry queues for their next attempt (broker: every box).",
                &|f| f.retrying,
            ),
            (
                "warren_dead_letters",
                "Messages in the stage's dead-letter queue (broker: every box).",
                &|f| f.dead,
            ),
            (
                "warren_workers",
                "Consumers of the stage queue (broker: every box).",
                &|f| u64::from(f.consumers),
            ),
            (
                "warren_breaker_open",
                "1 while a worker of this box has the stage's circuit breaker open.",
                &|f| u64::from(f.counts.breaker_open),
            ),
            (
                "warren_paused",
                "1 while an operator paused the stage (warren pause; every box, from the broker). A stage paused by its circuit breaker shows in warren_breaker_open.",
                &|f| u64::from(f.paused),
            ),
            (
                "warren_stage_failing",
                "1 while the stage's workers on this box crash-loop (they exit soon after they start; the supervisor backs off).",
                &|f| u64::from(f.state == Some(StageState::Failing)),
            ),
        ];
        for (name, help, value) in gauges {
            family(
                &mut encoder,
                name,
                help,
                Gauge,
                &per_stage(&snapshots, value),
            )?;
        }
        family(
            &mut encoder,
            "warren_worker_restarts",
            "Unexpected exits of the stage's workers on this box, since their supervisors started.",
            Counter,
            &per_stage(&snapshots, |f| u64::from(f.restarts)),
        )?;
        family(
            &mut encoder,
            "warren_broker_blocked",
            "1 while the broker blocks publishing of a worker of this box.",
            Gauge,
            &each(&snapshots, |snapshot| {
                vec![(labels(snapshot, &[]), u64::from(snapshot.broker_blocked))]
            }),
        )?;
        let jobs = each(&snapshots, |snapshot| {
            snapshot
                .jobs
                .iter()
                .map(|(state, n)| {
                    let name = serde_json::to_value(state).expect("a state is JSON");
                    (
                        labels(snapshot, &[("state", name.as_str().unwrap_or("?"))]),
                        *n,
                    )
                })
                .collect()
        });
        family(
            &mut encoder,
            "warren_jobs",
            "Jobs of a tracked pipeline per state, as this box's job store knows them.",
            Gauge,
            &jobs,
        )?;
        family(
            &mut encoder,
            "warren_callbacks",
            "Job callbacks by outcome (delivered: answered 2xx; failed: an attempt that failed, tried again later), by the job keeper of this box's supervisors since it took over.",
            Counter,
            &each(&snapshots, |snapshot| {
                let callbacks = snapshot.callbacks;
                vec![
                    (
                        labels(snapshot, &[("outcome", "delivered")]),
                        callbacks.delivered,
                    ),
                    (labels(snapshot, &[("outcome", "failed")]), callbacks.failed),
                ]
            }),
        )?;
        let ticks = each(&snapshots, |snapshot| {
            snapshot
                .schedule_ticks
                .iter()
                .map(|(schedule, n)| (labels(snapshot, &[("schedule", schedule)]), *n))
                .collect()
        });
        family(
            &mut encoder,
            "warren_schedule_ticks",
            "Schedule ticks fired by the job keeper of this box's supervisors since it took over (exactly one box fires each tick: sum over boxes).",
            Counter,
            &ticks,
        )?;
        let requests = each(&snapshots, |snapshot| {
            snapshot
                .http_requests
                .iter()
                .map(|((route, code), n)| {
                    (
                        labels(snapshot, &[("route", route), ("code", &code.to_string())]),
                        *n,
                    )
                })
                .collect()
        });
        family(
            &mut encoder,
            "warren_http_requests",
            "HTTP requests this server answered, per route template and status code.",
            Counter,
            &requests,
        )?;
        family(
            &mut encoder,
            "warren_build_info",
            "Always 1: the version of warren serving these figures.",
            Gauge,
            &each(&snapshots, |snapshot| {
                vec![(
                    labels(snapshot, &[("version", env!("CARGO_PKG_VERSION"))]),
                    1,
                )]
            }),
        )
    }
}
