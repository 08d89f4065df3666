//! What the job keeper does for the jobs whose records change: releases
//! their gather stages when due ([`JobRecord::gather_due`]) and POSTs
//! their callbacks once they settle ([`JobRecord::callback_due`]). Each
//! act is written to the job stream after it is done, so that the next
//! keeper does not do it again; until the event comes back through the
//! stream, this keeper remembers it.
//!
//! A release that can never be published (a gathered message over
//! [`MAX_GATHERED`](super::gathered::MAX_GATHERED), or one the broker refuses) dead-letters the gather's
//! items with the reason instead of stopping the keeper. The POSTs in
//! flight belong to the keeper's term: they end when it ends
//! ([`Duties`] dropped), and [`Duties::finish_calls`] writes their answers
//! before the token is handed back.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use lapin::Connection;
use tokio::{task::JoinSet, time::Instant};
use tracing::{error, info, warn};
use warren::{
    Pipeline, StageKind,
    backoff::Backoff,
    jobs::{Emission, Event, Gathered, JobRecord, What},
    message, names,
    publisher::Publisher,
};

use super::{
    callback,
    gathered::{json_size, too_large},
};
use crate::status::KeeperStatus;

/// Callbacks POSTed at once at most.
const CALLING: usize = 16;

/// Dead events written per stream message at most.
const DEAD_PER_WRITE: usize = 1000;

/// A gather stage: its name, the stages upstream of it, its outputs.
struct Gather {
    stage: String,
    upstream: BTreeSet<String>,
    outputs: Vec<String>,
}

/// A callback to POST.
struct Call {
    url: String,
    body: Vec<u8>,
    /// The job's W3C traceparent, sent with the POST.
    trace: Option<String>,
    failed: u32,
    /// Delays between tries: doubling from a second to five minutes, with
    /// jitter.
    backoff: Backoff,
    due: Instant,
    /// When the job is forgotten (ms since the Unix epoch): no more tries.
    expires_ms: u64,
    /// A POST is on its way.
    posting: bool,
}

/// A callback server's answer to a job's POST: its 2xx status, or why not.
type Answer = (String, Result<u16, String>);

/// A message a gather stage holds: its id and its body.
type Held = (String, serde_json::Value);

/// The keeper's work.
pub struct Duties {
    pipeline: String,
    keep_ms: u64,
    default_url: Option<String>,
    gathers: Vec<Gather>,
    publisher: Publisher,
    client: reqwest::Client,
    /// (job, gather stage) released (or to release) in this term, until
    /// the release is read back from the stream.
    released: HashSet<(String, String)>,
    /// Gathers due, not released yet: the stage, what it emits and the ids
    /// of the items it holds.
    to_release: Vec<(String, Gathered, Vec<Held>)>,
    calls: BTreeMap<String, Call>,
    /// Callbacks delivered in this term whose event has not come back.
    delivered: HashSet<String>,
    /// The POSTs on their way; dropped (aborted) with the term.
    posts: JoinSet<Answer>,
    status: KeeperStatus,
}

impl Duties {
    /// The duties of `pipeline`'s keeper, writing with `publisher`.
    pub fn new(pipeline: &Pipeline, publisher: Publisher) -> Duties {
        let gathers = pipeline
            .stages
            .iter()
            .filter(|stage| stage.kind == StageKind::Gather)
            .map(|stage| Gather {
                stage: stage.name.clone(),
                upstream: pipeline.upstream(&stage.name),
                outputs: stage.outputs.clone(),
            })
            .collect();
        Duties {
            pipeline: pipeline.name.clone(),
            keep_ms: pipeline.jobs.keep.as_millis() as u64,
            default_url: pipeline.jobs.callback.clone(),
            gathers,
            publisher,
            client: callback::client(),
            released: HashSet::new(),
            to_release: Vec::new(),
            calls: BTreeMap::new(),
            delivered: HashSet::new(),
            posts: JoinSet::new(),
            status: KeeperStatus {
                leader: true,
                ..KeeperStatus::default()
            },
        }
    }

