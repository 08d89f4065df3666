//! One pass over a queue that no worker consumes (a stage's dead letters,
//! its retries): each message it held when the pass began is either taken
//! (replayed, retried now, purged) or kept, in its place.
//!
//! Reading a quorum queue hands its messages out, and a message handed
//! back counts a delivery: a queue whose delivery limit can be reached
//! (RabbitMQ 4's default of 20 on a queue declared without one) drops it.
//! So a pass keeps messages in one of two ways:
//!
//! - [`Keeping::Hold`], where the queue has the arguments warren plans (a
//!   limit of 10^9, or a classic queue, which counts nothing): kept
//!   messages stay unacknowledged and go back to the head of the queue, in
//!   their order, when the pass ends, also when the process dies midway.
//! - [`Keeping::Rotate`], on any other queue: in a transaction, each kept
//!   message is published again at the tail and acknowledged, a new
//!   message whose count starts at 0. The pass goes round the whole queue,
//!   so the order is the same at the end (dead letters that arrive
//!   meanwhile land among the rotated ones). A process that dies midway
//!   leaves the committed part rotated (the queue turned, nothing lost or
//!   doubled); the uncommitted batch goes back to the head once.

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection,
    message::{BasicGetMessage, Delivery},
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use tracing::info;

use crate::{connection, error::Error, pipeline::Pipeline, topology::Queue};

/// Kept messages published again per transaction, in [`Keeping::Rotate`].
const BATCH: usize = 200;

/// How long a held listing waits for the next message before it looks
/// whether the queue still has any ready (and, if not, ends its consumer
/// and reads what the broker had sent it).
const HOLD_IDLE: Duration = Duration::from_millis(300);

/// How long a held listing waits for messages at most.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// How long closing a pass waits at most for what it held to be ready in
/// the queue again (a queue no one consumes: a stage's dead letters, its
/// retries).
const GIVEN_BACK_LIMIT: Duration = Duration::from_secs(1);

/// How a pass keeps the messages it does not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keeping {
    /// Unacknowledged, given back when the channel closes.
    Hold,
    /// Published again at the tail and acknowledged, in a transaction.
    Rotate,
}

/// A pass over one queue.
pub(crate) struct Pass {
    conn: Connection,
    channel: Channel,
    queue: String,
    keeping: Keeping,
    there: usize,
    seen: usize,
    /// Messages this pass holds: handed to it and not acknowledged.
    holding: usize,
    /// The pass's own consumer is still on the queue (a held listing that
    /// got all it wanted).
    consuming: bool,
    uncommitted: usize,
    /// Whether a message went to the tail ([`Keeping::Rotate`]): the pass
    /// must then go round the whole queue to restore its order.
    turned: bool,
}

impl Pass {
    /// Opens a connection for a pass over `queue`, one of the queues
    /// `pipeline`'s topology plans, and sees how many messages it holds
    /// and how it can keep them. `rotate`: whether it may keep them by
    /// publishing them again at the tail; when not (a retry queue, where
    /// that would start each message's wait again), a queue that could
    /// drop what is handed back is refused.
    pub(crate) async fn open(
        pipeline: &Pipeline,
        queue: &Queue,
        rotate: bool,
    ) -> Result<Pass, Error> {
        let name = format!("warren pass {}", queue.name);
        let conn = connection::open_with_retry(&pipeline.broker.urls, &name, 3).await?;
        let opened = Self::start(&conn, queue, rotate).await;
        match opened {
            Ok((channel, keeping, there)) => Ok(Pass {
                conn,
                channel,
                queue: queue.name.clone(),
                keeping,
                there,
                seen: 0,
                holding: 0,
                consuming: false,
                uncommitted: 0,
                turned: false,
            }),
            Err(error) => {
                connection::close(&conn, "failed").await;
                Err(error)
            }
        }
    }

    async fn start(
        conn: &Connection,
        planned: &Queue,
        rotate: bool,
    ) -> Result<(Channel, Keeping, usize), Error> {
        let queue = planned.name.as_str();
        let channel = open_channel(conn).await?;
        let there = depth(&channel, queue).await? as usize;
        let keeping = if planned.keeps_what_it_hands_back(conn).await? {
            Keeping::Hold
        } else if rotate {
            info!(
                queue,
                "the queue may drop what is handed back to it (a delivery limit other than warren's): kept messages are published again at its tail"
            );
            channel
                .tx_select()
                .await
                .map_err(|e| Error::broker(format!("start a transaction on {queue}"), e))?;
            Keeping::Rotate
        } else {
            return Err(Error::Setup(format!(
                "queue {queue} may drop what is handed back to it (a delivery limit other than warren's): its messages cannot be looked at without moving them"
            )));
        };
        Ok((channel, keeping, there))
    }

