//! What a stage's consumer loop does while it starts nothing new: an
//! operator's pause (`Mode::Held`: deliveries held unstarted), an outage a
//! handler said (the breaker open, the consumer kept, what it prefetched
//! left in it), the breaker's or the job stream's pause, the broker's
//! block. Whatever is held is given back (a copy, then an ack, uncharged)
//! once it has waited [`StageRuntime::hold_limit`], well inside the
//! broker's acknowledgement timeout.
//!
//! [`StageRuntime::hold_limit`]: super::super::stage::StageRuntime::hold_limit

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use futures_util::{FutureExt, StreamExt};
use lapin::{Consumer, message::Delivery};

use super::{StageLoop, Step, next_of};
use crate::worker::{channels::Source, in_flight::InFlight};

/// A delivery a paused stage holds unstarted.
struct Held {
    from: Source,
    since: Instant,
    delivery: Delivery,
}

/// What the loop holds unstarted.
#[derive(Default)]
pub(super) struct Holding {
    /// What an operator's pause holds, oldest first.
    held: VecDeque<Held>,
    /// Since when an outage holds what the stage queue prefetched (left in
    /// the consumer), or since its last give-back.
    outage_since: Option<Instant>,
}

impl Holding {
    /// The oldest delivery a pause held, to handle first on resume.
    pub fn next_held(&mut self) -> Option<(Source, Delivery)> {
        self.held
            .pop_front()
            .map(|Held { from, delivery, .. }| (from, delivery))
    }

    /// Holds a delivery that came while the stage is paused.
    pub fn hold(&mut self, from: Source, delivery: Delivery) {
        self.held.push_back(Held {
            from,
            since: Instant::now(),
            delivery,
        });
    }

    /// Gives back everything a pause held.
    pub fn give_back(&mut self, work: &mut InFlight) {
        for Held { from, delivery, .. } in self.held.drain(..) {
            work.give_back(delivery, from);
        }
    }

    /// The outage a handler said is over (or never was).
    pub fn outage_over(&mut self) {
        self.outage_since = None;
    }
}

impl StageLoop {
    /// An operator paused the stage: hold what the consumers deliver,
    /// unstarted, and give back what was held for the hold limit; wait for
    /// the next delivery, the resume, a handler's end or shutdown.
    pub(super) async fn hold_paused(
        &self,
        main: &mut Option<Consumer>,
        isolated: &mut Option<Consumer>,
        holding: &mut Holding,
        work: &mut InFlight,
    ) -> Step {
        let held = &mut holding.held;
        let limit = self.runtime.hold_limit;
        let now = Instant::now();
        while held
            .front()
            .is_some_and(|one| now.duration_since(one.since) >= limit)
        {
            let Held { from, delivery, .. } = held.pop_front().expect("looked at");
            work.give_back(delivery, from);
        }
        let wait = held.front().map_or(limit, |one| {
            (one.since + limit).saturating_duration_since(now)
        });
        let mut pauses = self.runtime.pauses.subscribe();
        pauses.borrow_and_update();
        let (from, next) = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Step::Next,
            _ = pauses.changed() => return Step::Next,
            true = work.one_finished() => return Step::Next,
            _ = tokio::time::sleep(wait) => return Step::Next,
            next = next_of(isolated) => (Source::Isolation, next),
            next = next_of(main) => (Source::Main, next),
        };
        match self.delivered(from, next) {
            Ok(delivery) => {
                holding.hold(from, delivery);
                Step::Next
            }
            Err(reason) => Step::Lost(reason),
        }
    }

    /// An outage said by a handler: the consumer stays and what it
    /// prefetched stays in it (the prefetch window fills, the queue sends no
    /// more) until the probe takes it; every hold limit it is given back.
    /// Then wait out the pause.
    pub(super) async fn hold_outage(
        &self,
        consumer: Option<&mut Consumer>,
        holding: &mut Holding,
        wait: Duration,
        work: &mut InFlight,
    ) -> Step {
        let now = Instant::now();
        let since = *holding.outage_since.get_or_insert(now);
        let limit = self.runtime.hold_limit;
        if now.duration_since(since) >= limit {
            holding.outage_since = Some(now);
            if let Step::Lost(reason) = self.give_back_prefetched(consumer, work) {
                return Step::Lost(reason);
            }
        }
        self.pause(wait.min(limit)).await
    }

    /// An outage said by a handler has held deliveries for
    /// [`StageRuntime::hold_limit`]:
    /// the consumer stays; what it delivered so far is given back (a copy,
    /// then an ack), uncharged.
    fn give_back_prefetched(&self, consumer: Option<&mut Consumer>, work: &mut InFlight) -> Step {
        let Some(consumer) = consumer else {
            return Step::Next;
        };
        while let Some(next) = consumer.next().now_or_never() {
            match self.delivered(Source::Main, next) {
                Ok(delivery) => work.give_back(delivery, Source::Main),
                Err(reason) => return Step::Lost(reason),
            }
        }
        Step::Next
    }

    /// The breaker is open, or the job stream does not answer: wait out the
    /// pause (or until the broker's block changes, or shutdown).
    pub(super) async fn pause(&self, wait: Duration) -> Step {
        let mut blocked = self.watch_blocked();
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = blocked.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        Step::Next
    }

    /// The broker blocks publishing: start nothing until it lifts. The
    /// consumers stay; what they prefetched waits in the client.
    pub(super) async fn blocked(&self, work: &mut InFlight) -> Step {
        let mut blocked = self.watch_blocked();
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = blocked.wait_for(Option::is_none) => {}
            true = work.one_finished() => {}
        }
        Step::Next
    }
}
