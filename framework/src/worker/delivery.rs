//! One delivery's handling: run the handler, decide (the [`Disposition`]),
//! write the handling's job event when the pipeline tracks jobs, then hand
//! the delivery over (`handover.rs`) or acknowledge it as done.

use std::{sync::atomic::Ordering, time::Duration};

use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument as _, debug};

use super::{
    acks::Settle,
    context::{Context, Outlet},
    handler::{Handled, invoke},
    handover::id_of,
    outcome::{Disposition, decide},
    stage::StageRuntime,
};
use crate::{
    delay,
    jobs::{Emission, Event, What},
    message,
    publisher::Publisher,
    timings,
    traces::Handling,
};

impl StageRuntime {
    /// Handles one delivery from `queue` (`probe`: it is the circuit
    /// breaker's probe), holding `slot` (a place in the stage's
    /// `concurrency`, if it takes one) while its handler runs, and says how
    /// to settle it. `Err` means the broker refused a publish: the delivery
    /// is requeued and the session should start over (re-declaring what
    /// may be missing).
    pub async fn handle(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        queue: &str,
        probe: bool,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Settle, Settle> {
        /// Counts a handling out even when its task is aborted (a lost
        /// session, the end of the grace period).
        struct Counted<'a>(&'a std::sync::atomic::AtomicU64);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.stats.in_flight);

