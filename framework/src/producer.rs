//! Sending work from application code (a web request handler, a script):
//! connect once, then send typed messages to a stage, each confirmed by the
//! broker. Cheap per call, safe to share between tasks (clone it), and
//! failing fast with a clear error when the broker is away.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::{
    broker::BrokerUrls,
    connection, delay,
    error::Error,
    jobs::{Event, What},
    message, names,
    pipeline::{Pipeline, UnknownStage},
    publisher::{Publisher, Unconfirmed, target},
    traces::TraceHeaders,
};

/// How long a send may take, reconnecting included, unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed reconnection, sends fail at once for this long instead of
/// each waiting for the network.
const COOL_DOWN: Duration = Duration::from_secs(1);

/// A message written to the broker whose confirm has not been awaited.
pub struct Sent {
    unconfirmed: Unconfirmed,
    /// The job stream's `sent` event, when the pipeline tracks jobs.
    event: Option<Unconfirmed>,
    target: String,
    timeout: Duration,
}

impl Sent {
    /// Waits for the broker's confirm (within the producer's timeout).
    pub async fn confirmed(self) -> Result<(), Error> {
        let target = self.target;
        let both = async {
            if let Some(event) = self.event {
                event.confirmed().await?;
            }
            self.unconfirmed.confirmed().await
        };
        match tokio::time::timeout(self.timeout, both).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::Publish { target, reason }),
            Err(_) => Err(Error::Publish {
                target,
                reason: format!(
                    "no confirm within {}ms (the broker is slow, blocking publishers, or away)",
                    self.timeout.as_millis()
                ),
            }),
        }
    }
}

/// Sends messages to the stages of one pipeline. Clone it freely.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: String,
    stages: Vec<String>,
    urls: BrokerUrls,
    timeout: Duration,
    /// The job stream, when the pipeline tracks jobs.
    job_stream: Option<String>,
    link: Mutex<Link>,
}

#[derive(Default)]
struct Link {
    open: Option<(lapin::Connection, Publisher)>,
    failed: Option<(Instant, String)>,
}

/// What goes along with each message of one send.
#[derive(Clone, Copy)]
struct Along<'a> {
    /// The URL to call back when its job is done.
    callback: Option<&'a str>,
    /// Not handled before this time (ms since the Unix epoch).
    not_before_ms: Option<u64>,
    /// The trace it continues.
    trace: &'a TraceHeaders,
}

impl Producer {
    /// Connects to the pipeline's broker. Fails with
    /// [`Error::Unreachable`] (host and port, never the password) if it
    /// cannot within the default timeout.
    pub async fn connect(pipeline: &Pipeline) -> Result<Producer, Error> {
        Producer::connect_with_timeout(pipeline, DEFAULT_TIMEOUT).await
    }

    /// Like [`Producer::connect`], with the time allowed per send (and for
    /// this first connection).
    pub async fn connect_with_timeout(
        pipeline: &Pipeline,
        timeout: Duration,
    ) -> Result<Producer, Error> {
        let producer = Producer {
            inner: Arc::new(Inner {
                pipeline: pipeline.name.clone(),
                stages: pipeline
                    .stage_names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                urls: pipeline.broker.urls.clone(),
                timeout,
                job_stream: pipeline
                    .jobs
                    .track
                    .then(|| names::job_stream(&pipeline.name)),
                link: Mutex::new(Link::default()),
            }),
        };
        producer.within_timeout(producer.publisher()).await?;
        Ok(producer)
    }

