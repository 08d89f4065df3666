//! One connection's lifetime: declare, consume every served stage, and end
//! either by draining (shutdown) or because the broker went away.
//!
//! Each stage has its own consumer channel (per-consumer QoS = prefetch;
//! quorum queues refuse global QoS) and its own acker; emits, retries and
//! dead letters go through one confirm-mode channel. When anything of the
//! connection is lost, every handler of the session is dropped: their
//! deliveries belong to dead channels and the broker requeues them, so no
//! settlement is ever sent on a channel other than the delivery's own.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    acks::{self, Settle},
    breaker::Gate,
    delivery::StageRuntime,
};
use crate::{error::Error, pipeline::Pipeline, publisher::Publisher, topology::Topology};

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shut down on request, after draining.
    Drained,
    /// The connection or a channel was lost; reconnect.
    Lost(String),
}

/// Runs one session on `connection` until shutdown or loss. Errors are
/// the ones reconnecting cannot fix (queues with other arguments).
pub(crate) async fn run(
    connection: Connection,
    pipeline: &Pipeline,
    stages: &[Arc<StageRuntime>],
    shutdown: &CancellationToken,
    grace: Duration,
    tag_prefix: &str,
) -> Result<SessionEnd, Error> {
    match start(&connection, pipeline, stages, tag_prefix).await {
        Ok(running) => {
            set_consuming(stages, true);
            let end = running.wait(connection, shutdown, grace).await;
            set_consuming(stages, false);
            Ok(end)
        }
        Err(Error::Mismatch(mismatches)) => Err(Error::Mismatch(mismatches)),
        Err(error) => {
            let _ = connection.close(200, "restarting".into()).await;
            Ok(SessionEnd::Lost(error.to_string()))
        }
    }
}

fn set_consuming(stages: &[Arc<StageRuntime>], consuming: bool) {
    for stage in stages {
        stage
            .stats
            .consuming
            .store(consuming, std::sync::atomic::Ordering::Relaxed);
    }
}

struct Running {
    loops: JoinSet<Option<String>>,
    publisher: Publisher,
    stop: CancellationToken,
    trouble: CancellationToken,
}

async fn start(
    connection: &Connection,
    pipeline: &Pipeline,
    stages: &[Arc<StageRuntime>],
    tag_prefix: &str,
) -> Result<Running, Error> {
    Topology::plan(pipeline).declare(connection).await?;
    let publisher = Publisher::open(connection).await?;
    let stop = CancellationToken::new();
    let trouble = CancellationToken::new();
    let mut loops = JoinSet::new();
    for runtime in stages {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Error::broker("open a consumer channel", e))?;
        channel
            .basic_qos(runtime.stage.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| Error::broker("set the prefetch", e))?;
        let tag = format!("{tag_prefix}-{}", runtime.info.name);
        let consumer = channel
            .basic_consume(
                runtime.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("consume {}", runtime.queue), e))?;
        let consume = Consume {
            runtime: runtime.clone(),
            publisher: publisher.clone(),
            channel,
            tag,
            stop: stop.clone(),
            trouble: trouble.clone(),
        };
        loops.spawn(consume.run(consumer));
    }
    Ok(Running {
        loops,
        publisher,
        stop,
        trouble,
    })
}

impl Running {
    async fn wait(
        mut self,
        connection: Connection,
        shutdown: &CancellationToken,
        grace: Duration,
    ) -> SessionEnd {
        let lost = tokio::select! {
            _ = shutdown.cancelled() => None,
            Some(ended) = self.loops.join_next() => Some(match ended {
                Ok(Some(reason)) => reason,
                Ok(None) => "a consumer stopped".to_string(),
                Err(error) => format!("a consumer task failed: {error}"),
            }),
            _ = self.trouble.cancelled() => Some("the broker refused a retry or a dead letter".to_string()),
            reason = watch(&connection, &self.publisher) => Some(reason),
        };
        match lost {
            None => {
                self.stop.cancel();
                let drained = tokio::time::timeout(grace, async {
                    while self.loops.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    warn!(
                        "grace period of {}s over; unfinished messages go back to their queue",
                        grace.as_secs()
                    );
                    self.loops.abort_all();
                }
                self.publisher.close().await;
                let _ = connection.close(200, "worker stopping".into()).await;
                SessionEnd::Drained
            }
            Some(reason) => {
                self.loops.abort_all();
                let _ = connection.close(200, "reconnecting".into()).await;
                SessionEnd::Lost(reason)
            }
        }
    }
}

/// Resolves with a reason when the connection or the publishing channel
/// is no longer open.
async fn watch(connection: &Connection, publisher: &Publisher) -> String {
    let mut events = connection.events_listener();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = events.next() => {
                if let Some(lapin::Event::Error(error)) = event {
                    return format!("connection error: {error}");
                }
                if event.is_none() {
                    return "connection closed".into();
                }
            }
            _ = tick.tick() => {
                if !connection.status().connected() {
                    return "connection closed".into();
                }
                if !publisher.is_open() {
                    return "the publishing channel was closed by the broker".into();
                }
            }
        }
    }
}

