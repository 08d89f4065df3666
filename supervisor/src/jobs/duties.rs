//! What the job keeper does for the jobs whose records change: releases
//! their gather stages when due ([`JobRecord::gather_due`]) and POSTs
//! their callbacks once they settle ([`JobRecord::callback_due`]). Each
//! act is written to the job stream after it is done, so that the next
//! keeper does not do it again; until the event comes back through the
//! stream, this keeper remembers it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tokio::{sync::mpsc, time::Instant};
use tracing::{info, warn};
use warren::{
    Pipeline, StageKind,
    backoff::Backoff,
    jobs::{Emitted, Event, Gathered, JobRecord, What},
    message, names,
    publisher::Publisher,
};

use super::{callback, keeper::KeeperStatus};

/// Callbacks POSTed at once at most.
const CALLING: usize = 16;

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
    /// Gathers due, not released yet: the stage and what it emits.
    to_release: Vec<(String, Gathered)>,
    calls: BTreeMap<String, Call>,
    /// Callbacks delivered in this term whose event has not come back.
    delivered: HashSet<String>,
    answers: (
        mpsc::UnboundedSender<Answer>,
        mpsc::UnboundedReceiver<Answer>,
    ),
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
            answers: mpsc::unbounded_channel(),
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
                self.to_release.push((gather.stage.clone(), gathered));
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
    pub async fn act(&mut self) -> Result<(), warren::Error> {
        for (stage, gathered) in std::mem::take(&mut self.to_release) {
            self.release(&stage, &gathered).await?;
        }
        while let Ok((job, answer)) = self.answers.1.try_recv() {
            self.answered(job, answer).await?;
        }
        let now = Instant::now();
        let now_ms = message::epoch_ms();
        let mut posting = self.calls.values().filter(|c| c.posting).count();
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
            let (client, url, body, job) = (
                self.client.clone(),
                call.url.clone(),
                call.body.clone(),
                job.clone(),
            );
            let answers = self.answers.0.clone();
            tokio::spawn(async move {
                let answer = callback::post(&client, &url, &job, body).await;
                let _ = answers.send((job, answer));
            });
        }
        for job in expired {
            warn!(pipeline = %self.pipeline, %job, "job forgotten (jobs.keep) before its callback got a 2xx; no more tries");
            self.calls.remove(&job);
        }
        self.status.callbacks_failing = self.calls.values().filter(|c| c.failed > 0).count() as u64;
        Ok(())
    }

    /// What `warren status` shows.
    pub fn status(&self) -> KeeperStatus {
        self.status.clone()
    }

    /// Emits the gathered message of `gathered.job` to the stage's outputs,
    /// then writes the release.
    async fn release(&mut self, stage: &str, gathered: &Gathered) -> Result<(), warren::Error> {
        let gather = self
            .gathers
            .iter()
            .find(|g| g.stage == stage)
            .expect("a gather of the pipeline");
        let id = format!("{}.gather", gathered.job);
        let body = serde_json::to_vec(gathered).expect("gathered items are JSON");
        for output in &gather.outputs {
            let queue = names::stage_queue(&self.pipeline, output);
            self.publisher
                .publish_confirmed(
                    "",
                    &queue,
                    &body,
                    message::new_properties(&id, &gathered.job),
                )
                .await?;
        }
        let emitted = gather
            .outputs
            .iter()
            .map(|to| Emitted {
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
        emitted: Vec<Emitted>,
    ) -> Result<(), warren::Error> {
        let event = Event {
            job: job.to_string(),
            id: id.to_string(),
            stage: stage.to_string(),
            what,
            emitted,
            callback: None,
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