        let props = &delivery.properties;
        let attempt = message::attempt_of(props);
        let id = id_of(delivery);
        let job = message::job_of(props).unwrap_or_else(|| id.clone());
        if let Some(cancels) = &self.info.cancels
            && cancels.is_cancelled(&job)
        {
            return Box::pin(self.skip(publisher, delivery, queue, &job, &id)).await;
        }
        if let Some(not_before) = message::not_before_of(props)
            && let Some(remaining) = delay::remaining(not_before, message::epoch_ms())
        {
            // Early: it waits on the broker, not here.
            return Box::pin(self.postpone(publisher, delivery, &id, not_before, remaining)).await;
        }
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let waited = delivery.properties.timestamp().map(|sent| {
            Duration::from_millis(message::epoch_ms().saturating_sub(sent.saturating_mul(1000)))
        });
        if let Some(waited) = waited {
            self.stats.queue_wait.observe(waited, &timings::QUEUE_WAIT);
        }
        let handling = Handling::start(&self.info.name, &id, &job, attempt, waited, props);
        let _running = self.stats.running.start(&id, &job, attempt);
        // Every line logged while it is handled names the message, its job
        // and its trace.
        let span = tracing::info_span!("handling", %id, %job, trace_id = %handling.trace_id());
        let ctx = Context::new(
            id.clone(),
            job,
            attempt,
            self.info.clone(),
            Outlet::Broker(publisher.clone()),
            handling.headers().clone(),
        );
        let watch = ctx.watch_cancels();
        let started = std::time::Instant::now();
        let handled = invoke(
            &*self.handler,
            &delivery.data,
            ctx.clone(),
            self.stage.timeout,
            slot,
        )
        .instrument(span.clone())
        .await;
        self.stats
            .handle
            .observe(started.elapsed(), &timings::HANDLE);
        drop(watch);
        if !matches!(handled, Handled::Finished(Ok(()))) && ctx.job_cancelled() {
            // Its job was cancelled while it ran: how it ended no longer
            // matters, nothing is retried or dead-lettered for it.
            return Box::pin(self.skip(publisher, delivery, queue, ctx.job(), &id)).await;
        }
        // Handled alone (in isolation), a suspect is the culprit: charged.
        let handled = match handled {
            Handled::Finished(Err(failure)) if queue == self.isolation_queue => {
                Handled::Finished(Err(failure.alone()))
            }
            handled => handled,
        };
        let disposition = match handled {
            Handled::Undecodable(reason) => Disposition::Dead { reason },
            Handled::Panicked(failure) => decide(Err(failure), attempt, &self.stage.retry),
            Handled::Finished(Err(failure))
                if failure.action() == super::outcome::Action::Unavailable =>
            {
                // What the stage writes to is down: nothing to do with this
                // message, which goes back uncharged; the stage pauses.
                self.breaker.trip(probe, failure.reason());
                decide(Err(failure), attempt, &self.stage.retry)
            }
            Handled::Finished(outcome) => {
                // Successes and retryable failures tell the breaker whether
                // the calls work; a message that can never succeed does not.
                let call_failed = matches!(&outcome, Err(f) if f.is_about_calls());
                if (call_failed || outcome.is_ok()) && self.breaker.record(outcome.is_ok(), probe) {
                    // The calls fail for every message (an outage): this one
                    // goes back to the queue, its attempt not counted.
                    let reason = outcome.err().map(|f| f.to_string()).unwrap_or_default();
                    Disposition::GiveBack { reason }
                } else {
                    decide(outcome, attempt, &self.stage.retry)
                }
            }
        };
        let (outcome, reason) = disposition.outcome();
        handling.end(outcome, reason);
        if disposition != Disposition::Done && !publisher.is_open() {
            // The connection is gone (the failure is most likely that): the
            // broker requeues the delivery and the session reconnects. Say
            // nothing per message; the session says it once.
            return Err(Settle::Nack);
        }
        // The common path (untracked, done) stays small: the task of each
        // delivery holds this future, and is moved with it. The rest is
        // boxed where it is taken.
        if self.info.job_stream.is_some()
            && let Err(reason) =
                Box::pin(
                    self.record(publisher, delivery, ctx.job(), &id, &disposition, || {
                        ctx.emitted()
                    }),
                )
                .await
        {
            // The handling never failed: it does not count. Its message
            // goes back as it came, to be handled again once the stream
            // answers (the stage pauses meanwhile).
            debug!(stage = %self.info.name, %id, %reason, "the job stream did not take the handling's event; the message goes back to its queue, its attempt not counted");
            return Box::pin(self.give_back(publisher, delivery, queue)).await;
        }
        if disposition == Disposition::Done {
            return Ok(self.done());
        }
        if let Disposition::GiveBack { reason } = &disposition
            && queue == self.isolation_queue
        {
            // An isolated message stays isolated: it goes back to the
            // isolation queue, to be handled alone (and charged there).
            debug!(stage = %self.info.name, %id, attempt, "back to the isolation queue, its attempt not counted: {reason}");
            return Box::pin(self.give_back(publisher, delivery, queue)).await;
        }
        Box::pin(self.carry_out(publisher, delivery, &id, disposition, attempt))
            .instrument(span)
            .await
    }

    /// Acknowledges a delivery of a cancelled job without handling it
    /// (or after a handling that did not succeed), counted `cancelled`;
    /// its `skipped` event goes first when the pipeline tracks jobs.
    async fn skip(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        queue: &str,
        job: &str,
        id: &str,
    ) -> Result<Settle, Settle> {
        if self.info.job_stream.is_some() {
            let event = Event {
                job: job.to_string(),
                id: id.to_string(),
                stage: self.info.name.clone(),
                what: What::Skipped,
                emitted: Vec::new(),
                callback: None,
                trace: None,
                at_ms: message::epoch_ms(),
            };
            if let Err(reason) = self.recorder.record(publisher, event).await {
                debug!(stage = %self.info.name, %id, %reason, "the job stream did not take a cancelled message's event; it goes back to its queue");
                return Box::pin(self.give_back(publisher, delivery, queue)).await;
            }
        }
        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        Ok(Settle::Ack)
    }

    /// Counts a handling done: the delivery is acknowledged as it is.
    pub(crate) fn done(&self) -> Settle {
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        Settle::Ack
    }

    /// Writes a `scheduled` event (the message waits for `not_before_ms`)
    /// to the job stream when the pipeline tracks jobs, confirmed, before
    /// the delivery goes to the delay cascade: a job a producer delayed by
    /// its header alone shows `scheduled`, not `unknown`.
    pub(crate) async fn schedule(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        job: &str,
        id: &str,
        not_before_ms: u64,
    ) -> Result<(), String> {
        if self.info.job_stream.is_none() {
            return Ok(());
        }
        let event = Event {
            job: job.to_string(),
            id: id.to_string(),
            stage: self.info.name.clone(),
            what: What::Scheduled {
                until_ms: not_before_ms,
            },
            emitted: Vec::new(),
            callback: (id == job)
                .then(|| message::text_header(&delivery.properties, message::CALLBACK))
                .flatten(),
            trace: (id == job)
                .then(|| crate::traces::traceparent_of(&delivery.properties))
                .flatten(),
            at_ms: message::epoch_ms(),
        };
        self.recorder.record(publisher, event).await
    }

    /// Writes the handling's event to the job stream (when the pipeline
    /// tracks jobs), confirmed, before anything settles the delivery: a
    /// settled message always has its record. `emitted` lists what a
    /// successful handling emitted (asked only then). A requeue or a wait
    /// for a later time is not an attempt and writes nothing. `Err` says
    /// why the stream did not take it (the stage's job stream gate is open
    /// then): the delivery goes back uncharged.
    pub(crate) async fn record(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        job: &str,
        id: &str,
        disposition: &Disposition,
        emitted: impl FnOnce() -> Vec<Emission>,
    ) -> Result<(), String> {
        if self.info.job_stream.is_none() {
            return Ok(());
        }
        let what = match disposition {
            // A gather stage's handling holds the message (its body is
            // JSON: the handler took it) until the job keeper releases it.
            Disposition::Done if self.info.gather => What::Held {
                item: serde_json::from_slice(&delivery.data).unwrap_or_default(),
            },
            Disposition::Done => match self.info.result_max {
                // The result stage: its body is part of the job's result.
                Some(max) => What::Result {
                    item: serde_json::from_slice(&delivery.data).unwrap_or_default(),
                    max,
                },
                None => What::Done,
            },
            Disposition::Retry { reason, .. } if !reason.is_empty() => What::Retrying {
                reason: reason.clone(),
            },
            Disposition::Dead { reason } => What::Dead {
                reason: reason.clone(),
            },
            Disposition::Retry { .. }
            | Disposition::GiveBack { .. }
            | Disposition::Isolate { .. } => return Ok(()),
        };
        let emitted = if matches!(what, What::Done | What::Held { .. } | What::Result { .. }) {
            emitted()
        } else {
            Vec::new()
        };
        let event = Event {
            job: job.to_string(),
            id: id.to_string(),
            stage: self.info.name.clone(),
            what,
            emitted,
            callback: (id == job)
                .then(|| message::text_header(&delivery.properties, message::CALLBACK))
                .flatten(),
            trace: None,
            at_ms: message::epoch_ms(),
        };
        self.recorder.record(publisher, event).await
    }
}
