//! What a handler gets besides its message: the message's id and attempt,
//! a cancellation signal, and the way to emit messages to the stage's
//! outputs.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::{
    error::Error,
    message,
    publisher::{Pending, Publisher},
};

/// The handler's view of one message being handled. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    attempt: u32,
    stage: Arc<StageInfo>,
    outlet: Outlet,
    cancel: CancellationToken,
    emits: Mutex<Emits>,
}

#[derive(Default)]
struct Emits {
    next: u32,
    pending: Vec<Pending>,
    closed: bool,
}

/// The stage a context belongs to.
#[derive(Debug)]
pub(crate) struct StageInfo {
    pub pipeline: String,
    pub name: String,
    pub outputs: Vec<String>,
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
    pub(crate) fn new(id: String, attempt: u32, stage: Arc<StageInfo>, outlet: Outlet) -> Context {
        Context {
            inner: Arc::new(Inner {
                id,
                attempt,
                stage,
                outlet,
                cancel: CancellationToken::new(),
                emits: Mutex::new(Emits::default()),
            }),
        }
    }

    /// The message id (kept from the producer, or assigned).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// 1 on the first delivery, then counted up by retries.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The stage being handled.
    pub fn stage(&self) -> &str {
        &self.inner.stage.name
    }

    /// Resolves when the handler should stop: its timeout expired. A
    /// handler that awaits I/O is dropped at that point anyway; a handler
    /// that loops can check [`Context::is_cancelled`].
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// True once the handler should stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
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
        self.send(outputs, message).await
    }

    /// Emits `message` to one output, `stage`, which must be among the
    /// stage's outputs.
    pub async fn emit_to<M: Serialize + ?Sized>(
        &self,
        stage: &str,
        message: &M,
    ) -> Result<(), Error> {
        let outputs = &self.inner.stage.outputs;
        let Some(output) = outputs.iter().find(|o| *o == stage) else {
            return Err(Error::Setup(format!(
                "stage `{}` cannot emit to `{stage}`: its outputs are [{}]",
                self.stage(),
                outputs.join(", ")
            )));
        };
        self.send(std::slice::from_ref(output), message).await
    }

    async fn send<M: Serialize + ?Sized>(
        &self,
        stages: &[String],
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
            emits.next - 1
        };
        let id = message::child_id(&self.inner.id, n);
        match &self.inner.outlet {
            Outlet::Broker(publisher) => {
                for stage in stages {
                    let pending = publisher
                        .publish(
                            &self.inner.stage.pipeline,
                            stage,
                            &body,
                            message::new_properties(&id),
                        )
                        .await?;
                    self.inner
                        .emits
                        .lock()
                        .expect("emit state")
                        .pending
                        .push(pending);
                }
            }
            Outlet::Memory(sink) => {
                let body: serde_json::Value = serde_json::from_slice(&body)?;
                let mut sink = sink.lock().expect("emitted");
                for stage in stages {
                    sink.push(Emitted {
                        stage: stage.clone(),
                        id: id.clone(),
                        body: body.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Ends emitting and waits for every emitted message's confirm.
    pub(crate) async fn confirm_emits(&self) -> Result<(), String> {
        for confirm in self.close_emits() {
            confirm
                .confirmed()
                .await
                .map_err(|reason| format!("an emitted message was not confirmed: {reason}"))?;
        }
        Ok(())
    }

    /// Ends emitting: later emits fail. Returns the unconfirmed emits.
    pub(crate) fn close_emits(&self) -> Vec<Pending> {
        let mut emits = self.inner.emits.lock().expect("emit state");
        emits.closed = true;
        std::mem::take(&mut emits.pending)
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
            .field("attempt", &self.inner.attempt)
            .field("stage", &self.inner.stage.name)
            .finish()
    }
}
