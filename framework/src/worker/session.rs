//! One session with the broker: declare, consume every served stage, and
//! end either by draining (shutdown) or because the broker went away.
//!
//! A session has two connections, as RabbitMQ advises: one consumes and
//! acknowledges and never publishes, the other publishes (emits, retries,
//! dead letters, copies, the copies that give id-less messages their id,
//! job events) on one confirm-mode channel. Under a memory or disk alarm
//! the broker blocks a connection once it publishes; acknowledgements then
//! still flow on the consuming one, the publisher's hand-overs wait for the
//! block to lift without timing out, and the stages start nothing new
//! until it does (logged at warn with the broker's reason, reported to the
//! supervisor).
//!
//! Each stage has two consumer channels (its queue with per-consumer QoS =
//! prefetch, since quorum queues refuse global QoS, and its isolation queue
//! with prefetch 1). When anything of the session is lost, every handler is
//! dropped: their deliveries belong to dead channels and the broker gives
//! them again, so no acknowledgement is ever sent on another channel.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt};
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    cancels,
    channels::{Channels, ISOLATION_PREFETCH},
    consumer::StageLoop,
    lone,
    stage::StageRuntime,
};
use crate::{
    connection, control_stream, error::Error, names, pipeline::Pipeline, publisher::Publisher,
    topology::Topology,
};

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shut down on request, after draining.
    Drained,
    /// The connection or a channel was lost; reconnect.
    Lost(String),
}

/// A session's two connections.
pub(crate) struct Connections {
    /// Consumes and acknowledges; never publishes.
    pub consume: Arc<Connection>,
    /// Publishes with confirms (shared with the stages, which declare the
    /// job stream again on it when it went away).
    pub publish: Arc<Connection>,
}

impl Connections {
    async fn close(&self, why: &str) {
        tokio::join!(
            connection::close(&self.consume, why),
            connection::close(&self.publish, why)
        );
    }
}

