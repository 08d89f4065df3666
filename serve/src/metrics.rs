//! `GET /metrics` (DESIGN.md, *HTTP*): the figures of the last look, in
//! Prometheus' text format, encoded by `prometheus-client` from a snapshot
//! on each scrape. A refresher fills the snapshot every second: queue
//! depths, dead letters and consumers from the broker (every box); messages,
//! timings, in-flight counts, open breakers and blocked publishing from the
//! supervisors of this box (their workers' reports); job counts from the
//! job store. Every series exists, at 0, from the start.

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
use warren::{jobs::JobState, timings::Histogram};

use warren_ops::jobs::store::COUNTED;

/// What `/metrics` shows of one stage: its view ([`warren_ops::view`]).
pub type StageFigures = warren_ops::view::StageView;

/// Everything `/metrics` shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per stage, every stage of the pipeline.
    pub stages: BTreeMap<String, StageFigures>,
    /// The broker blocks publishing of a worker of this box.
    pub broker_blocked: bool,
    /// Jobs per state, on a tracked pipeline.
    pub jobs: Vec<(JobState, u64)>,
    /// Ticks fired per schedule by the job keeper of this box's
    /// supervisors, since each took over.
    pub schedule_ticks: BTreeMap<String, u64>,
}

impl Snapshot {
    /// A snapshot with every stage at 0.
    pub fn empty(stages: &[&str]) -> Snapshot {
        Snapshot {
            stages: stages
                .iter()
                .map(|s| (s.to_string(), StageFigures::default()))
                .collect(),
            broker_blocked: false,
            jobs: COUNTED.iter().map(|state| (*state, 0)).collect(),
            schedule_ticks: BTreeMap::new(),
        }
    }

    /// The snapshot with every schedule's ticks at 0.
    pub fn with_schedules(mut self, schedules: &[&str]) -> Snapshot {
        self.schedule_ticks = schedules.iter().map(|s| (s.to_string(), 0)).collect();
        self
    }
}

/// The snapshot, shared with the refresher.
pub type Shared = Arc<Mutex<Snapshot>>;

/// The registry that encodes `shared` on each scrape.
pub fn registry(shared: Shared) -> Registry {
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
struct Figures(Shared);

impl Figures {
    fn gauge(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        values: &[(&str, &str, i64)],
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (key, value, n) in values {
            let labels = [(*key, *value)];
            ConstGauge::new(*n).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn histogram(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        values: &[(&str, Histogram)],
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (stage, h) in values {
            let labels = [("stage", *stage)];
            metric
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum_seconds(),
                    h.count,
                    &h.per_bucket(),
                    None,
                )?;
        }
        Ok(())
    }
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock().expect("metrics").clone();
        let stages: Vec<(&str, &StageFigures)> = snapshot
            .stages
            .iter()
            .map(|(s, f)| (s.as_str(), f))
            .collect();
        {
            let mut metric = encoder.encode_descriptor(
                "warren_messages",
                "Messages handled by this box's workers, by outcome (done, retried, dead; cancelled: acknowledged unhandled, their job cancelled).",
                None,
                MetricType::Counter,
            )?;
            for (stage, figures) in &stages {
                let c = &figures.counts;
                for (outcome, n) in [
                    ("done", c.done),
                    ("retried", c.retried),
                    ("dead", c.dead),
                    ("cancelled", c.cancelled),
                ] {
                    let labels = [("stage", *stage), ("outcome", outcome)];
                    ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        let per_stage = |f: &dyn Fn(&StageFigures) -> i64| -> Vec<(&str, &str, i64)> {
            stages
                .iter()
                .map(|(s, fig)| ("stage", *s, f(fig)))
                .collect()
        };
        Self::histogram(
            &mut encoder,
            "warren_handle_seconds",
            "How long handlings took (this box's workers).",
            &stages
                .iter()
                .map(|(s, f)| (*s, f.counts.handle))
                .collect::<Vec<_>>(),
        )?;
        Self::histogram(
            &mut encoder,
            "warren_queue_wait_seconds",
            "How long messages waited in the queue, from their timestamp (whole seconds; this box's workers).",
            &stages
                .iter()
                .map(|(s, f)| (*s, f.counts.queue_wait))
                .collect::<Vec<_>>(),
        )?;
        Self::gauge(
            &mut encoder,
            "warren_in_flight",
            "Deliveries not yet acknowledged (every box when the management API answers, else this box).",
            &per_stage(&|f| f.in_flight as i64),
        )?;
        Self::gauge(
            &mut encoder,
            "warren_queue_ready",
            "Ready messages in the stage queue (broker).",
            &per_stage(&|f| f.ready as i64),
        )?;
        Self::gauge(
            &mut encoder,
            "warren_dead_letters",
            "Messages in the stage's dead-letter queue (broker).",
            &per_stage(&|f| f.dead as i64),
        )?;
        Self::gauge(
            &mut encoder,
            "warren_workers",
            "Consumers of the stage queue, every box (broker).",
            &per_stage(&|f| i64::from(f.consumers)),
        )?;
        Self::gauge(
            &mut encoder,
            "warren_breaker_open",
            "1 while a worker of this box has the stage's circuit breaker open.",
            &per_stage(&|f| i64::from(f.counts.breaker_open)),
        )?;
        Self::gauge(
            &mut encoder,
            "warren_paused",
            "1 while an operator paused the stage (warren pause; every box, from the broker). A stage paused by its circuit breaker shows in warren_breaker_open.",
            &per_stage(&|f| i64::from(f.paused)),
        )?;
        {
            let metric = encoder.encode_descriptor(
                "warren_broker_blocked",
                "1 while the broker blocks publishing of a worker of this box.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(snapshot.broker_blocked)).encode(metric)?;
        }
        {
            let mut metric = encoder.encode_descriptor(
                "warren_schedule_ticks",
                "Schedule ticks fired by the job keeper of this box's supervisors since it took over (exactly one box fires each tick: sum over boxes).",
                None,
                MetricType::Counter,
            )?;
            for (schedule, n) in &snapshot.schedule_ticks {
                let labels = [("schedule", schedule.as_str())];
                ConstCounter::new(*n).encode(metric.encode_family(&labels)?)?;
            }
        }
        let jobs: Vec<(String, i64)> = snapshot
            .jobs
            .iter()
            .map(|(state, n)| {
                let name = serde_json::to_value(state).expect("a state is JSON");
                (name.as_str().unwrap_or("?").to_string(), *n as i64)
            })
            .collect();
        Self::gauge(
            &mut encoder,
            "warren_jobs",
            "Jobs of a tracked pipeline per state, as this box's job store knows them.",
            &jobs
                .iter()
                .map(|(state, n)| ("state", state.as_str(), *n))
                .collect::<Vec<_>>(),
        )
    }
}