/// The consumer loop of one stage.
struct Consume {
    runtime: Arc<StageRuntime>,
    publisher: Publisher,
    channel: Channel,
    tag: String,
    stop: CancellationToken,
    trouble: CancellationToken,
}

/// Handlers in flight of one consumer loop and how they report back.
struct InFlight {
    permits: Arc<Semaphore>,
    handlers: JoinSet<()>,
    finished: mpsc::UnboundedSender<(u64, Settle)>,
}

impl Consume {
    /// Takes deliveries until stopped (then drains: `None`) or until the
    /// consumer ends (`Some(reason)`). While the stage's breaker is open it
    /// consumes nothing; when it half-opens, one message goes alone.
    async fn run(self, first: Consumer) -> Option<String> {
        let (finished, settled) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acks::run(self.channel.clone(), settled));
        let mut work = InFlight {
            permits: Arc::new(Semaphore::new(self.runtime.stage.concurrency as usize)),
            handlers: JoinSet::new(),
            finished,
        };
        let mut consumer = Some(first);
        let mut generation = 0u32;
        let queue = &self.runtime.queue;
        let ended = loop {
            while work.handlers.try_join_next().is_some() {}
            let probing = match self.runtime.breaker.gate() {
                Gate::Open(wait) => {
                    if let Some(paused) = consumer.take() {
                        self.pause(paused, &work).await;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => break None,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
                Gate::Probe => {
                    // One message alone: wait for the others to finish.
                    tokio::select! {
                        _ = self.stop.cancelled() => break None,
                        _ = async { while work.handlers.join_next().await.is_some() {} } => {}
                    }
                    true
                }
                Gate::Closed => false,
            };
            if consumer.is_none() {
                generation += 1;
                match self.resume(generation).await {
                    Ok(resumed) => consumer = Some(resumed),
                    Err(reason) => break Some(reason),
                }
            }
            let next = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break None,
                next = consumer.as_mut().expect("consuming").next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => break Some(format!("consumer of {queue}: {error}")),
                None => break Some(format!("the broker cancelled the consumer of {queue}")),
            };
            let permit = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break None,
                permit = work.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let runtime = self.runtime.clone();
            let publisher = self.publisher.clone();
            let trouble = self.trouble.clone();
            let finished = work.finished.clone();
            work.handlers.spawn(async move {
                let settle = runtime
                    .handle(&publisher, &delivery)
                    .await
                    .unwrap_or_else(|settle| {
                        trouble.cancel();
                        settle
                    });
                let _ = finished.send((delivery.delivery_tag, settle));
                drop(permit);
            });
            if probing {
                while work.handlers.join_next().await.is_some() {}
            }
        };
        if ended.is_none() {
            // Draining: take nothing more, let the handlers finish, settle.
            if let Some(consumer) = &consumer {
                let _ = self
                    .channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
            }
            let in_flight = work.handlers.len();
            if in_flight > 0 {
                info!(stage = %self.runtime.info.name, in_flight, "draining");
            }
            while work.handlers.join_next().await.is_some() {}
            drop(work);
            let _ = acker.await;
        } else {
            acker.abort();
        }
        ended
    }

    /// Stops consuming: cancels the consumer and gives back what it had
    /// received but not started, so those messages wait in the queue.
    async fn pause(&self, mut consumer: Consumer, work: &InFlight) {
        let _ = self
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        let drain = async {
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = work.finished.send((delivery.delivery_tag, Settle::Requeue));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    /// Consumes again after a pause, with a new consumer tag.
    async fn resume(&self, generation: u32) -> Result<Consumer, String> {
        let tag = format!("{}-{generation}", self.tag);
        self.channel
            .basic_consume(
                self.runtime.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| format!("consume {} again: {error}", self.runtime.queue))
    }
}
