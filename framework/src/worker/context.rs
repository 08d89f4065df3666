//! What a handler gets besides its message: the message's id and attempt,
//! a cancellation signal, and the way to emit messages to the stage's
//! outputs.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::Poll,
};

use serde::Serialize;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::{
    error::Error,
    message, names,
    publisher::{Publisher, Unconfirmed},
    traces::TraceHeaders,
};

/// The handler's view of one message being handled. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    job: String,
    attempt: u32,
    stage: Arc<StageInfo>,
    outlet: Outlet,
    /// The trace context of what it emits: the handling's span.
    trace: TraceHeaders,
    cancel: CancellationToken,
    emits: Mutex<Emits>,
}

#[derive(Default)]
struct Emits {
    next: u32,
    /// Publishes whose frames are queued, in emit order.
    pending: Vec<Emit>,
    /// How many of `pending` are still being written.
    writing: usize,
    /// Why an emit could not be sent: the handling then fails, even if the
    /// handler went on after the error.
    failed: Option<String>,
    closed: bool,
    /// What was emitted (output index, n), kept when the pipeline tracks
    /// jobs.
    sent: Vec<(usize, u32)>,
}

/// An emitted message on its way: being written, or waiting for its confirm.
enum Emit {
    Writing(Pin<Box<dyn Future<Output = Result<Unconfirmed, Error>> + Send>>),
    Written(Unconfirmed),
}

/// Emits whose writes may be outstanding before `emit` waits for some.
const MAX_WRITING: usize = 1024;

/// The stage a context belongs to.
#[derive(Debug)]
pub(crate) struct StageInfo {
    pub pipeline: String,
    pub name: String,
    pub outputs: Vec<String>,
    /// The queue of each output, in the same order.
    pub output_queues: Vec<String>,
    /// The pipeline's job stream, when it tracks jobs: each handling's
    /// emitted ids are kept for its event.
    pub job_stream: Option<String>,
    /// A gather stage: a successful handling holds the message.
    pub gather: bool,
    /// The cancelled jobs this worker knows of, when the pipeline tracks
    /// jobs.
    pub cancels: Option<Arc<super::cancels::Cancels>>,
    /// `jobs.result_max`, when this stage is `jobs.result`: a handling's
    /// body is part of its job's result.
    pub result_max: Option<u64>,
    /// Where `Context::progress` reports go, when the pipeline tracks jobs.
    pub progress: Option<super::recorder::Notes>,
}

impl StageInfo {
    pub fn new(pipeline: &str, name: &str, outputs: &[String]) -> StageInfo {
        StageInfo {
            pipeline: pipeline.to_string(),
            name: name.to_string(),
            outputs: outputs.to_vec(),
            output_queues: outputs
                .iter()
                .map(|o| names::stage_queue(pipeline, o))
                .collect(),
            job_stream: None,
            gather: false,
            cancels: None,
            result_max: None,
            progress: None,
        }
    }
}

/// Where emitted messages go.
#[derive(Clone)]
pub(crate) enum Outlet {
    /// Published with confirms.
    Broker(Publisher),
    /// Collected in memory (the test harness).
    Memory(Arc<Mutex<Vec<Emitted>>>),
}

/// A message emitted in memory (see [`crate::testing`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    /// The stage it was sent to.
    pub stage: String,
    /// Its message id, `{parent}.{n}`.
    pub id: String,
    /// Its body.
    pub body: serde_json::Value,
}

impl Context {
    pub(crate) fn new(
        id: String,
        job: String,
        attempt: u32,
        stage: Arc<StageInfo>,
        outlet: Outlet,
        trace: TraceHeaders,
    ) -> Context {
        Context {
            inner: Arc::new(Inner {
                id,
                job,
                attempt,
                stage,
                outlet,
                trace,
                cancel: CancellationToken::new(),
                emits: Mutex::new(Emits::default()),
            }),
        }
    }

