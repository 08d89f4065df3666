//! The consumer loop of one stage, on one connection. Each turn it picks a
//! [`Mode`] from the shutdown signal, the broker's flow control and the
//! circuit breaker, and does one step of it:
//!
//! - `Consuming`: takes deliveries from the stage queue, up to
//!   `concurrency` handlers at once, and messages from the isolation queue
//!   one at a time, alone;
//! - `Paused`: the breaker is open; the consumer is cancelled and the
//!   deliveries it had prefetched are given back (re-published, so their
//!   `redelivered` flag stays clean). When a handler said the outage
//!   (`Failure::unavailable`) the consumer stays instead, as in
//!   `StreamAway`: an outage can last, and each probe would otherwise
//!   consume again and cancel, which flags as redelivered (an attempt
//!   charged) what a quorum queue had on its way. What it prefetched waits
//!   in the client (the prefetch window fills and the queue sends no more)
//!   and is given back every [`StageRuntime::hold_limit`], well inside the
//!   broker's acknowledgement timeout; giving it back at each turn would free the window
//!   at each turn, and the queue would always have deliveries on their way
//!   when a drain cancels the consumer;
//! - `Held`: an operator paused the stage (`warren pause`, `pauses.rs`);
//!   nothing new starts and the consumers stay, as in `StreamAway`: what
//!   they deliver (up to the prefetch) is held unstarted, so the broker
//!   sends nothing more, nothing is flagged redelivered and nothing churns
//!   for the hours a pause may last. A delivery held for
//!   [`StageRuntime::hold_limit`] (half the broker's acknowledgement
//!   timeout, after which the broker would close the channel) is given
//!   back (a copy, then an ack) and the next one held instead. On resume
//!   the held deliveries are handled first, in the order they came;
//! - `StreamAway`: the job stream does not take events (`stream_gate.rs`);
//!   nothing new starts, and the consumers stay (what they prefetched waits
//!   in the client): a quorum queue returns the deliveries on their way to
//!   a consumer it cancels, flagged as redelivered, which would charge them
//!   an attempt;
//! - `Blocked`: the broker blocks publishing (a memory or disk alarm);
//!   nothing new starts until it lifts;
//! - `Probing`: the breaker half-opened; one message is handled alone and
//!   its outcome decides;
//! - `ProbingStream`: the job stream's pause is over; it is declared and
//!   sent an empty batch of events, whose confirm decides;
//! - `Draining`: shutdown; the consumers are cancelled, prefetched
//!   deliveries given back, and the handlers in flight finish.
//!
//! Acknowledgements go on the channel the delivery came from, through its
//! own [`acks`] task.

use std::{sync::Arc, time::Duration};