    /// Notes what is due for `job`, whose record is `record`.
    pub fn consider(&mut self, job: &str, record: &JobRecord) {
        let now_ms = message::epoch_ms();
        for gather in &self.gathers {
            let key = (job.to_string(), gather.stage.clone());
            if self.released.contains(&key) {
                // Its release came back through the stream: the record
                // remembers it from now on.
                if record.released(&gather.stage) {
                    self.released.remove(&key);
                }
                continue;
            }
            if let Some(gathered) = record.gather_due(job, &gather.stage, &gather.upstream) {
                self.released.insert(key);
                let held = record.held(&gather.stage);
                self.to_release.push((gather.stage.clone(), gathered, held));
            }
        }
        match record.callback_due(self.default_url.as_deref(), now_ms, self.keep_ms) {
            None => {
                self.delivered.remove(job);
                if self.calls.get(job).is_some_and(|call| !call.posting) {
                    self.calls.remove(job);
                }
            }
            Some(_) if self.delivered.contains(job) || self.calls.contains_key(job) => {}
            Some(url) => {
                let failed = record.callback_attempts();
                let view = record.view(job, now_ms, self.keep_ms);
                // Taken over after `failed` tries: go on where they were.
                let mut backoff = callback::backoff();
                let due = match (0..failed).map(|_| backoff.next_delay()).last() {
                    Some(delay) => Instant::now() + delay,
                    None => Instant::now(),
                };
                self.calls.insert(
                    job.to_string(),
                    Call {
                        url: url.to_string(),
                        body: serde_json::to_vec(&view).expect("a view is JSON"),
                        trace: record.traceparent().map(str::to_string),
                        failed,
                        backoff,
                        due,
                        expires_ms: record.last_ms() + self.keep_ms,
                        posting: false,
                    },
                );
            }
        }
    }

    /// Releases the gathers due, takes the callbacks' answers and POSTs the
    /// callbacks due. `Err`: the broker did not take a write (the keeper
    /// starts a new term).
    pub async fn act(&mut self, connection: &Connection) -> Result<(), warren::Error> {
        for (stage, gathered, held) in std::mem::take(&mut self.to_release) {
            self.release(connection, &stage, &gathered, &held).await?;
        }
        while let Some(done) = self.posts.try_join_next() {
            if let Ok((job, answer)) = done {
                self.answered(job, answer).await?;
            }
        }
        let now = Instant::now();
        let now_ms = message::epoch_ms();
        let mut posting = self.posts.len();
        let mut expired = Vec::new();
        for (job, call) in &mut self.calls {
            if call.posting || call.due > now {
                continue;
            }
            if now_ms > call.expires_ms {
                expired.push(job.clone());
                continue;
            }
            if posting >= CALLING {
                break;
            }
            posting += 1;
            call.posting = true;
            let (client, url, body, job, trace) = (
                self.client.clone(),
                call.url.clone(),
                call.body.clone(),
                job.clone(),
                call.trace.clone(),
            );
            self.posts.spawn(async move {
                let answer = callback::post(&client, &url, &job, body, trace.as_deref()).await;
                (job, answer)
            });
        }
        for job in expired {
            warn!(pipeline = %self.pipeline, %job, "job forgotten (jobs.keep) before its callback got a 2xx; no more tries");
            self.calls.remove(&job);
        }
        self.status.callbacks_failing = self.calls.values().filter(|c| c.failed > 0).count() as u64;
        Ok(())
    }

    /// Waits for the POSTs on their way (each within the callback timeout)
    /// and writes their answers, starting none: before the token is handed
    /// back, so that the next keeper knows what this one did.
    pub async fn finish_calls(&mut self) -> Result<(), warren::Error> {
        while let Some(done) = self.posts.join_next().await {
            if let Ok((job, answer)) = done {
                self.answered(job, answer).await?;
            }
        }
        Ok(())
    }

    /// What `warren status` shows.
    pub fn status(&self) -> KeeperStatus {
        self.status.clone()
    }

    /// Emits the gathered message of `gathered.job` to the stage's outputs,
    /// then writes the release. One that cannot be published, while the
    /// connection is fine, dead-letters the items instead.
    async fn release(
        &mut self,
        connection: &Connection,
        stage: &str,
        gathered: &Gathered,
        held: &[Held],
    ) -> Result<(), warren::Error> {
        if let Some(reason) = too_large(json_size(gathered)) {
            return self.refuse(stage, gathered, held, reason).await;
        }
        let outputs = self
            .gathers
            .iter()
            .find(|g| g.stage == stage)
            .expect("a gather of the pipeline")
            .outputs
            .clone();
        let id = format!("{}.gather", gathered.job);
        let body = serde_json::to_vec(gathered).expect("gathered items are JSON");
        for output in &outputs {
            let queue = names::stage_queue(&self.pipeline, output);
            let published = self
                .publisher
                .publish_confirmed(
                    "",
                    &queue,
                    &body,
                    message::new_properties(&id, &gathered.job),
                )
                .await;
            if let Err(why) = published {
                // A lost connection, or a nack (a queue without a leader
                // for a moment): the next term tries again. A return (no
                // such queue) or a closed channel (too large) would fail
                // every time.
                if !connection.status().connected() || why.to_string().contains("(nack)") {
                    return Err(why);
                }
                if !self.publisher.is_open() {
                    // The broker closed the channel (a message over its
                    // size limit, say): the next writes need another.
                    self.publisher = Publisher::open(connection).await?;
                }
                let reason =
                    format!("the gathered message could not be released to {output}: {why}");
                return self.refuse(stage, gathered, held, reason).await;
            }
        }
        let emitted = outputs
            .iter()
            .map(|to| Emission {
                to: to.clone(),
                id: id.clone(),
            })
            .collect();
        self.write(&gathered.job, &id, stage, What::Released, emitted)
            .await?;
        self.status.gathers_released += 1;
        info!(pipeline = %self.pipeline, job = %gathered.job, stage, items = gathered.items.len(), dead = gathered.dead_letters.len(), "gather released");
        Ok(())
    }