    /// The message id (kept from the producer, or assigned).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The W3C `traceparent` of this handling (its span, or the message's
    /// own when nothing is exported), for a call that continues the trace:
    /// the `http` stage sends it. `None` when the message has no trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.inner.trace.traceparent()
    }

    /// The job the message belongs to: the id of the message that entered
    /// the pipeline from outside (`x-warren-job`).
    pub fn job(&self) -> &str {
        &self.inner.job
    }

    /// 1 on the first delivery, then counted up by retries.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The stage being handled.
    pub fn stage(&self) -> &str {
        &self.inner.stage.name
    }

    /// Resolves when the handler should stop: its timeout expired, or its
    /// job was cancelled (`warren job --cancel`, `DELETE /v1/jobs/{id}`;
    /// see [`Context::job_cancelled`]). A handler that awaits I/O is
    /// dropped at a timeout anyway; a handler that loops can check
    /// [`Context::is_cancelled`]. What a handling of a cancelled job
    /// returns no longer matters: a failure is neither retried nor
    /// dead-lettered.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// True once the handler should stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// True once the message's job was cancelled.
    pub fn job_cancelled(&self) -> bool {
        self.inner
            .stage
            .cancels
            .as_ref()
            .is_some_and(|cancels| cancels.is_cancelled(&self.inner.job))
    }

    /// Reports how far the handling got (`fraction` from 0 to 1, and a
    /// note such as "page 4 of 10"), shown with the job (the last report
    /// of each stage) when the pipeline tracks jobs. Reports are written
    /// with the stage's next job events or within a second, never one
    /// broker round trip each, so calling it often costs little; it never
    /// waits.
    pub fn progress(&self, fraction: f64, note: &str) {
        let (Some(notes), Outlet::Broker(publisher)) =
            (&self.inner.stage.progress, &self.inner.outlet)
        else {
            return;
        };
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let event = crate::jobs::Event {
            job: self.inner.job.clone(),
            id: self.inner.id.clone(),
            stage: self.inner.stage.name.clone(),
            what: crate::jobs::What::Progress {
                fraction: crate::jobs::Fraction(fraction),
                note: message::one_line(note, 200),
            },
            emitted: Vec::new(),
            callback: None,
            trace: None,
            at_ms: message::epoch_ms(),
        };
        notes.note(event, publisher);
    }

    /// Registers the handling with the worker's cancels: its token is
    /// cancelled when its job is.
    pub(crate) fn watch_cancels(&self) -> Option<super::cancels::Watch> {
        let cancels = self.inner.stage.cancels.as_ref()?;
        Some(cancels.watch(&self.inner.job, self.inner.cancel.clone()))
    }

    /// Emits `message` to every output of the stage. It is published at
    /// once; the message being handled is acknowledged only after the broker
    /// confirmed every emitted message.
    pub async fn emit<M: Serialize + ?Sized>(&self, message: &M) -> Result<(), Error> {
        let outputs = &self.inner.stage.outputs;
        if outputs.is_empty() {
            return Err(Error::Setup(format!(
                "stage `{}` has no outputs to emit to",
                self.stage()
            )));
        }
        self.send(0..outputs.len(), message).await
    }

    /// Emits `message` to one output, `stage`, which must be among the
    /// stage's outputs.
    pub async fn emit_to<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        message: &M,
    ) -> Result<(), Error> {
        let outputs = &self.inner.stage.outputs;
        let Some(index) = outputs.iter().position(|o| o == stage) else {
            return Err(Error::Setup(format!(
                "stage `{}` cannot emit to `{stage}`: its outputs are [{}]",
                self.stage(),
                outputs.join(", ")
            )));
        };
        self.send(index..index + 1, message).await
    }

    /// Sends to the outputs at `indexes`.
    async fn send<M: Serialize + ?Sized>(
        &self,
        indexes: std::ops::Range<usize>,
        message: &M,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(message)?;
        let n = {
            let mut emits = self.inner.emits.lock().expect("emit state");
            if emits.closed {
                return Err(Error::Setup(
                    "emit after the handler returned; emit before returning".into(),
                ));
            }
            emits.next += 1;
            let n = emits.next - 1;
            if self.inner.stage.job_stream.is_some() {
                emits.sent.extend(indexes.clone().map(|index| (index, n)));
            }
            n
        };
        let id = message::child_id(&self.inner.id, n);
        match &self.inner.outlet {
            Outlet::Broker(publisher) => {
                let last = indexes.end.saturating_sub(1);
                let mut body = Some(body);
                for index in indexes {
                    // The last output takes the body; the others a copy.
                    let payload = if index == last {
                        body.take().unwrap_or_default()
                    } else {
                        body.clone().unwrap_or_default()
                    };
                    // Polled once here, the publish queues its frames now;
                    // its write and confirm are awaited when the handler ends.
                    // Straight to the stage queue (the default exchange), which
                    // spares the broker a lookup in the pipeline exchange.
                    let mut writing = Box::pin(
                        publisher.publish_owned(
                            String::new(),
                            self.inner.stage.output_queues[index].clone(),
                            payload,
                            self.inner
                                .trace
                                .on(message::new_properties(&id, &self.inner.job)),
                        ),
                    );
                    let emit = match writing.as_mut().poll(&mut std::task::Context::from_waker(
                        futures_util::task::noop_waker_ref(),
                    )) {
                        Poll::Ready(written) => Emit::Written(self.note_failure(written)?),
                        Poll::Pending => Emit::Writing(writing),
                    };
                    let backlog = {
                        let mut emits = self.inner.emits.lock().expect("emit state");
                        emits.writing += usize::from(matches!(emit, Emit::Writing(_)));
                        emits.pending.push(emit);
                        emits.writing >= MAX_WRITING
                    };
                    if backlog {
                        self.settle_writes().await?;
                    }
                }
            }
            Outlet::Memory(sink) => {
                let body: serde_json::Value = serde_json::from_slice(&body)?;
                let mut sink = sink.lock().expect("emitted");
                for index in indexes {
                    sink.push(Emitted {
                        stage: self.inner.stage.outputs[index].clone(),
                        id: id.clone(),
                        body: body.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until every queued publish is written (a handler emitting very
    /// many messages waits here now and then).
    async fn settle_writes(&self) -> Result<(), Error> {
        let queued = {
            let mut emits = self.inner.emits.lock().expect("emit state");
            emits.writing = 0;
            std::mem::take(&mut emits.pending)
        };
        let mut written = Vec::with_capacity(queued.len());
        for emit in queued {
            written.push(Emit::Written(match emit {
                Emit::Writing(writing) => self.note_failure(writing.await)?,
                Emit::Written(pending) => pending,
            }));
        }
        let mut emits = self.inner.emits.lock().expect("emit state");
        written.append(&mut emits.pending);
        emits.pending = written;
        Ok(())
    }

    /// Waits until every message emitted so far is confirmed by the broker.
    /// A handler that emits very many messages (or passes on what another
    /// program writes) can call it now and then, so that it goes no faster
    /// than the broker takes them; emitting can go on afterwards.
    pub async fn flush(&self) -> Result<(), Error> {
        let queued = {
            let mut emits = self.inner.emits.lock().expect("emit state");
            emits.writing = 0;
            std::mem::take(&mut emits.pending)
        };
        for emit in queued {
            let unconfirmed = match emit {
                Emit::Writing(writing) => self.note_failure(writing.await)?,
                Emit::Written(unconfirmed) => unconfirmed,
            };
            if let Err(reason) = unconfirmed.confirmed().await {
                let error = Error::Publish {
                    target: "an emitted message".into(),
                    reason,
                };
                return Err(self.note_failure(Err(error)).err().expect("an error"));
            }
        }
        Ok(())
    }

    /// Passes a publish's result on, remembering a failure so that the
    /// handling fails whatever the handler does with the error.
    fn note_failure(&self, result: Result<Unconfirmed, Error>) -> Result<Unconfirmed, Error> {
        if let Err(error) = &result {
            let mut emits = self.inner.emits.lock().expect("emit state");
            emits.failed.get_or_insert_with(|| error.to_string());
        }
        result
    }

    /// Ends emitting and waits for every emitted message's confirm.
    pub(crate) async fn confirm_emits(&self) -> Result<(), String> {
        let emitted = self.close_emits();
        if let Some(failed) = self.inner.emits.lock().expect("emit state").failed.take() {
            return Err(format!("an emitted message was not sent: {failed}"));
        }
        for emit in emitted {
            let pending = match emit {
                Emit::Writing(writing) => writing
                    .await
                    .map_err(|e| format!("an emitted message was not sent: {e}"))?,
                Emit::Written(pending) => pending,
            };
            pending
                .confirmed()
                .await
                .map_err(|reason| format!("an emitted message was not confirmed: {reason}"))?;
        }
        Ok(())
    }

    /// What the handling emitted, for its job event (empty unless the
    /// pipeline tracks jobs).
    pub(crate) fn emitted(&self) -> Vec<crate::jobs::Emission> {
        let emits = self.inner.emits.lock().expect("emit state");
        emits
            .sent
            .iter()
            .map(|&(index, n)| crate::jobs::Emission {
                to: self.inner.stage.outputs[index].clone(),
                id: message::child_id(&self.inner.id, n),
            })
            .collect()
    }

    /// Ends emitting: later emits fail. Returns the unconfirmed emits.
    fn close_emits(&self) -> Vec<Emit> {
        let mut emits = self.inner.emits.lock().expect("emit state");
        emits.closed = true;
        std::mem::take(&mut emits.pending)
    }

    /// Ends emitting after a failure: later emits fail, and what was
    /// emitted is not waited for.
    pub(crate) fn abandon_emits(&self) {
        drop(self.close_emits());
    }

    /// Tells the handler to stop.
    pub(crate) fn cancel(&self) {
        self.inner.cancel.cancel();
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.inner.id)
            .field("job", &self.inner.job)
            .field("attempt", &self.inner.attempt)
            .field("stage", &self.inner.stage.name)
            .finish()
    }
}
