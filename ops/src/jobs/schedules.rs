//! The job keeper's schedules: at each tick of a schedule, the keeper
//! records on the job stream that the tick is `firing`, sends its messages
//! (ids `{schedule}.{tick}`, or `{schedule}.{tick}.{line}` for an input
//! file; all of job `{schedule}.{tick}`), each after its `sent` event, and
//! records the tick `fired` once the broker confirmed them all. What to do
//! next is the pure [`Schedule::step`] of the last tick recorded.
//!
//! A keeper that stops mid-tick leaves it `firing`: the next keeper sends
//! the tick again, with the same ids (the sink writes each id once), and
//! records it `fired`. The keeper reads the stream up to a marker before
//! it starts (see [`keeper`](super::keeper)), so it knows every tick its
//! predecessors recorded.

use std::collections::BTreeMap;

use tokio::time::{Duration, Instant};
use tracing::{error, info, warn};
use warren::{
    Pipeline,
    jobs::{Event, What},
    message::{self, epoch_ms},
    names,
    publisher::{Publisher, Unconfirmed},
    schedule::{Missed, Phase, Schedule, ScheduleInput, Step, Tick, input_lines, tick_text},
};

use super::store::Store;

/// Steps taken for one schedule per turn at most (the rest next turn).
const STEPS_PER_TURN: usize = 16;

/// Messages of a tick written before their confirms are awaited.
const WINDOW: usize = 500;

/// How long a schedule whose input cannot be read waits before the next
/// try.
const INPUT_PAUSE: Duration = Duration::from_secs(30);

/// The schedules the keeper fires, and their last ticks.
pub struct Schedules {
    pipeline: String,
    stream: String,
    schedules: Vec<Schedule>,
    last: BTreeMap<String, Tick>,
    publisher: Publisher,
    /// Schedules whose input could not be read, until when they wait.
    paused: BTreeMap<String, Instant>,
    /// Ticks fired in this term, by schedule.
    fired: BTreeMap<String, u64>,
}

impl Schedules {
    /// The schedules of `pipeline`, from the last ticks in `store` (which
    /// the keeper has read up to its marker).
    pub fn new(
        pipeline: &Pipeline,
        publisher: Publisher,
        store: &Store,
    ) -> Result<Schedules, warren::Error> {
        let last = store.ticks().map_err(warren::Error::Setup)?;
        Ok(Schedules {
            pipeline: pipeline.name.clone(),
            stream: names::job_stream(&pipeline.name),
            schedules: pipeline.schedules.clone(),
            last,
            publisher,
            paused: BTreeMap::new(),
            fired: BTreeMap::new(),
        })
    }

    /// Ticks fired in this term, by schedule.
    pub fn fired(&self) -> &BTreeMap<String, u64> {
        &self.fired
    }