    /// A release that cannot be published: its held items are dead-lettered
    /// with `reason`, each body to the stage's dead-letter queue (where
    /// `warren dlq` lists and replays it) and then its event to the stream
    /// (the job fails; the stage is due again with them as dead letters, a
    /// small message); one with no items left is written released as it
    /// is, unpublished. A keeper that stops between the two publishes the
    /// dead letters again, with the same ids.
    async fn refuse(
        &mut self,
        stage: &str,
        gathered: &Gathered,
        held: &[Held],
        reason: String,
    ) -> Result<(), warren::Error> {
        let job = &gathered.job;
        error!(pipeline = %self.pipeline, %job, stage, items = held.len(), %reason, "gather not released");
        if held.is_empty() {
            return self
                .write(
                    job,
                    &format!("{job}.gather"),
                    stage,
                    What::Released,
                    Vec::new(),
                )
                .await;
        }
        let dead_queue = names::dead_queue(&self.pipeline, stage);
        for (id, body) in held {
            let properties = message::with_header(
                message::with_header(
                    message::new_properties(id, job),
                    message::STAGE,
                    message::text(stage),
                ),
                message::ERROR,
                message::text(&reason),
            );
            let body = serde_json::to_vec(body).expect("held items are JSON");
            self.publisher
                .publish_confirmed("", &dead_queue, &body, properties)
                .await?;
        }
        let at_ms = message::epoch_ms();
        for ids in held.chunks(DEAD_PER_WRITE) {
            let events: Vec<Event> = ids
                .iter()
                .map(|(id, _)| Event {
                    job: job.clone(),
                    id: id.clone(),
                    stage: stage.to_string(),
                    what: What::Dead {
                        reason: reason.clone(),
                    },
                    emitted: Vec::new(),
                    callback: None,
                    trace: None,
                    at_ms,
                })
                .collect();
            let body = serde_json::to_vec(&events).expect("events are JSON");
            self.publisher
                .publish_confirmed(
                    "",
                    &names::job_stream(&self.pipeline),
                    &body,
                    message::new_properties(&format!("{job}.gather.dead"), job),
                )
                .await?;
        }
        // Due again once the dead letters come back through the stream.
        self.released.remove(&(job.clone(), stage.to_string()));
        Ok(())
    }

    /// Writes a callback's answer to the job stream and plans what follows.
    async fn answered(
        &mut self,
        job: String,
        answer: Result<u16, String>,
    ) -> Result<(), warren::Error> {
        match answer {
            Ok(status) => {
                self.write(&job, &job, "", What::Called { status }, Vec::new())
                    .await?;
                self.calls.remove(&job);
                self.delivered.insert(job);
                self.status.callbacks_delivered += 1;
            }
            Err(reason) => {
                self.write(
                    &job,
                    &job,
                    "",
                    What::CallFailed {
                        reason: reason.clone(),
                    },
                    Vec::new(),
                )
                .await?;
                self.status.callbacks_failed += 1;
                if let Some(call) = self.calls.get_mut(&job) {
                    call.failed += 1;
                    call.posting = false;
                    let delay = call.backoff.next_delay();
                    call.due = Instant::now() + delay;
                    warn!(pipeline = %self.pipeline, %job, attempt = call.failed, %reason, "callback failed; trying again in {delay:?}");
                }
                self.status.last_failure = Some(format!("job {job}: {reason}"));
            }
        }
        Ok(())
    }

    /// Writes one event to the job stream, confirmed.
    async fn write(
        &self,
        job: &str,
        id: &str,
        stage: &str,
        what: What,
        emitted: Vec<Emission>,
    ) -> Result<(), warren::Error> {
        let event = Event {
            job: job.to_string(),
            id: id.to_string(),
            stage: stage.to_string(),
            what,
            emitted,
            callback: None,
            trace: None,
            at_ms: message::epoch_ms(),
        };
        let stream = names::job_stream(&self.pipeline);
        self.publisher
            .publish_confirmed(
                "",
                &stream,
                &event.encode(),
                message::new_properties(id, job),
            )
            .await
    }
}
