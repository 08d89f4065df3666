//! Handing a delivery over and saying how to settle it: a copy (with an
//! id, to isolation, given back), a retry or a dead letter is published on
//! the publishing connection and confirmed, then the original is
//! acknowledged on the channel it came from. When even that publish fails
//! the delivery is requeued and the session starts over.

use std::sync::atomic::Ordering;

use lapin::{message::Delivery, types::AMQPValue};
use tracing::{debug, info, warn};

use super::{
    acks::Settle,
    intake::{Intake, assigned_id},
    outcome::Disposition,
    stage::StageRuntime,
};
use crate::{delay, duration, message, names, publisher::Publisher};

/// Where a delivery's copy goes (through `exchange`, the default one
/// unless said otherwise, with routing key `queue`), and with which
/// headers changed.
struct Forward<'a> {
    exchange: &'a str,
    queue: &'a str,
    id: &'a str,
    set: Vec<(&'static str, AMQPValue)>,
    remove: &'static [&'static str],
}

/// The id of a delivery: its own, or the one it is given
/// ([`assigned_id`]: the same on every delivery of it).
pub(crate) fn id_of(delivery: &Delivery) -> String {
    match message::id_of(&delivery.properties) {
        Some(id) => id.to_string(),
        None => assigned_id(
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
            &delivery.properties,
            &delivery.data,
        ),
    }
}

impl StageRuntime {
    /// Whether `delivery` comes again because the worker that held it
    /// stopped (a crash, a kill, a lost connection): flagged `redelivered`
    /// by the broker, and not given back by a peek (`peeks.rs`).
    pub fn crashed(&self, delivery: &Delivery) -> bool {
        delivery.redelivered
            && !self.peeks.explains(
                &self.stage.name,
                &id_of(delivery),
                message::returns_of(&delivery.properties),
            )
    }

    /// Carries out an [`Intake`] other than `Handle`: publishes the copy
    /// (or the dead letter) and says how to settle the original. A message
    /// without an id gets its id on the way: the copy carries it, and it is
    /// derived from the message, so a worker that stops after the copy's
    /// confirm and before the ack leaves an original that gets the same id
    /// when it comes back.
    pub async fn admit(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        intake: &Intake,
        queue: &str,
    ) -> Result<Settle, Settle> {
        let props = &delivery.properties;
        let id = id_of(delivery);
        let job = message::job_of(props).unwrap_or_else(|| id.clone());
        let job_header = (message::JOB, AMQPValue::LongString(job.as_str().into()));
        let forward = match intake {
            Intake::Handle => return Ok(Settle::Ack),
            Intake::AssignId => {
                debug!(stage = %self.info.name, %id, "the message came without an id: it gets one");
                Forward {
                    exchange: "",
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
                    exchange: "",
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
                if let Err(why) = self
                    .record(publisher, delivery, &job, &id, &dead, Vec::new)
                    .await
                {
                    // Delivered again already: a requeue keeps its flag, and
                    // it is dead-lettered once the stream answers.
                    debug!(stage = %self.info.name, %id, "the job stream did not take its dead letter's event ({why}); it goes back to its queue");
                    return Ok(Settle::Nack);
                }
                return self
                    .carry_out(publisher, delivery, &id, dead, message::attempt_of(props))
                    .await;
            }
        };
        self.forward(publisher, delivery, forward).await
    }

    /// Carries out a disposition of a message handled at `attempt`.
    pub(crate) async fn carry_out(
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
            Disposition::GiveBack { reason } => {
                debug!(stage = %self.info.name, %id, attempt, "back to the queue, its attempt not counted: {reason}");
                let back = Forward {
                    exchange: "",
                    queue: &self.queue,
                    id,
                    set: vec![job_header],
                    remove: &[],
                };
                self.forward(publisher, delivery, back).await
            }
            Disposition::Isolate { reason } => {
                info!(stage = %self.info.name, %id, attempt, "handled alone next, its attempt not counted: {reason}");
                let alone = Forward {
                    exchange: "",
                    queue: &self.isolation_queue,
                    id,
                    set: vec![job_header, (message::ERROR, message::text(&reason))],
                    remove: &[],
                };
                self.forward(publisher, delivery, alone).await
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
                    exchange: "",
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
                    exchange: "",
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
    /// default exchange) and, once the broker confirmed it, says to ack the
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
            .publish_before_ack(forward.exchange, forward.queue, &delivery.data, props)
            .await
        {
            Ok(()) => Ok(Settle::Ack),
            Err(error) => {
                warn!(stage = %self.info.name, id = %forward.id, %error, "could not hand the message over; it goes back to the queue");
                Err(Settle::Nack)
            }
        }
    }

    /// Sends a delivery that came before its `x-warren-not-before` (still
    /// `remaining` away) to the delay cascade, to come back to this
    /// stage's queue on time (`delay.rs`); in a tracked pipeline, after its
    /// `scheduled` event. Nothing in the worker waits for it.
    pub(crate) async fn postpone(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        id: &str,
        not_before_ms: u64,
        remaining: std::time::Duration,
    ) -> Result<Settle, Settle> {
        let job = message::job_of(&delivery.properties).unwrap_or_else(|| id.to_string());
        if let Err(why) = self
            .schedule(publisher, delivery, &job, id, not_before_ms)
            .await
        {
            debug!(stage = %self.info.name, %id, "the job stream did not take its scheduled event ({why}); it goes back to its queue");
            return Box::pin(self.give_back(publisher, delivery, &self.queue)).await;
        }
        let Some(level) = delay::next_level(remaining) else {
            return Ok(self.done());
        };
        debug!(stage = %self.info.name, %id, "not before {not_before_ms}: it waits {} on the broker", duration::format(remaining));
        let exchange = names::delay_level(&self.info.pipeline, level);
        let key = delay::routing_key(remaining, &self.info.name);
        let wait = Forward {
            exchange: &exchange,
            queue: &key,
            id,
            set: vec![(message::JOB, AMQPValue::LongString(job.as_str().into()))],
            remove: &[],
        };
        self.forward(publisher, delivery, wait).await
    }

    /// Gives a delivery back to `queue` as it came, its attempt not counted
    /// (a pause, a drain, an event the job stream did not take): a copy,
    /// then an ack, so that the broker's `redelivered` flag keeps meaning
    /// that a worker stopped holding it. One without an id gets its id on
    /// the way.
    pub async fn give_back(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        queue: &str,
    ) -> Result<Settle, Settle> {
        let Some(id) = message::id_of(&delivery.properties).map(str::to_string) else {
            return self
                .admit(publisher, delivery, &Intake::AssignId, queue)
                .await;
        };
        let back = Forward {
            exchange: "",
            queue,
            id: &id,
            set: Vec::new(),
            remove: &[],
        };
        self.forward(publisher, delivery, back).await
    }
}
