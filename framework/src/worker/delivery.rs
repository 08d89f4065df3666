//! One delivery, from arrival to settlement: run the handler, decide (the
//! [`Disposition`]), then acknowledge, or first publish a retry, a dead
//! letter or a copy (with a confirm). When even that publish fails the
//! delivery is requeued and the session starts over.

use std::{sync::atomic::Ordering, time::Duration};

use lapin::{
    Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicPublishOptions},
    types::AMQPValue,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use super::{
    acks::Settle,
    context::{Context, Outlet},
    handler::{Handled, invoke},
    intake::Intake,
    outcome::{Disposition, decide},
    stage::StageRuntime,
};
use crate::{
    backoff::Backoff,
    duration,
    jobs::{Emitted, Event, What},
    message, names,
    publisher::{Publisher, Unconfirmed},
};

/// Where a delivery's copy goes, and with which headers changed.
struct Forward<'a> {
    queue: &'a str,
    id: &'a str,
    set: Vec<(&'static str, AMQPValue)>,
    remove: &'static [&'static str],
}

impl StageRuntime {
    /// Carries out an [`Intake`] other than `Handle`: publishes the copy
    /// (or the dead letter) and says how to settle the original. A message
    /// without an id gets its id through [`StageRuntime::assign`].
    pub async fn admit(
        &self,
        publisher: &Publisher,
        channel: &Channel,
        delivery: &Delivery,
        intake: &Intake,
        queue: &str,
    ) -> Result<Settle, Settle> {
        let props = &delivery.properties;
        let assigned = message::id_of(props).is_none();
        let id = message::id_of(props)
            .map(str::to_string)
            .unwrap_or_else(message::new_id);
        let job = message::job_of(props).unwrap_or_else(|| id.clone());
        let job_header = (message::JOB, AMQPValue::LongString(job.as_str().into()));
        let forward = match intake {
            Intake::Handle => return Ok(Settle::Ack),
            Intake::AssignId => {
                debug!(stage = %self.info.name, %id, "the message came without an id: it gets one");
                Forward {
                    queue,
                    id: &id,
                    set: vec![job_header],
                    remove: &[],
                }
            }
            Intake::Isolate { attempt } => {
                info!(stage = %self.info.name, %id, attempt, "its last worker stopped while holding it: it will be handled alone");
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                Forward {
                    queue: &self.isolation_queue,
                    id: &id,
                    set: vec![
                        job_header,
                        (message::ATTEMPT, message::int(u64::from(*attempt))),
                        (
                            message::ERROR,
                            message::text("its worker stopped before settling it"),
                        ),
                    ],
                    remove: &[],
                }
            }
            Intake::Dead { reason } => {
                let dead = Disposition::Dead {
                    reason: reason.clone(),
                };
                self.record(publisher, delivery, &job, &id, &dead, Vec::new)
                    .await?;
                return self
                    .carry_out(
                        publisher,
                        delivery,
                        &id,
                        Disposition::Dead {
                            reason: reason.clone(),
                        },
                        message::attempt_of(props),
                    )
                    .await;
            }
        };
        if assigned {
            Ok(self.assign(publisher, channel, delivery, forward).await)
        } else {
            self.forward(publisher, delivery, forward).await
        }
    }