    /// Sends `message` to `stage` with a fresh id, returned once the broker
    /// confirmed it.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        message: &M,
    ) -> Result<String, Error> {
        let id = message::new_id();
        self.send_with_id(stage, &id, message).await?;
        Ok(id)
    }

    /// Sends `message` to `stage` with id `id` (use a stable id, like a
    /// database key, so that sending twice is recognisable downstream).
    pub async fn send_with_id<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        id: &str,
        message: &M,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(message)?;
        self.send_json(stage, id, &body).await
    }

    /// Sends `message` to `stage` with a fresh id, to be handled once
    /// `delay` has passed (at most [`delay::LONGEST`], 30 days): it waits
    /// on the broker (`x-warren-not-before`), and its job shows
    /// `scheduled` meanwhile. Returned once the broker confirmed it.
    pub async fn send_after<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        delay: Duration,
        message: &M,
    ) -> Result<String, Error> {
        let not_before = message::epoch_ms().saturating_add(delay.as_millis() as u64);
        self.send_at_ms(stage, not_before, message).await
    }

    /// Sends `message` to `stage` with a fresh id, to be handled at `at`
    /// or later (at most 30 days ahead; a time past is now).
    pub async fn send_at<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        at: SystemTime,
        message: &M,
    ) -> Result<String, Error> {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.send_at_ms(stage, ms, message).await
    }

    async fn send_at_ms<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        not_before_ms: u64,
        message: &M,
    ) -> Result<String, Error> {
        let id = message::new_id();
        let body = serde_json::to_vec(message)?;
        let mut sent = self
            .publish_many_at(stage, &[(&id, &body)], None, Some(not_before_ms))
            .await?;
        sent.pop()
            .expect("one message, one Sent")
            .confirmed()
            .await?;
        Ok(id)
    }

    /// Sends a body that is already JSON text.
    pub async fn send_json(&self, stage: &str, id: &str, body: &[u8]) -> Result<(), Error> {
        self.publish(stage, id, body).await?.confirmed().await
    }

    /// Writes a message (JSON text) for `stage` and returns without waiting
    /// for the broker's confirm: await [`Sent::confirmed`] before counting
    /// it as sent. Many can be on their way at once (a window), which is
    /// how `warren send` keeps up with the broker.
    pub async fn publish(&self, stage: &str, id: &str, body: &[u8]) -> Result<Sent, Error> {
        self.publish_with(stage, id, body, None).await
    }

    /// Like [`Producer::publish`], with the URL to call back when the job
    /// this message starts is done (`x-warren-callback`).
    pub async fn publish_with(
        &self,
        stage: &str,
        id: &str,
        body: &[u8],
        callback: Option<&str>,
    ) -> Result<Sent, Error> {
        let mut sent = self.publish_many(stage, &[(id, body)], callback).await?;
        Ok(sent.pop().expect("one message, one Sent"))
    }

    /// Writes several messages (`(id, JSON text)`) for `stage` on one
    /// channel, taking the connection once, without waiting for their
    /// confirms: await each [`Sent::confirmed`]. Each message starts its own
    /// job; `callback` is the URL to call back when each is done. An id
    /// that is empty or too long fails the whole call before anything is
    /// written.
    pub async fn publish_many(
        &self,
        stage: &str,
        messages: &[(&str, &[u8])],
        callback: Option<&str>,
    ) -> Result<Vec<Sent>, Error> {
        self.publish_many_at(stage, messages, callback, None).await
    }

    /// Like [`Producer::publish_many`], each message not to be handled
    /// before `not_before_ms` (ms since the Unix epoch) when that is
    /// ahead: it carries `x-warren-not-before` and waits in the delay
    /// cascade (`delay.rs`) instead of its stage queue. A time more than
    /// [`delay::LONGEST`] ahead fails the call before anything is written.
    pub async fn publish_many_at(
        &self,
        stage: &str,
        messages: &[(&str, &[u8])],
        callback: Option<&str>,
        not_before_ms: Option<u64>,
    ) -> Result<Vec<Sent>, Error> {
        self.publish_many_traced(
            stage,
            messages,
            callback,
            not_before_ms,
            &TraceHeaders::default(),
        )
        .await
    }

    /// Like [`Producer::publish_many_at`], each message in the trace of
    /// `trace` (its `traceparent` and `tracestate` headers: `warren serve`
    /// continues its caller's trace).
    pub async fn publish_many_traced(
        &self,
        stage: &str,
        messages: &[(&str, &[u8])],
        callback: Option<&str>,
        not_before_ms: Option<u64>,
        trace: &TraceHeaders,
    ) -> Result<Vec<Sent>, Error> {
        if let Some(at) = not_before_ms
            && let Err(reason) = delay::check(at, message::epoch_ms())
        {
            return Err(Error::Publish {
                target: target(&self.inner.pipeline, stage),
                reason,
            });
        }
        self.known_stage(stage)?;
        let target = target(&self.inner.pipeline, stage);
        for (id, _) in messages {
            if id.is_empty() || id.len() > message::MAX_ID {
                return Err(Error::Publish {
                    target,
                    reason: format!(
                        "a message id must be 1 to {} bytes long, not {}",
                        message::MAX_ID,
                        id.len()
                    ),
                });
            }
        }
        self.within_timeout(async {
            let publisher = self.publisher().await?;
            // All written at once: the client queues their frames in this
            // order and writes them together, instead of one write (and
            // one wake of its I/O thread) per message.
            let along = Along {
                callback,
                not_before_ms,
                trace,
            };
            let writes = messages
                .iter()
                .map(|(id, body)| self.write_one(&publisher, stage, id, body, &along));
            let written: Result<Vec<Sent>, Error> = futures_util::future::join_all(writes)
                .await
                .into_iter()
                .collect();
            if written.is_err() && !publisher.is_open() {
                self.inner.link.lock().await.open = None;
            }
            written
        })
        .await
    }

    /// Cancels job `job` (DESIGN.md, *Jobs*): writes the cancel to the job
    /// stream, where the job settles as `cancelled` (unless it settled
    /// before), then to the pipeline's cancel stream, which every worker
    /// reads (they acknowledge the job's queued messages without handling
    /// them and cancel its running handlings): so the cancel is folded
    /// before any message a worker skipped for it. Returns once the broker
    /// confirmed both; cancelling twice is harmless. Needs `jobs.track`.
    pub async fn cancel(&self, job: &str) -> Result<(), Error> {
        let Some(stream) = &self.inner.job_stream else {
            return Err(Error::Setup(
                "cancelling a job needs `jobs.track: true` in the pipeline file".into(),
            ));
        };
        if job.is_empty() || job.len() > message::MAX_ID {
            return Err(Error::Setup(format!(
                "a job id is 1 to {} bytes long, not {}",
                message::MAX_ID,
                job.len()
            )));
        }
        let event = Event {
            job: job.to_string(),
            id: job.to_string(),
            stage: String::new(),
            what: What::Cancelled,
            emitted: Vec::new(),
            callback: None,
            trace: None,
            at_ms: message::epoch_ms(),
        };
        let body = event.encode();
        let cancels = names::cancel_stream(&self.inner.pipeline);
        self.within_timeout(async {
            let publisher = self.publisher().await?;
            for to in [stream, &cancels] {
                let props = message::new_properties(&format!("{job}.cancel"), job);
                if let Err(error) = publisher.publish_confirmed("", to, &body, props).await {
                    if !publisher.is_open() {
                        self.inner.link.lock().await.open = None;
                    }
                    return Err(error);
                }
            }
            Ok(())
        })
        .await
    }

    /// Pauses (`paused`) or resumes `stage` on every box (DESIGN.md, *Stage
    /// control*): writes a [`crate::pauses::Change`] to the pipeline's
    /// pause stream (declared with the topology), which every worker
    /// follows, and returns once the broker confirmed it. `by` says who
    /// asked (it is logged and kept with the change). Pausing twice is
    /// harmless.
    pub async fn set_paused(&self, stage: &str, paused: bool, by: &str) -> Result<(), Error> {
        self.known_stage(stage)?;
        let change = crate::pauses::Change {
            stage: stage.to_string(),
            paused,
            at_ms: message::epoch_ms(),
            by: by.to_string(),
        };
        let stream = names::pause_stream(&self.inner.pipeline);
        let id = format!("pause-{}", message::new_id());
        self.write_control(&stream, &id, &change.encode()).await
    }

    /// Asks every supervisor of the pipeline to replace the workers of
    /// `stage` (every stage when `None`) one at a time (`warren restart`):
    /// one request on the pause stream. Returns the request's id.
    pub async fn request_restart(&self, stage: Option<&str>, by: &str) -> Result<String, Error> {
        if let Some(stage) = stage {
            self.known_stage(stage)?;
        }
        let id = format!("restart-{}", message::new_id());
        let request = crate::restarts::Request {
            id: id.clone(),
            stage: stage.map(str::to_string),
            at_ms: message::epoch_ms(),
            by: by.to_string(),
        };
        let stream = names::pause_stream(&self.inner.pipeline);
        self.write_control(&stream, &id, &request.encode()).await?;
        Ok(id)
    }

    /// Writes one message, with what goes `along` with it, after its job's
    /// `sent` event when the pipeline
    /// tracks jobs (a job is never handled before it is known).
    async fn write_one(
        &self,
        publisher: &Publisher,
        stage: &str,
        id: &str,
        body: &[u8],
        along: &Along<'_>,
    ) -> Result<Sent, Error> {
        let Along {
            callback,
            not_before_ms,
            trace,
        } = *along;
        let mut properties = trace.on(message::new_properties(id, id));
        if let Some(url) = callback {
            properties = message::with_header(properties, message::CALLBACK, message::text(url));
        }
        let now = message::epoch_ms();
        // Ahead: to the delay cascade's first level for it, with its
        // remaining delay spelled in the routing key; due: to its stage.
        let (exchange, key) = match not_before_ms
            .and_then(|at| Some((at, delay::remaining(at, now)?)))
            .and_then(|(at, left)| Some((at, left, delay::next_level(left)?)))
        {
            Some((at, left, level)) => {
                properties =
                    message::with_header(properties, message::NOT_BEFORE, message::int(at));
                (
                    names::delay_level(&self.inner.pipeline, level),
                    delay::routing_key(left, stage),
                )
            }
            None => (self.inner.pipeline.clone(), stage.to_string()),
        };
        let scheduled = not_before_ms.filter(|at| *at > now);
        let event = match &self.inner.job_stream {
            Some(stream) => {
                let event = |what| Event {
                    job: id.to_string(),
                    id: id.to_string(),
                    stage: stage.to_string(),
                    what,
                    emitted: Vec::new(),
                    callback: callback.map(str::to_string),
                    trace: trace.traceparent().map(str::to_string),
                    at_ms: now,
                };
                // One stream message: the job is known as sent and
                // scheduled at once.
                let body = match scheduled {
                    Some(until_ms) => serde_json::to_vec(&[
                        event(What::Sent),
                        event(What::Scheduled { until_ms }),
                    ])?,
                    None => event(What::Sent).encode(),
                };
                let props = message::new_properties(id, id);
                Some(publisher.publish("", stream, &body, props).await?)
            }
            None => None,
        };
        let unconfirmed = publisher.publish(&exchange, &key, body, properties).await?;
        Ok(Sent {
            unconfirmed,
            event,
            target: target(&self.inner.pipeline, stage),
            timeout: self.inner.timeout,
        })
    }

    /// Whether the producer holds an open connection now (a send would not
    /// have to connect first).
    pub async fn is_connected(&self) -> bool {
        let link = self.inner.link.lock().await;
        link.open.as_ref().is_some_and(|(connection, publisher)| {
            connection.status().connected() && publisher.is_open()
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some((connection, _)) = self.inner.link.lock().await.open.take() {
            connection::close(&connection, "producer closed").await;
        }
    }

    /// An error naming the pipeline's stages unless `stage` is one.
    fn known_stage(&self, stage: &str) -> Result<(), Error> {
        if self.inner.stages.iter().any(|s| s == stage) {
            return Ok(());
        }
        Err(UnknownStage {
            pipeline: self.inner.pipeline.clone(),
            stage: stage.to_string(),
            known: self.inner.stages.join(", "),
        }
        .into())
    }

    /// Writes one record `body` with id `id` to the control stream
    /// `stream` and waits for its confirm.
    async fn write_control(&self, stream: &str, id: &str, body: &[u8]) -> Result<(), Error> {
        self.within_timeout(async {
            let publisher = self.publisher().await?;
            let props = message::new_properties(id, id);
            if let Err(error) = publisher.publish_confirmed("", stream, body, props).await {
                if !publisher.is_open() {
                    self.inner.link.lock().await.open = None;
                }
                return Err(error);
            }
            Ok(())
        })
        .await
    }

    /// The open publishing channel, reconnecting if it was lost (at most
    /// once per cool-down).
    async fn publisher(&self) -> Result<Publisher, Error> {
        let mut link = self.inner.link.lock().await;
        if let Some((connection, publisher)) = &link.open {
            if connection.status().connected() && publisher.is_open() {
                return Ok(publisher.clone());
            }
            link.open = None;
        }
        if let Some((at, reason)) = &link.failed
            && at.elapsed() < COOL_DOWN
        {
            return Err(Error::Unreachable {
                address: self.inner.urls.addresses(),
                reason: reason.clone(),
            });
        }
        let name = format!(
            "warren producer {} pid {}",
            self.inner.pipeline,
            std::process::id()
        );
        let opened = async {
            let connection = connection::open(&self.inner.urls, &name).await?;
            let publisher = Publisher::open(&connection).await?;
            Ok::<_, Error>((connection, publisher))
        }
        .await;
        match opened {
            Ok((connection, publisher)) => {
                link.failed = None;
                link.open = Some((connection, publisher.clone()));
                Ok(publisher)
            }
            Err(error) => {
                link.failed = Some((Instant::now(), error.to_string()));
                Err(error)
            }
        }
    }

    async fn within_timeout<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Publish {
                target: format!("the broker at {}", self.inner.urls.addresses()),
                reason: format!(
                    "no confirm within {}ms (the broker is slow, blocking publishers, or away)",
                    self.inner.timeout.as_millis()
                ),
            }),
        }
    }
}