use futures_util::{FutureExt, StreamExt};
use lapin::{
    Connection, Consumer, message::Delivery, options::BasicConsumeOptions, types::FieldTable,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod draining;
mod waiting;

use waiting::Holding;

use super::{
    breaker::Gate,
    channels::{Channels, Source},
    in_flight::InFlight,
    intake::{Intake, intake},
    stage::StageRuntime,
};
use crate::{message, publisher::Publisher};

/// How long to wait for the next isolated message before going back to the
/// stage queue.
const ISOLATION_LINGER: Duration = Duration::from_millis(200);

/// What the loop does this turn.
#[derive(Debug, PartialEq)]
enum Mode {
    Consuming,
    Held,
    Paused(Duration),
    StreamAway(Duration),
    Blocked,
    Probing,
    ProbingStream,
    Draining,
}

/// How a step ended.
enum Step {
    /// Go on with the next turn.
    Next,
    /// The consumer ended: the session is lost, with this reason.
    Lost(String),
}

/// The loop of one stage.
pub(crate) struct StageLoop {
    pub runtime: Arc<StageRuntime>,
    pub publisher: Publisher,
    /// The publishing connection (the job stream is declared on it again).
    pub publishing: Arc<Connection>,
    pub channels: Channels,
    /// Consumer tag prefix, unique per session.
    pub tag: String,
    /// Cancelled on shutdown.
    pub stop: CancellationToken,
    /// Cancelled by a handler when the broker refused a publish.
    pub trouble: CancellationToken,
    /// `Some(reason)` while the broker blocks this worker's publishing.
    pub blocked: watch::Receiver<Option<String>>,
}

impl StageLoop {
    /// Runs until stopped (then drains: `None`) or until a consumer ends
    /// (`Some(reason)`).
    pub async fn run(self, main: Consumer, isolated: Consumer) -> Option<String> {
        let (mut work, ackers) = InFlight::start(
            &self.runtime,
            &self.publisher,
            &self.trouble,
            &self.channels,
        );
        let mut main = Some(main);
        let mut isolated = Some(isolated);
        let mut generation = 0u32;
        let mut holding = Holding::default();
        let lost = loop {
            work.reap();
            self.report();
            let mode = self.mode();
            let outage = matches!(mode, Mode::Paused(_)) && self.runtime.breaker.outage();
            if !outage {
                holding.outage_over();
            }
            if !matches!(mode, Mode::Held | Mode::Consuming | Mode::Draining) {
                holding.give_back(&mut work);
            }
            let step = match mode {
                Mode::Draining => break None,
                Mode::Held => {
                    self.hold_paused(&mut main, &mut isolated, &mut holding, &mut work)
                        .await
                }
                Mode::Blocked => self.blocked(&mut work).await,
                Mode::Paused(wait) if outage => {
                    self.hold_outage(main.as_mut(), &mut holding, wait, &mut work)
                        .await
                }
                Mode::Paused(wait) => match main.take() {
                    Some(consumer) => match self
                        .cancel_and_give_back(consumer, Source::Main, &mut work)
                        .await
                    {
                        Ok(()) => self.pause(wait).await,
                        Err(reason) => Step::Lost(reason),
                    },
                    None => self.pause(wait).await,
                },
                Mode::StreamAway(wait) => self.pause(wait).await,
                Mode::ProbingStream => self.probe_stream().await,
                Mode::Probing => match self.ensure(&mut main, &mut generation).await {
                    Err(reason) => Step::Lost(reason),
                    Ok(()) => {
                        let consumer = main.as_mut().expect("consuming");
                        self.probe(consumer, &mut work).await
                    }
                },
                Mode::Consuming => match self.ensure(&mut main, &mut generation).await {
                    Err(reason) => Step::Lost(reason),
                    Ok(()) => {
                        self.consume(&mut main, &mut isolated, &mut holding, &mut work)
                            .await
                    }
                },
            };
            if let Step::Lost(reason) = step {
                break Some(reason);
            }
        };
        if lost.is_none() {
            holding.give_back(&mut work);
            self.drain(main, isolated, &mut work).await;
            work.close(ackers).await;
        } else {
            for acker in ackers {
                acker.abort();
            }
        }
        self.runtime.stats.set_paused(false);
        lost
    }

    /// The mode for this turn.
    fn mode(&self) -> Mode {
        if self.stop.is_cancelled() {
            return Mode::Draining;
        }
        if self.runtime.pauses.is_paused(&self.runtime.info.name) {
            return Mode::Held;
        }
        if self.blocked.borrow().is_some() {
            return Mode::Blocked;
        }
        match self.runtime.recorder.gate() {
            Gate::Closed => {}
            Gate::Open(wait) => return Mode::StreamAway(wait),
            Gate::Probe => return Mode::ProbingStream,
        }
        match self.runtime.breaker.gate() {
            Gate::Closed => Mode::Consuming,
            Gate::Open(wait) => Mode::Paused(wait),
            Gate::Probe => Mode::Probing,
        }
    }

    /// A receiver of the blocked state that wakes on the next change only.
    fn watch_blocked(&self) -> watch::Receiver<Option<String>> {
        let mut blocked = self.blocked.clone();
        blocked.borrow_and_update();
        blocked
    }

    fn report(&self) {
        let stats = &self.runtime.stats;
        stats.set_paused(self.runtime.breaker.is_open() || self.runtime.recorder.is_away());
        stats.set_blocked(self.blocked.borrow().is_some());
        stats.set_held(self.runtime.pauses.is_paused(&self.runtime.info.name));
    }

    /// Consumes the stage queue again after a pause, with a new tag.
    async fn ensure(
        &self,
        main: &mut Option<Consumer>,
        generation: &mut u32,
    ) -> Result<(), String> {
        if main.is_some() {
            return Ok(());
        }
        *generation += 1;
        let tag = format!("{}-{generation}", self.tag);
        let queue = &self.runtime.queue;
        let consumer = self
            .channels
            .main
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| format!("consume {queue} again: {error}"))?;
        *main = Some(consumer);
        Ok(())
    }

    /// One delivery from either queue, or a change that ends the turn.
    async fn consume(
        &self,
        main: &mut Option<Consumer>,
        isolated: &mut Option<Consumer>,
        holding: &mut Holding,
        work: &mut InFlight,
    ) -> Step {
        let mut blocked = self.watch_blocked();
        if blocked.borrow().is_some() {
            return Step::Next;
        }
        let mut pauses = self.runtime.pauses.subscribe();
        pauses.borrow_and_update();
        let consumer = main.as_mut().expect("consuming");
        // What a pause held comes first; under load a delivery is waiting
        // already (the mode was checked just now): take it without setting
        // up the wait below.
        let ready = match holding.next_held() {
            Some((from, delivery)) => Some((from, Some(Ok(delivery)))),
            None => match next_of(isolated).now_or_never() {
                Some(next) => Some((Source::Isolation, next)),
                None => consumer
                    .next()
                    .now_or_never()
                    .map(|next| (Source::Main, next)),
            },
        };
        let (from, next) = match ready {
            Some(ready) => {
                // Still lets the handlers and ackers run now and then.
                tokio::task::consume_budget().await;
                ready
            }
            None => tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Step::Next,
                _ = blocked.changed() => return Step::Next,
                _ = pauses.changed() => return Step::Next,
                next = next_of(isolated) => (Source::Isolation, next),
                next = consumer.next() => (Source::Main, next),
            },
        };
        let delivery = match self.delivered(from, next) {
            Ok(delivery) => delivery,
            Err(reason) => return Step::Lost(reason),
        };
        match self.mode() {
            Mode::Consuming => {}
            Mode::Held => {
                // Paused while this one was on its way: held with the others.
                holding.hold(from, delivery);
                return Step::Next;
            }
            _ => {
                // The breaker opened (or the broker blocked) while this one
                // was on its way: it waits in the queue with the others.
                work.give_back(delivery, from);
                return Step::Next;
            }
        }
        match (from, self.intake_of(&delivery)) {
            (Source::Isolation, Intake::Handle) => {
                self.isolate(delivery, main, isolated, work).await
            }
            (Source::Main, Intake::Handle) => {
                let permit = match work.permits.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => {
                            // Not started: give it back with the rest.
                            work.give_back(delivery, Source::Main);
                            return Step::Next;
                        }
                        _ = pauses.wait_for(|paused| paused.contains(&self.runtime.info.name)) => {
                            // Paused before it could start: held.
                            holding.hold(Source::Main, delivery);
                            return Step::Next;
                        }
                        permit = work.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    },
                };
                work.handle(delivery, false, Source::Main, Some(permit));
                Step::Next
            }
            (from, intake) => {
                work.admit(delivery, intake, from);
                Step::Next
            }
        }
    }

    /// The delivery, or why the consumer ended.
    fn delivered(
        &self,
        from: Source,
        next: Option<Result<Delivery, lapin::Error>>,
    ) -> Result<Delivery, String> {
        let queue = match from {
            Source::Main => &self.runtime.queue,
            Source::Isolation => &self.runtime.isolation_queue,
        };
        match next {
            Some(Ok(delivery)) => Ok(delivery),
            Some(Err(error)) => Err(format!("consumer of {queue}: {error}")),
            None => Err(format!("the broker cancelled the consumer of {queue}")),
        }
    }

    fn intake_of(&self, delivery: &Delivery) -> Intake {
        let props = &delivery.properties;
        intake(
            self.runtime.crashed(delivery),
            message::id_of(props).is_some(),
            message::attempt_of(props),
            self.runtime.stage.retry.attempts,
        )
    }

    /// Handles isolated messages one at a time with nothing else in
    /// flight and nothing left unsettled: the stage queue's consumer is
    /// paused (its prefetched deliveries given back) until no isolated
    /// message is left.
    async fn isolate(
        &self,
        first: Delivery,
        main: &mut Option<Consumer>,
        isolated: &mut Option<Consumer>,
        work: &mut InFlight,
    ) -> Step {
        if let Some(consumer) = main.take()
            && let Err(reason) = self
                .cancel_and_give_back(consumer, Source::Main, work)
                .await
        {
            work.give_back(first, Source::Isolation);
            return Step::Lost(reason);
        }
        let mut next = Some(first);
        while let Some(delivery) = next.take() {
            work.finish_all().await;
            if self.stop.is_cancelled() {
                work.give_back(delivery, Source::Isolation);
                return Step::Next;
            }
            match self.intake_of(&delivery) {
                Intake::Handle => {
                    // It may crash this process: every settlement before it
                    // must have reached the broker, or the messages they
                    // settle come back flagged as if this crash held them.
                    if !work.settled().await {
                        work.give_back(delivery, Source::Isolation);
                        return Step::Lost("a consumer channel closed".to_string());
                    }
                    work.handle(delivery, false, Source::Isolation, None);
                    work.finish_all().await;
                }
                intake => work.admit(delivery, intake, Source::Isolation),
            }
            let more = tokio::time::timeout(ISOLATION_LINGER, next_of(isolated)).await;
            if let Ok(more) = more {
                match self.delivered(Source::Isolation, more) {
                    Ok(delivery) => next = Some(delivery),
                    Err(reason) => return Step::Lost(reason),
                }
            }
        }
        Step::Next
    }

    /// The breaker half-opened: one message, alone, decides.
    async fn probe(&self, consumer: &mut Consumer, work: &mut InFlight) -> Step {
        work.finish_all().await;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Step::Next,
                next = consumer.next() => next,
            };
            let delivery = match self.delivered(Source::Main, next) {
                Ok(delivery) => delivery,
                Err(reason) => return Step::Lost(reason),
            };
            match self.intake_of(&delivery) {
                Intake::Handle => {
                    work.handle(delivery, true, Source::Main, None);
                    work.finish_all().await;
                    return Step::Next;
                }
                intake => work.admit(delivery, intake, Source::Main),
            }
        }
    }

    /// The job stream's pause is over: ask it whether it answers again.
    async fn probe_stream(&self) -> Step {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.runtime.recorder.probe(&self.publishing, &self.publisher) => {}
        }
        Step::Next
    }
}

/// The next delivery of an optional consumer (pending for ever without one).
async fn next_of(consumer: &mut Option<Consumer>) -> Option<Result<Delivery, lapin::Error>> {
    match consumer.as_mut() {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}
