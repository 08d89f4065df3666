//! One delivery, from arrival to settlement: run the handler, then ack, or
//! publish a retry or a dead letter (with a confirm) and ack, or requeue
//! when even that failed.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use lapin::{message::Delivery, types::AMQPValue};
use tracing::{debug, info, warn};

use super::{
    Action,
    acks::Settle,
    breaker::Breaker,
    context::{Context, Outlet, StageInfo},
    handler::{Handler, Invocation, invoke},
    outcome::{Disposition, decide},
};
use crate::{
    duration, message, names, pipeline::Stage, publisher::Publisher, rate::Limiter,
    report::StageStats,
};

/// A stage as served by this process: its settings, its handler and its
/// counters.
pub(crate) struct StageRuntime {
    pub info: Arc<StageInfo>,
    pub stage: Stage,
    pub handler: Arc<dyn Handler>,
    pub queue: String,
    pub dead_queue: String,
    pub stats: Arc<StageStats>,
    /// This worker's share of the stage's rate limit, if it has one.
    pub limiter: Option<Arc<Limiter>>,
    /// Pauses consumption when calls fail at a high rate.
    pub breaker: Breaker,
}

impl StageRuntime {
    pub fn new(pipeline: &str, stage: Stage, handler: Arc<dyn Handler>) -> StageRuntime {
        StageRuntime {
            info: Arc::new(StageInfo::new(pipeline, &stage.name, &stage.outputs)),
            queue: names::stage_queue(pipeline, &stage.name),
            dead_queue: names::dead_queue(pipeline, &stage.name),
            limiter: stage.rate_limit.map(|limit| Arc::new(Limiter::new(limit))),
            breaker: Breaker::new(&stage.name),
            stage,
            handler,
            stats: Arc::default(),
        }
    }

    /// Handles one delivery (see [`StageRuntime::process`]) and counts it.
    pub async fn handle(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
    ) -> Result<Settle, Settle> {
        /// Counts a handling out even when its task is aborted (a lost
        /// session, the end of the grace period).
        struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(&self.stats.in_flight);
        self.process(publisher, delivery).await
    }

    /// Handles one delivery and says how to settle it. `Err` means the
    /// broker refused a retry or dead letter: the delivery is requeued and
    /// the session should start over (re-declaring what may be missing).
    pub async fn process(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
    ) -> Result<Settle, Settle> {
        let props = &delivery.properties;
        let attempt = message::attempt_of(props);
        let id = match message::id_of(props) {
            Some(id) => id.to_string(),
            None => message::new_id(),
        };
        if let Some(not_before) = message::not_before_of(props) {
            let now = message::epoch_ms();
            if not_before > now + 50 {
                let wait = Duration::from_millis(not_before - now);
                return self
                    .delay(publisher, delivery, &id, attempt, wait, None)
                    .await;
            }
        }
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let ctx = Context::new(
            id.clone(),
            attempt,
            self.info.clone(),
            Outlet::Broker(publisher.clone()),
        );
        let disposition = match invoke(&*self.handler, &delivery.data, ctx, self.stage.timeout)
            .await
        {
            Invocation::Undecodable(reason) => Disposition::Dead { reason },
            Invocation::Panicked(failure) => decide(Err(failure), attempt, &self.stage.retry),
            Invocation::Finished(outcome) => {
                // Successes and retryable failures tell the breaker whether
                // the calls work; a message that can never succeed does not.
                let call_failed = matches!(&outcome, Err(f) if f.action() != Action::DeadLetter);
                if (call_failed || outcome.is_ok()) && self.breaker.record(outcome.is_ok()) {
                    // The calls fail for every message (an outage): this one
                    // goes back to the queue, its attempt not counted.
                    if let Err(failure) = &outcome {
                        debug!(stage = %self.info.name, %id, attempt, "back to the queue while the calls fail: {failure}");
                    }
                    return Ok(Settle::Requeue);
                }
                decide(outcome, attempt, &self.stage.retry)
            }
        };
        if disposition != Disposition::Done && !publisher.is_open() {
            // The connection is gone (the failure is most likely that): the
            // broker requeues the delivery and the session reconnects. Say
            // nothing per message; the session says it once.
            return Err(Settle::Requeue);
        }
        match disposition {
            Disposition::Done => {
                self.stats.done.fetch_add(1, Ordering::Relaxed);
                Ok(Settle::Ack)
            }
            Disposition::Retry {
                attempt: next,
                delay,
                reason,
            } => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                info!(stage = %self.info.name, %id, attempt, "retrying in {}: {reason}", duration::format(delay));
                self.delay(publisher, delivery, &id, next, delay, Some(&reason))
                    .await
            }
            Disposition::Dead { reason } => {
                self.stats.dead.fetch_add(1, Ordering::Relaxed);
                warn!(stage = %self.info.name, %id, attempt, "dead-lettered: {reason}");
                self.dead_letter(publisher, delivery, &id, attempt, &reason)
                    .await
            }
        }
    }

    /// Publishes the message to the retry queue that holds it for `delay`,
    /// as attempt `attempt`.
    async fn delay(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        id: &str,
        attempt: u32,
        delay: Duration,
        reason: Option<&str>,
    ) -> Result<Settle, Settle> {
        let Some(hop) = self.stage.retry.hop(delay) else {
            // No retry queues (retries are off): nothing can hold it.
            return self
                .dead_letter(
                    publisher,
                    delivery,
                    id,
                    attempt,
                    reason.unwrap_or("no retry queue to wait in"),
                )
                .await;
        };
        let mut set = vec![(message::ATTEMPT, message::int(u64::from(attempt)))];
        if let Some(reason) = reason {
            set.push((message::ERROR, message::text(reason)));
        }
        let mut remove = vec![];
        if hop.again {
            set.push((
                message::NOT_BEFORE,
                message::int(message::epoch_ms_in(delay)),
            ));
        } else {
            remove.push(message::NOT_BEFORE);
        }
        let props = message::republish_properties(&delivery.properties, &set, &remove)
            .with_message_id(message::short(id));
        let queue = names::retry_queue(&self.info.pipeline, &self.info.name, hop.level);
        self.settle_after(
            publisher
                .publish_confirmed("", &queue, &delivery.data, props)
                .await,
            id,
        )
    }

    /// Publishes the message to the stage's dead-letter queue with why.
    async fn dead_letter(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        id: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<Settle, Settle> {
        let set = [
            (
                message::STAGE,
                AMQPValue::LongString(self.info.name.as_str().into()),
            ),
            (message::ERROR, message::text(reason)),
            (message::ATTEMPT, message::int(u64::from(attempt))),
        ];
        let props =
            message::republish_properties(&delivery.properties, &set, &[message::NOT_BEFORE])
                .with_message_id(message::short(id));
        self.settle_after(
            publisher
                .publish_confirmed("", &self.dead_queue, &delivery.data, props)
                .await,
            id,
        )
    }

    fn settle_after(
        &self,
        published: Result<(), crate::Error>,
        id: &str,
    ) -> Result<Settle, Settle> {
        match published {
            Ok(()) => Ok(Settle::Ack),
            Err(error) => {
                warn!(stage = %self.info.name, %id, %error, "could not hand the message over; it goes back to the queue");
                Err(Settle::Requeue)
            }
        }
    }
}