    /// Takes the steps due now. `Err`: the broker did not take a write
    /// (the keeper starts a new term).
    pub async fn act(&mut self) -> Result<(), warren::Error> {
        let now_ms = epoch_ms();
        for index in 0..self.schedules.len() {
            let name = self.schedules[index].name.clone();
            if self
                .paused
                .get(&name)
                .is_some_and(|until| *until > Instant::now())
            {
                continue;
            }
            for _ in 0..STEPS_PER_TURN {
                let schedule = &self.schedules[index];
                let step = schedule.step(self.last.get(&name).copied(), now_ms);
                match step {
                    Step::Wait(_) => break,
                    Step::Arm(at) => self.record(&name, at, Phase::Armed).await?,
                    Step::Skip(at) => {
                        let why = match schedule.missed {
                            Missed::Once => "a tick less than a minute late follows",
                            Missed::Skip => "missed: skip",
                        };
                        warn!(pipeline = %self.pipeline, schedule = %name, "ticks up to {} were missed (no keeper ran at the time); passed over: {why}", tick_text(at));
                        self.record(&name, at, Phase::Armed).await?;
                    }
                    Step::Fire(at) | Step::Finish(at) => {
                        if matches!(step, Step::Fire(_)) {
                            self.record(&name, at, Phase::Firing).await?;
                        }
                        let schedule = self.schedules[index].clone();
                        match self.send(&schedule, at).await? {
                            Some(sent) => {
                                self.record(&name, at, Phase::Fired).await?;
                                *self.fired.entry(name.clone()).or_default() += 1;
                                info!(pipeline = %self.pipeline, schedule = %name, job = %schedule.job_id(at), "tick {} fired: {sent} messages to {}", tick_text(at), schedule.stage);
                            }
                            None => {
                                self.paused
                                    .insert(name.clone(), Instant::now() + INPUT_PAUSE);
                                break;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Records tick `at` of `schedule` in `phase` on the job stream,
    /// confirmed.
    async fn record(&mut self, schedule: &str, at: u64, phase: Phase) -> Result<(), warren::Error> {
        let tick = Tick { at_ms: at, phase };
        let id = tick.record_id(schedule);
        let props = message::new_properties(&id, &id);
        self.publisher
            .publish_confirmed("", &self.stream, b"[]", props)
            .await?;
        let latest = Tick::latest(self.last.get(schedule).copied(), tick);
        self.last.insert(schedule.to_string(), latest);
        Ok(())
    }

    /// Sends tick `at` of `schedule`: every message after its `sent` event,
    /// confirmed. `Ok(None)`: its input file cannot be read now (said in
    /// the log; tried again later).
    async fn send(&self, schedule: &Schedule, at: u64) -> Result<Option<usize>, warren::Error> {
        let job = schedule.job_id(at);
        let text;
        let messages: Vec<(String, &[u8])> = match &schedule.input {
            ScheduleInput::Body(body) => {
                text = serde_json::to_vec(body).expect("a body is JSON");
                vec![(job.clone(), text.as_slice())]
            }
            ScheduleInput::File(path) => {
                text = match std::fs::read(path) {
                    Ok(text) => text,
                    Err(error) => {
                        error!(pipeline = %self.pipeline, schedule = %schedule.name, "cannot read {}: {error}; tick {} waits", path.display(), tick_text(at));
                        return Ok(None);
                    }
                };
                match input_lines(&text) {
                    Ok(lines) => lines
                        .into_iter()
                        .map(|(number, line)| (format!("{job}.{number}"), line))
                        .collect(),
                    Err(why) => {
                        error!(pipeline = %self.pipeline, schedule = %schedule.name, "{}: {why}; tick {} waits", path.display(), tick_text(at));
                        return Ok(None);
                    }
                }
            }
        };
        for window in messages.chunks(WINDOW) {
            let events: Vec<Event> = window
                .iter()
                .map(|(id, _)| Event {
                    job: job.clone(),
                    id: id.clone(),
                    stage: schedule.stage.clone(),
                    what: What::Sent,
                    emitted: Vec::new(),
                    callback: None,
                    trace: None,
                    at_ms: epoch_ms(),
                })
                .collect();
            let body = serde_json::to_vec(&events).expect("events are JSON");
            let props = message::new_properties(&job, &job);
            self.publisher
                .publish_confirmed("", &self.stream, &body, props)
                .await?;
            let mut pending: Vec<Unconfirmed> = Vec::with_capacity(window.len());
            for (id, body) in window {
                let props = message::new_properties(id, &job);
                pending.push(
                    self.publisher
                        .publish(&self.pipeline, &schedule.stage, body, props)
                        .await?,
                );
            }
            for unconfirmed in pending {
                unconfirmed
                    .confirmed()
                    .await
                    .map_err(|reason| warren::Error::Publish {
                        target: format!("{}/{}", self.pipeline, schedule.stage),
                        reason,
                    })?;
            }
        }
        Ok(Some(messages.len()))
    }
}
