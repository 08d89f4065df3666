//! What the broker says about a pipeline's queues, read on one long-lived
//! connection (never a connection per poll) with passive declares.
//!
//! Supervisors of a pipeline find each other through the broker: each one
//! holds a consumer on the queue `{pipeline}.supervisors`, where nothing is
//! ever published, so that queue's consumer count is the number of live
//! supervisors (the broker drops the consumer of a supervisor that dies).

use lapin::{
    Channel, Connection, Consumer, ErrorKind,
    options::{BasicConsumeOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use tracing::{info, warn};
use warren::{BrokerUrls, Error, connection, names};

/// Ready messages and consumers of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Consumers.
    pub consumers: u32,
}

/// A connection for observing, reopened when lost.
pub struct Monitor {
    urls: BrokerUrls,
    pipeline: String,
    name: String,
    connected: Option<Connected>,
    /// Counts itself among the pipeline's supervisors.
    present: bool,
    /// The last failure was logged; say nothing until it works again.
    quiet: bool,
}

struct Connected {
    connection: Connection,
    channel: Channel,
    /// Kept so the presence consumer lives as long as the connection.
    _presence: Option<Consumer>,
}

impl Monitor {
    /// A monitor for `pipeline` (not connected yet). With `present`, it also
    /// counts itself among the pipeline's supervisors.
    pub fn new(urls: BrokerUrls, pipeline: &str, role: &str, present: bool) -> Monitor {
        Monitor {
            urls,
            pipeline: pipeline.to_string(),
            name: format!("warren {role} {pipeline} pid {}", std::process::id()),
            connected: None,
            present,
            quiet: false,
        }
    }

    /// The open connection, if any (for declaring).
    pub fn connection(&self) -> Option<&Connection> {
        self.connected.as_ref().map(|link| &link.connection)
    }

    /// Connects if needed. Failures are logged once until it works again.
    pub async fn ensure(&mut self) -> bool {
        if let Some(link) = &self.connected {
            if link.connection.status().connected() && link.channel.status().connected() {
                return true;
            }
            self.connected = None;
        }
        match self.open().await {
            Ok(link) => {
                if self.quiet {
                    info!("broker reachable again at {}", self.urls.addresses());
                }
                self.quiet = false;
                self.connected = Some(link);
                true
            }
            Err(error) => {
                if !self.quiet {
                    warn!("{error}; retrying every poll");
                    self.quiet = true;
                }
                false
            }
        }
    }

    async fn open(&self) -> Result<Connected, Error> {
        let connection = connection::open(&self.urls, &self.name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Error::broker("open a channel", e))?;
        let presence = if self.present {
            Some(self.join(&connection).await?)
        } else {
            None
        };
        Ok(Connected {
            connection,
            channel,
            _presence: presence,
        })
    }

    /// Declares the presence queue and consumes from it. It is durable,
    /// and removed by the broker an hour after its last supervisor left:
    /// RabbitMQ 4 deprecates queues that are neither durable nor exclusive
    /// (4.3 refuses them by default, closing the connection). A queue an
    /// earlier warren declared transient is used as it is (a restart of
    /// the broker removes it).
    async fn join(&self, connection: &Connection) -> Result<Consumer, Error> {
        let open = || async {
            connection
                .create_channel()
                .await
                .map_err(|e| Error::broker("open a channel", e))
        };
        let mut channel = open().await?;
        let queue = names::presence_queue(&self.pipeline);
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        let mut durable = args.clone();
        durable.insert("x-expires".into(), AMQPValue::LongLongInt(3_600_000));
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                durable,
            )
            .await;
        if declared.is_err() {
            // An earlier warren's transient queue (PRECONDITION_FAILED:
            // durable): the channel is closed; use the queue as it is.
            channel = open().await?;
            channel
                .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
                .await
                .map_err(|e| Error::broker(format!("declare {queue}"), e))?;
        }
        channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("consume {queue}"), e))
    }

    /// Ready messages and consumers of each queue (`None` for a queue that
    /// does not exist), or `None` when the broker cannot be reached.
    pub async fn queues(&mut self, names: &[String]) -> Option<Vec<Option<QueueState>>> {
        if !self.ensure().await {
            return None;
        }
        let mut states = Vec::with_capacity(names.len());
        for name in names {
            let link = self.connected.as_mut()?;
            let declared = link
                .channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match declared {
                Ok(queue) => states.push(Some(QueueState {
                    ready: u64::from(queue.message_count()),
                    consumers: queue.consumer_count(),
                })),
                Err(error) if is_not_found(&error) => {
                    // The broker closed the channel: open another.
                    states.push(None);
                    match link.connection.create_channel().await {
                        Ok(channel) => link.channel = channel,
                        Err(_) => {
                            self.connected = None;
                            return None;
                        }
                    }
                }
                Err(error) => {
                    warn!("looking at queue {name} failed: {error}; reconnecting");
                    self.connected = None;
                    return None;
                }
            }
        }
        Some(states)
    }

    /// Live supervisors of the pipeline (at least 1: this one).
    pub async fn supervisors(&mut self) -> u32 {
        let queue = names::presence_queue(&self.pipeline);
        match self.queues(std::slice::from_ref(&queue)).await {
            Some(states) => states[0].map_or(1, |s| s.consumers.max(1)),
            None => 1,
        }
    }

    /// Closes the connection (and with it this supervisor's presence).
    pub async fn close(&mut self) {
        if let Some(link) = self.connected.take() {
            connection::close(&link.connection, "stopping").await;
        }
    }
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_message().as_str().starts_with("NOT_FOUND"))
}