    /// Calls `each` on the first `limit` messages in queue order, and
    /// ends the pass: they stay in the queue, in their order. Held, with
    /// one consumer whose prefetch is as large as what is wanted (not a
    /// `basic.get` each); or, in [`Keeping::Rotate`], going round the
    /// whole queue.
    pub(crate) async fn look(
        mut self,
        limit: usize,
        mut each: impl FnMut(&Delivery),
    ) -> Result<(), Error> {
        let wanted = limit.min(self.there);
        let looked = match self.keeping {
            Keeping::Hold => self.held(wanted, &mut each).await,
            Keeping::Rotate => self.rotated(wanted, &mut each).await,
        };
        match looked {
            Ok(()) => self.finish().await,
            Err(error) => {
                self.close().await;
                Err(error)
            }
        }
    }

    /// Calls `each` on the first `limit` messages in queue order and goes
    /// on holding them: they go back to the head of the queue, in their
    /// order, when the pass is closed ([`Pass::close`]). Only on a queue
    /// that keeps what it hands back ([`Keeping::Hold`]).
    pub(crate) async fn hold(
        &mut self,
        limit: usize,
        mut each: impl FnMut(&Delivery),
    ) -> Result<(), Error> {
        if self.keeping != Keeping::Hold {
            return Err(Error::Setup(format!(
                "queue {} may drop what is handed back to it: its messages cannot be held",
                self.queue
            )));
        }
        self.held(limit.min(self.there), &mut each).await
    }

    /// Holds up to `wanted` messages with one consumer, counting them in
    /// `holding` (and in `consuming` whether the consumer stays on the
    /// queue).
    async fn held(&mut self, wanted: usize, each: &mut impl FnMut(&Delivery)) -> Result<(), Error> {
        let (held, consuming) = self.consume_held(wanted, each).await?;
        self.holding += held;
        self.consuming |= consuming;
        Ok(())
    }

