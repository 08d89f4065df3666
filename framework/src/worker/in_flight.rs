//! The handlers in flight of one stage's consumer loop: each delivery's
//! work runs as a task of its own (handling it, or publishing its copy),
//! and reports how to settle it to the acker of the channel it came from.

use std::{sync::Arc, time::Instant};

use lapin::message::Delivery;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

use super::{
    acks::{self, Report, Settle},
    channels::{Channels, ISOLATION_PREFETCH, Source},
    intake::{Intake, intake},
    stage::StageRuntime,
};
use crate::{message, publisher::Publisher};

/// The handlers in flight, and where they report how to settle.
pub(crate) struct InFlight {
    /// At most `concurrency` handlers of the stage queue at once.
    pub permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    runtime: Arc<StageRuntime>,
    publisher: Publisher,
    /// Cancelled when the broker refused a publish: the session restarts.
    trouble: CancellationToken,
    main: mpsc::UnboundedSender<Report>,
    isolation: mpsc::UnboundedSender<Report>,
}

impl InFlight {
    /// No handler yet; starts the acker of each channel.
    pub fn start(
        runtime: &Arc<StageRuntime>,
        publisher: &Publisher,
        trouble: &CancellationToken,
        channels: &Channels,
    ) -> (InFlight, [JoinHandle<Option<Instant>>; 2]) {
        let (main_acks, main_settled) = mpsc::unbounded_channel();
        let (isolation_acks, isolation_settled) = mpsc::unbounded_channel();
        let ackers = [
            tokio::spawn(acks::run(
                channels.main.clone(),
                runtime.stage.prefetch,
                main_settled,
            )),
            tokio::spawn(acks::run(
                channels.isolation.clone(),
                ISOLATION_PREFETCH,
                isolation_settled,
            )),
        ];
        let handlers = InFlight {
            permits: Arc::new(Semaphore::new(runtime.stage.concurrency as usize)),
            tasks: JoinSet::new(),
            runtime: runtime.clone(),
            publisher: publisher.clone(),
            trouble: trouble.clone(),
            main: main_acks,
            isolation: isolation_acks,
        };
        (handlers, ackers)
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Forgets the tasks that finished.
    pub fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Waits for one task to finish (none running: at once).
    pub async fn one_finished(&mut self) -> bool {
        self.tasks.join_next().await.is_some()
    }

    /// Waits for every task to finish.
    pub async fn finish_all(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until every settlement reported so far has been processed by
    /// the broker, on both channels (see [`acks::run`]); false if a channel
    /// is gone.
    pub async fn settled(&self) -> bool {
        let mut answers = Vec::new();
        for acks in [&self.main, &self.isolation] {
            let (answer, answered) = oneshot::channel();
            if acks.send(Report::Flush(answer)).is_err() {
                return false;
            }
            answers.push(answered);
        }
        for answered in answers {
            if answered.await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits for every settlement to be processed by the broker: the
    /// ackers end once the last task reported. The process may exit right
    /// after: an ack not yet applied then would be lost, and the broker
    /// would deliver its message again, flagged, beside the copy a give-back
    /// published; so the channels stay open [`acks::QUORUM_SETTLE_GRACE`]
    /// after the last settlement.
    pub async fn close(mut self, ackers: [JoinHandle<Option<Instant>>; 2]) {
        self.finish_all().await;
        self.settled().await;
        drop(self);
        let mut last = None;
        for acker in ackers {
            last = last.max(acker.await.ok().flatten());
        }
        if let Some(last) = last {
            tokio::time::sleep_until((last + acks::QUORUM_SETTLE_GRACE).into()).await;
        }
    }

    /// The queue of deliveries from `from`, and the acker of their channel.
    fn source(&self, from: Source) -> (String, mpsc::UnboundedSender<Report>) {
        match from {
            Source::Main => (self.runtime.queue.clone(), self.main.clone()),
            Source::Isolation => (self.runtime.isolation_queue.clone(), self.isolation.clone()),
        }
    }

    /// Handles a delivery (`probe`: it is the circuit breaker's probe),
    /// holding `permit` (a slot of the stage's concurrency) while its
    /// handler runs.
    pub fn handle(
        &mut self,
        delivery: Delivery,
        probe: bool,
        from: Source,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let (runtime, publisher) = (self.runtime.clone(), self.publisher.clone());
        let (queue, _) = self.source(from);
        let tag = delivery.delivery_tag;
        self.spawn(tag, from, async move {
            runtime
                .handle(&publisher, &delivery, &queue, probe, permit)
                .await
        });
    }

    /// Carries out an intake other than handling (a copy with an id, a
    /// move to isolation, a dead letter).
    pub fn admit(&mut self, delivery: Delivery, intake: Intake, from: Source) {
        let (runtime, publisher) = (self.runtime.clone(), self.publisher.clone());
        let (queue, _) = self.source(from);
        let tag = delivery.delivery_tag;
        self.spawn(tag, from, async move {
            runtime.admit(&publisher, &delivery, &intake, &queue).await
        });
    }

    /// Runs `work` as a task of its own and reports its settlement of
    /// delivery `tag` to the acker of `from`; a settlement given as an
    /// error (the broker refused a publish) also restarts the session.
    fn spawn(
        &mut self,
        tag: u64,
        from: Source,
        work: impl Future<Output = Result<Settle, Settle>> + Send + 'static,
    ) {
        let trouble = self.trouble.clone();
        let (_, acks) = self.source(from);
        self.tasks.spawn(async move {
            let settle = work.await.unwrap_or_else(|settle| {
                trouble.cancel();
                settle
            });
            let _ = acks.send(Report::Settled(tag, settle));
        });
    }

    /// Gives back a delivery that was never started.
    pub fn give_back(&mut self, delivery: Delivery, from: Source) {
        let runtime = self.runtime.clone();
        let publisher = self.publisher.clone();
        let (queue, acks) = self.source(from);
        self.tasks.spawn(async move {
            // A redelivered message keeps its flag's meaning: it goes to
            // isolation like any other (its worker stopped holding it).
            let settle = if runtime.crashed(&delivery) {
                let props = &delivery.properties;
                let intake = intake(
                    true,
                    message::id_of(props).is_some(),
                    message::attempt_of(props),
                    runtime.stage.retry.attempts,
                );
                runtime.admit(&publisher, &delivery, &intake, &queue).await
            } else {
                runtime.give_back(&publisher, &delivery, &queue).await
            };
            let _ = acks.send(Report::Settled(
                delivery.delivery_tag,
                settle.unwrap_or_else(|s| s),
            ));
        });
    }
}