/// Runs one session until shutdown or loss. Errors are the ones
/// reconnecting cannot fix (queues with other arguments).
pub(crate) async fn run(
    connections: Connections,
    pipeline: &Pipeline,
    stages: &[Arc<StageRuntime>],
    shutdown: &CancellationToken,
    grace: Duration,
    tag_prefix: &str,
) -> Result<SessionEnd, Error> {
    match start(&connections, pipeline, stages, tag_prefix).await {
        Ok(running) => {
            set_consuming(stages, true);
            // Without a supervisor, the rate shares come from the broker's
            // consumer counts (`lone.rs`).
            let supervised = std::env::var(crate::report::SOCKET_ENV).is_ok();
            // Stopped with the session, even when it is dropped midway.
            let shares = lone::needed(stages, supervised).then(|| {
                let task = tokio::spawn(lone::follow(connections.consume.clone(), stages.to_vec()));
                AbortOnDrop(task.abort_handle())
            });
            let end = running.wait(&connections, shutdown, grace).await;
            drop(shares);
            set_consuming(stages, false);
            Ok(end)
        }
        Err(Error::Mismatch(mismatches)) => Err(Error::Mismatch(mismatches)),
        Err(error) => {
            connections.close("restarting").await;
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
    blocked: watch::Sender<Option<String>>,
    events: Events,
}

/// The events of the two connections, listened to from the session's
/// start: a block the broker announces while the session starts (its
/// first publish, a control stream's marker, meets a memory alarm) is not
/// missed.
struct Events {
    consume: Pin<Box<dyn Stream<Item = lapin::Event> + Send>>,
    publish: Pin<Box<dyn Stream<Item = lapin::Event> + Send>>,
}

async fn start(
    connections: &Connections,
    pipeline: &Pipeline,
    stages: &[Arc<StageRuntime>],
    tag_prefix: &str,
) -> Result<Running, Error> {
    let events = Events {
        consume: Box::pin(connections.consume.events_listener()),
        publish: Box::pin(connections.publish.events_listener()),
    };
    Topology::plan(pipeline)
        .declare(&connections.publish)
        .await?;
    let (blocked, blocked_rx) = watch::channel(None);
    let publisher = Publisher::open(&connections.publish)
        .await?
        .following_blocks(blocked_rx.clone());
    let stop = CancellationToken::new();
    let trouble = CancellationToken::new();
    let mut loops = JoinSet::new();
    // Every cancel, pause and peek the streams hold is known before any
    // delivery (`control_stream.rs`).
    let source = |stream: String| control_stream::Source {
        stream,
        connection: connections.consume.clone(),
    };
    let mut readers = Vec::new();
    if let Some(cancels) = stages.iter().find_map(|s| s.info.cancels.clone()) {
        let stream = names::cancel_stream(&pipeline.name);
        readers.push((source(stream), cancels::apply(cancels)));
    }
    if let Some(runtime) = stages.first() {
        let stream = names::pause_stream(&pipeline.name);
        readers.push((source(stream), runtime.pauses.applier()));
        let stream = names::peek_stream(&pipeline.name);
        readers.push((source(stream), runtime.peeks.applier()));
    }
    control_stream::start(readers, &mut loops, stop.clone()).await?;
    for runtime in stages {
        let tag = format!("{tag_prefix}-{}", runtime.info.name);
        let (main, main_consumer) = consume(
            &connections.consume,
            &runtime.queue,
            runtime.stage.prefetch,
            &tag,
        )
        .await?;
        let (isolation, isolated) = consume(
            &connections.consume,
            &runtime.isolation_queue,
            ISOLATION_PREFETCH,
            &format!("{tag}-isolated"),
        )
        .await?;
        let stage_loop = StageLoop {
            runtime: runtime.clone(),
            publisher: publisher.clone(),
            publishing: connections.publish.clone(),
            channels: Channels { main, isolation },
            tag,
            stop: stop.clone(),
            trouble: trouble.clone(),
            blocked: blocked_rx.clone(),
        };
        loops.spawn(stage_loop.run(main_consumer, isolated));
    }
    Ok(Running {
        loops,
        publisher,
        stop,
        trouble,
        blocked,
        events,
    })
}

/// A channel with `prefetch` consuming `queue`.
async fn consume(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Result<(Channel, Consumer), Error> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open a consumer channel", e))?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .map_err(|e| Error::broker("set the prefetch", e))?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::broker(format!("consume {queue}"), e))?;
    Ok((channel, consumer))
}

impl Running {
    async fn wait(
        mut self,
        connections: &Connections,
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
            reason = watch(connections, &self.publisher, &self.blocked, &mut self.events) => Some(reason),
        };
        match lost {
            None => {
                self.stop.cancel();
                // Blocks and unblocks are still followed while draining.
                let drained = async {
                    tokio::select! {
                        _ = async { while self.loops.join_next().await.is_some() {} } => {}
                        _ = watch(connections, &self.publisher, &self.blocked, &mut self.events) => {}
                    }
                };
                if tokio::time::timeout(grace, drained).await.is_err() {
                    warn!(
                        "grace period of {}s over; unfinished messages go back to their queue",
                        grace.as_secs()
                    );
                    self.loops.abort_all();
                }
                // Nothing reads the events any more: a closing connection
                // must not wait on them.
                drop(self.events);
                self.publisher.close().await;
                connections.close("worker stopping").await;
                SessionEnd::Drained
            }
            Some(reason) => {
                self.loops.abort_all();
                drop(self.events);
                connections.close("reconnecting").await;
                SessionEnd::Lost(reason)
            }
        }
    }
}

/// Resolves with a reason when either connection or the publishing channel
/// is no longer open; meanwhile passes the broker's blocks and unblocks of
/// the publishing connection on to the stages, and logs them.
async fn watch(
    connections: &Connections,
    publisher: &Publisher,
    blocked: &watch::Sender<Option<String>>,
    events: &mut Events,
) -> String {
    let Events {
        consume: consume_events,
        publish: publish_events,
    } = events;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = consume_events.next() => match event {
                Some(lapin::Event::Error(error)) => return format!("connection error: {error}"),
                None => return "connection closed".into(),
                _ => {}
            },
            event = publish_events.next() => match event {
                Some(lapin::Event::Error(error)) => return format!("publishing connection error: {error}"),
                Some(lapin::Event::ConnectionBlocked(reason)) => {
                    warn!("the broker blocks publishing ({reason}): no new messages are started until it lifts; acknowledgements go on");
                    blocked.send_replace(Some(reason));
                }
                Some(lapin::Event::ConnectionUnblocked) => {
                    info!("the broker lifted its block on publishing: consuming again");
                    blocked.send_replace(None);
                }
                None => return "publishing connection closed".into(),
                _ => {}
            },
            _ = tick.tick() => {
                if !connections.consume.status().connected() || !connections.publish.status().connected() {
                    return "connection closed".into();
                }
                if !publisher.is_open() {
                    return "the publishing channel was closed by the broker".into();
                }
            }
        }
    }
}

/// Aborts a task when dropped (a session's helpers, and the reporter and
/// probes of `reconnect.rs`).
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