    /// Gives a message that came without an id its id, so that every later
    /// delivery carries the same one. The copy with the id is published on
    /// the channel the original came from and the original acknowledged
    /// right behind it, before the copy's confirm: the broker handles a
    /// channel's frames in order, so the original is never delivered again
    /// once its copy exists (waiting for the confirm first would leave a
    /// window in which a killed worker's original came back for a second
    /// id). Should the broker refuse the copy, it is published again through
    /// the publisher until confirmed.
    async fn assign(
        &self,
        publisher: &Publisher,
        channel: &Channel,
        delivery: &Delivery,
        forward: Forward<'_>,
    ) -> Settle {
        let props =
            message::republish_properties(&delivery.properties, &forward.set, forward.remove)
                .with_message_id(message::short(forward.id));
        let mut publish = Box::pin(channel.basic_publish(
            "".into(),
            forward.queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &delivery.data,
            props.clone(),
        ));
        let mut ack =
            Box::pin(channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()));
        // Polled once each, back to back: both frames are queued before
        // anything else of this channel.
        let (published, acked) = {
            let mut poll = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
            (
                publish.as_mut().poll(&mut poll),
                ack.as_mut().poll(&mut poll),
            )
        };
        let confirm = match published {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => publish.await,
        };
        let acked = match acked {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => ack.await,
        };
        if acked.is_err() {
            // The channel is gone: the original comes back, as a
            // redelivery, and is isolated; the copy (if any) is a
            // duplicate with the same content and another id.
            return Settle::Requeue;
        }
        let confirmed = match confirm {
            Ok(confirm) => Unconfirmed::from(confirm).confirmed().await,
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = confirmed {
            warn!(stage = %self.info.name, id = %forward.id, "the copy with its id was not taken ({reason}); sending it again");
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            while let Err(error) = publisher
                .publish_before_ack("", forward.queue, &delivery.data, props.clone())
                .await
            {
                warn!(stage = %self.info.name, id = %forward.id, %error, "sending the copy with its id again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Settle::Acked
    }

    /// Handles one delivery (`probe`: it is the circuit breaker's probe),
    /// holding `slot` (a place in the stage's `concurrency`, if it takes one)
    /// while its handler runs, and says how to settle it. `Err` means the broker refused a publish: the
    /// delivery is requeued and the session should start over
    /// (re-declaring what may be missing).
    pub async fn handle(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
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
        let id = message::id_of(props)
            .map(str::to_string)
            .unwrap_or_else(message::new_id);
        let job = message::job_of(props).unwrap_or_else(|| id.clone());
        if let Some(not_before) = message::not_before_of(props) {
            let now = message::epoch_ms();
            if not_before > now + 50 {
                let delay = Duration::from_millis(not_before - now);
                let wait = Disposition::Retry {
                    attempt,
                    delay,
                    reason: String::new(),
                };
                return Box::pin(self.carry_out(publisher, delivery, &id, wait, attempt)).await;
            }
        }
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let ctx = Context::new(
            id.clone(),
            job,
            attempt,
            self.info.clone(),
            Outlet::Broker(publisher.clone()),
        );
        if let Some(sent) = delivery.properties.timestamp() {
            let waited = message::epoch_ms().saturating_sub(sent.saturating_mul(1000));
            self.stats.queue_wait.observe(Duration::from_millis(waited));
        }
        let started = std::time::Instant::now();
        let handled = invoke(
            &*self.handler,
            &delivery.data,
            ctx.clone(),
            self.stage.timeout,
            slot,
        )
        .await;
        self.stats.handle.observe(started.elapsed());
        let disposition = match handled {
            Handled::Undecodable(reason) => Disposition::Dead { reason },
            Handled::Panicked(failure) => decide(Err(failure), attempt, &self.stage.retry),
            Handled::Finished(outcome) => {
                // Successes and retryable failures tell the breaker whether
                // the calls work; a message that can never succeed does not.
                let call_failed = matches!(&outcome, Err(f) if f.is_about_calls());
                if (call_failed || outcome.is_ok()) && self.breaker.record(outcome.is_ok(), probe) {
                    // The calls fail for every message (an outage): this one
                    // goes back to the queue, its attempt not counted.
                    let reason = outcome.err().map(|f| f.to_string()).unwrap_or_default();
                    Disposition::Requeue { reason }
                } else {
                    decide(outcome, attempt, &self.stage.retry)
                }
            }
        };
        if disposition != Disposition::Done && !publisher.is_open() {
            // The connection is gone (the failure is most likely that): the
            // broker requeues the delivery and the session reconnects. Say
            // nothing per message; the session says it once.
            return Err(Settle::Requeue);
        }
        // The common path (untracked, done) stays small: the task of each
        // delivery holds this future, and is moved with it. The rest is
        // boxed where it is taken.
        if self.info.job_stream.is_some() {
            Box::pin(
                self.record(publisher, delivery, ctx.job(), &id, &disposition, || {
                    ctx.emitted()
                }),
            )
            .await?;
        }
        if disposition == Disposition::Done {
            return Ok(self.done());
        }
        Box::pin(self.carry_out(publisher, delivery, &id, disposition, attempt)).await
    }

    /// Counts a handling done: the delivery is acknowledged as it is.
    fn done(&self) -> Settle {
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        Settle::Ack
    }

    /// Writes the handling's event to the job stream (when the pipeline
    /// tracks jobs), confirmed, before anything settles the delivery: a
    /// settled message always has its record. `emitted` lists what a
    /// successful handling emitted (asked only then). A requeue or a wait
    /// for a later time is not an attempt and writes nothing. `Err` (the
    /// broker did not take it) requeues the delivery.
    async fn record(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        job: &str,
        id: &str,
        disposition: &Disposition,
        emitted: impl FnOnce() -> Vec<Emitted>,
    ) -> Result<(), Settle> {
        let Some(stream) = &self.info.job_stream else {
            return Ok(());
        };
        let what = match disposition {
            // A gather stage's handling holds the message (its body is
            // JSON: the handler took it) until the job keeper releases it.
            Disposition::Done if self.info.gather => What::Held {
                item: serde_json::from_slice(&delivery.data).unwrap_or_default(),
            },
            Disposition::Done => What::Done,
            Disposition::Retry { reason, .. } if !reason.is_empty() => What::Retrying {
                reason: reason.clone(),
            },
            Disposition::Dead { reason } => What::Dead {
                reason: reason.clone(),
            },
            Disposition::Retry { .. } | Disposition::Requeue { .. } => return Ok(()),
        };
        let emitted = if matches!(what, What::Done | What::Held { .. }) {
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
            at_ms: message::epoch_ms(),
        };
        self.recorder
            .record(stream, publisher, event)
            .await
            .map_err(|error| {
                warn!(stage = %self.info.name, %id, %error, "the job stream did not take the handling's event; the message goes back to the queue");
                Settle::Requeue
            })
    }

    /// Carries out a disposition of a message handled at `attempt`.
    async fn carry_out(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        id: &str,
        disposition: Disposition,
        attempt: u32,
    ) -> Result<Settle, Settle> {
        let job = message::job_of(&delivery.properties).unwrap_or_else(|| id.to_string());
        let job_header = (message::JOB, AMQPValue::LongString(job.as_str().into()));
        match disposition {
            Disposition::Done => Ok(self.done()),
            Disposition::Requeue { reason } => {
                debug!(stage = %self.info.name, %id, attempt, "back to the queue while the calls fail: {reason}");
                let back = Forward {
                    queue: &self.queue,
                    id,
                    set: vec![job_header],
                    remove: &[],
                };
                self.forward(publisher, delivery, back).await
            }
            Disposition::Retry {
                attempt: next,
                delay,
                reason,
            } => {
                let Some(hop) = self.stage.retry.hop(delay) else {
                    // No retry queues (retries are off): nothing can hold it.
                    let reason = if reason.is_empty() {
                        "no retry queue to wait in".to_string()
                    } else {
                        reason
                    };
                    return Box::pin(self.carry_out(
                        publisher,
                        delivery,
                        id,
                        Disposition::Dead { reason },
                        attempt,
                    ))
                    .await;
                };
                let mut set = vec![
                    job_header,
                    (message::ATTEMPT, message::int(u64::from(next))),
                ];
                if !reason.is_empty() {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    info!(stage = %self.info.name, %id, attempt, "retrying in {}: {reason}", duration::format(delay));
                    set.push((message::ERROR, message::text(&reason)));
                }
                let remove: &'static [&'static str] = if hop.again {
                    set.push((
                        message::NOT_BEFORE,
                        message::int(message::epoch_ms_in(delay)),
                    ));
                    &[]
                } else {
                    &[message::NOT_BEFORE]
                };
                let queue = names::retry_queue(&self.info.pipeline, &self.info.name, hop.level);
                let retry = Forward {
                    queue: &queue,
                    id,
                    set,
                    remove,
                };
                self.forward(publisher, delivery, retry).await
            }
            Disposition::Dead { reason } => {
                self.stats.dead.fetch_add(1, Ordering::Relaxed);
                warn!(stage = %self.info.name, %id, attempt, "dead-lettered: {reason}");
                let dead = Forward {
                    queue: &self.dead_queue,
                    id,
                    set: vec![
                        job_header,
                        (
                            message::STAGE,
                            AMQPValue::LongString(self.info.name.as_str().into()),
                        ),
                        (message::ERROR, message::text(&reason)),
                        (message::ATTEMPT, message::int(u64::from(attempt))),
                    ],
                    remove: &[message::NOT_BEFORE],
                };
                self.forward(publisher, delivery, dead).await
            }
        }
    }

    /// Publishes a copy of the delivery to `forward.queue` (through the
    /// default exchange) and, once the broker confirmed it, acks the
    /// original.
    async fn forward(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        forward: Forward<'_>,
    ) -> Result<Settle, Settle> {
        let props =
            message::republish_properties(&delivery.properties, &forward.set, forward.remove)
                .with_message_id(message::short(forward.id));
        match publisher
            .publish_before_ack("", forward.queue, &delivery.data, props)
            .await
        {
            Ok(()) => Ok(Settle::Ack),
            Err(error) => {
                warn!(stage = %self.info.name, id = %forward.id, %error, "could not hand the message over; it goes back to the queue");
                Err(Settle::Requeue)
            }
        }
    }

    /// Gives a delivery that was never started back to `queue` unchanged
    /// (a pause or a drain): a copy, then an ack, so that the broker's
    /// `redelivered` flag keeps meaning that a worker stopped holding it.
    pub async fn give_back(
        &self,
        publisher: &Publisher,
        channel: &Channel,
        delivery: &Delivery,
        queue: &str,
    ) -> Result<Settle, Settle> {
        let Some(id) = message::id_of(&delivery.properties).map(str::to_string) else {
            // Without an id it is given one on the way.
            return self
                .admit(publisher, channel, delivery, &Intake::AssignId, queue)
                .await;
        };
        let back = Forward {
            queue,
            id: &id,
            set: Vec::new(),
            remove: &[],
        };
        self.forward(publisher, delivery, back).await
    }
}