    /// [`Pass::held`]'s reading: how many it holds, and whether its
    /// consumer is still on the queue.
    async fn consume_held(
        &self,
        wanted: usize,
        each: &mut impl FnMut(&Delivery),
    ) -> Result<(usize, bool), Error> {
        if wanted == 0 {
            return Ok((0, false));
        }
        let queue = self.queue.as_str();
        self.channel
            .basic_qos(wanted.min(65_535) as u16, BasicQosOptions::default())
            .await
            .map_err(|e| Error::broker(format!("set the prefetch on {queue}"), e))?;
        let mut consumer = self
            .channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("read {queue}"), e))?;
        let mut seen = 0;
        let started = std::time::Instant::now();
        while seen < wanted {
            // The broker sends what it has at once; after a quiet moment,
            // go on waiting while the queue still has messages ready.
            let next = tokio::time::timeout(HOLD_IDLE, consumer.next());
            match next.await {
                Ok(Some(Ok(delivery))) => {
                    each(&delivery);
                    seen += 1;
                }
                Ok(Some(Err(error))) => return Err(Error::broker(format!("read {queue}"), error)),
                Ok(None) => return Ok((seen, false)),
                Err(_) => {
                    if started.elapsed() < HOLD_LIMIT && depth(&self.channel, queue).await? > 0 {
                        continue;
                    }
                    // None ready (fewer than counted: another reader took
                    // some, or they expired), but what the broker sent us
                    // may still be on its way on a loaded machine.
                    let rest = self
                        .read_until_cancelled(consumer, wanted - seen, each)
                        .await?;
                    return Ok((seen + rest, false));
                }
            }
        }
        Ok((seen, true))
    }

    /// Cancels `consumer` and calls `each` on what it still receives, at
    /// most `left`: the broker sends a consumer everything meant for it
    /// before the cancel's answer, and the stream then ends. Returns how
    /// many it received.
    async fn read_until_cancelled(
        &self,
        mut consumer: lapin::Consumer,
        left: usize,
        each: &mut impl FnMut(&Delivery),
    ) -> Result<usize, Error> {
        let queue = self.queue.as_str();
        self.channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(|e| Error::broker(format!("stop reading {queue}"), e))?;
        let rest = tokio::time::timeout(HOLD_LIMIT, async {
            let mut received = 0;
            while received < left {
                match consumer.next().await {
                    Some(Ok(delivery)) => each(&delivery),
                    Some(Err(error)) => return Err(Error::broker(format!("read {queue}"), error)),
                    None => break,
                }
                received += 1;
            }
            Ok(received)
        });
        rest.await.unwrap_or_else(|_| {
            Err(Error::Setup(format!(
                "reading {queue}: its consumer did not end {}s after it was cancelled",
                HOLD_LIMIT.as_secs()
            )))
        })
    }

    async fn rotated(
        &mut self,
        wanted: usize,
        each: &mut impl FnMut(&Delivery),
    ) -> Result<(), Error> {
        for _ in 0..wanted {
            let Some(got) = self.next().await? else {
                break;
            };
            each(&got.delivery);
            self.keep(&got).await?;
        }
        Ok(())
    }

    /// Messages ready in the queue when the pass began.
    pub(crate) fn ready(&self) -> usize {
        self.there
    }

    /// The pass's connection (for a publisher).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The channel (for a purge).
    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// The next of the messages the queue held when the pass began, or
    /// `None` once they were all seen (or another reader took some).
    pub(crate) async fn next(&mut self) -> Result<Option<BasicGetMessage>, Error> {
        if self.seen >= self.there {
            return Ok(None);
        }
        let got = self
            .channel
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| Error::broker(format!("read {}", self.queue), e))?;
        if got.is_some() {
            self.seen += 1;
            self.holding += 1;
        }
        Ok(got)
    }

    /// Leaves `got` in the queue, in its place.
    pub(crate) async fn keep(&mut self, got: &BasicGetMessage) -> Result<(), Error> {
        if self.keeping == Keeping::Hold {
            // Given back when the channel closes.
            return Ok(());
        }
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                &got.delivery.data,
                fresh(&got.delivery.properties),
            )
            .await
            .map_err(|e| Error::broker(format!("keep a message of {}", self.queue), e))?;
        self.ack(got).await?;
        self.turned = true;
        self.uncommitted += 1;
        if self.uncommitted >= BATCH {
            self.commit().await?;
        }
        Ok(())
    }

    /// Removes `got` from the queue (it was replayed, or is purged).
    pub(crate) async fn take(&mut self, got: &BasicGetMessage) -> Result<(), Error> {
        self.ack(got).await?;
        if self.keeping == Keeping::Rotate {
            self.commit().await?;
        }
        Ok(())
    }

    /// Ends the pass: in [`Keeping::Rotate`], once a message went to the
    /// tail, keeps every message not yet seen (so the queue has gone round
    /// once, in its order), and commits; then closes. Closing a pass
    /// instead gives back what is held or uncommitted.
    pub(crate) async fn finish(mut self) -> Result<(), Error> {
        if self.keeping == Keeping::Rotate {
            if self.turned {
                while let Some(got) = self.next().await? {
                    self.keep(&got).await?;
                }
            }
            self.commit().await?;
        }
        self.close().await;
        Ok(())
    }

    /// Closes the channel and the connection: what is held or uncommitted
    /// goes back to the queue. On a queue no one consumes, what was held
    /// is ready again when this returns (or `GIVEN_BACK_LIMIT` passed):
    /// the broker answers the channel's close before it has put the
    /// messages back, and a listing that follows at once (the page of one
    /// dead letter, after the page that listed it) would miss them.
    pub(crate) async fn close(self) {
        let expected = match self.keeping {
            Keeping::Hold if self.holding > 0 => {
                match ready_and_consumers(&self.channel, &self.queue).await {
                    Ok((ready, consumers)) if consumers == u32::from(self.consuming) => {
                        Some(ready as usize + self.holding)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let _ = self.channel.close(200, "done".into()).await;
        if let Some(expected) = expected {
            self.given_back(expected).await;
        }
        connection::close(&self.conn, "done").await;
    }

    /// Waits until the queue has `expected` messages ready, at most
    /// `GIVEN_BACK_LIMIT`.
    async fn given_back(&self, expected: usize) {
        let Ok(channel) = open_channel(&self.conn).await else {
            return;
        };
        let started = std::time::Instant::now();
        while started.elapsed() < GIVEN_BACK_LIMIT {
            match depth(&channel, &self.queue).await {
                Ok(ready) if ready as usize >= expected => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => break,
            }
        }
        let _ = channel.close(200, "done".into()).await;
    }

    async fn ack(&mut self, got: &BasicGetMessage) -> Result<(), Error> {
        self.channel
            .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(|e| Error::broker(format!("acknowledge a message of {}", self.queue), e))?;
        self.holding = self.holding.saturating_sub(1);
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), Error> {
        self.channel
            .tx_commit()
            .await
            .map_err(|e| Error::broker(format!("commit on {}", self.queue), e))?;
        self.uncommitted = 0;
        Ok(())
    }
}

/// The properties of a kept message published again: the same, without
/// the broker's count of its deliveries.
fn fresh(props: &BasicProperties) -> BasicProperties {
    let Some(headers) = props.headers() else {
        return props.clone();
    };
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !matches!(key.as_str(), "x-delivery-count" | "x-acquired-count") {
            kept.insert(key.clone(), value.clone());
        }
    }
    props.clone().with_headers(kept)
}

/// Messages ready in `queue`.
pub(crate) async fn depth(channel: &Channel, queue: &str) -> Result<u32, Error> {
    Ok(ready_and_consumers(channel, queue).await?.0)
}

/// Messages ready in `queue`, and its consumers.
async fn ready_and_consumers(channel: &Channel, queue: &str) -> Result<(u32, u32), Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|q| (q.message_count(), q.consumer_count()))
        .map_err(|e| Error::broker(format!("look at {queue}"), e))
}

pub(crate) async fn open_channel(conn: &Connection) -> Result<Channel, Error> {
    conn.create_channel()
        .await
        .map_err(|e| Error::broker("open a channel", e))
}
