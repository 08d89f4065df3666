//! A channel in confirm mode: every publish is mandatory and its confirm
//! awaited by whoever needs it; a nack, a return (nothing routed it) or a
//! closed channel is an error, never a silent drop. Public because the
//! `warren` binary's job keeper publishes with it.

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};

use crate::error::Error;

use crate::limits::SETTLE_TIMEOUT;

/// A confirm-mode channel; cheap to clone, safe to share between tasks.
#[derive(Clone, Debug)]
pub struct Publisher {
    channel: Channel,
}

/// A published message whose confirm has not arrived yet.
pub struct Unconfirmed {
    confirm: PublisherConfirm,
}

impl Publisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &Connection) -> Result<Publisher, Error> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Error::broker("open a publishing channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| Error::broker("enable publisher confirms", e))?;
        Ok(Publisher { channel })
    }

    /// Publishes `body` (mandatory: an unroutable message comes back as an
    /// error when its confirm is awaited).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Unconfirmed, Error> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await
            .map_err(|e| Error::Publish {
                target: target(exchange, routing_key),
                reason: e.to_string(),
            })?;
        Ok(Unconfirmed { confirm })
    }

    /// Publishes without waiting: the returned future queues the frames the
    /// first time it is polled, and resolves once they are written.
    pub fn publish_owned(
        &self,
        exchange: String,
        routing_key: String,
        body: Vec<u8>,
        properties: BasicProperties,
    ) -> impl Future<Output = Result<Unconfirmed, Error>> + Send + 'static {
        let publisher = self.clone();
        async move {
            publisher
                .publish(&exchange, &routing_key, &body, properties)
                .await
        }
    }

    /// Publishes and waits for the broker's confirm (callers bound it).
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), Error> {
        let pending = self
            .publish(exchange, routing_key, body, properties)
            .await?;
        pending.confirmed().await.map_err(|reason| Error::Publish {
            target: target(exchange, routing_key),
            reason,
        })
    }

    /// [`Publisher::publish_confirmed`] within `limits::SETTLE_TIMEOUT` (10 s), the
    /// frames' write included (a blocked connection stops it): for retries,
    /// dead letters and hand-backs, after which a delivery is acknowledged.
    pub async fn publish_before_ack(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), Error> {
        let publish = self.publish_confirmed(exchange, routing_key, body, properties);
        tokio::time::timeout(SETTLE_TIMEOUT, publish)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Publish {
                    target: target(exchange, routing_key),
                    reason: format!(
                        "not confirmed within {}s (is the broker blocking publishers?)",
                        SETTLE_TIMEOUT.as_secs()
                    ),
                })
            })
    }

    /// True while the channel is open.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the channel.
    pub async fn close(&self) {
        let _ = self.channel.close(200, "done".into()).await;
    }
}

impl From<PublisherConfirm> for Unconfirmed {
    fn from(confirm: PublisherConfirm) -> Unconfirmed {
        Unconfirmed { confirm }
    }
}

impl Unconfirmed {
    /// Waits for the confirm; `Err` says why the broker did not take it.
    pub async fn confirmed(self) -> Result<(), String> {
        match self.confirm.await {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(format!(
                "the broker returned it: {} (no queue is bound for routing key `{}`)",
                returned.reply_text, returned.delivery.routing_key
            )),
            Ok(Confirmation::Nack(_)) => Err("the broker refused it (nack)".into()),
            Err(error) => Err(format!("no confirm: {error}")),
        }
    }
}

/// `exchange/routing-key`, with the default exchange shown as `(default)`.
pub(crate) fn target(exchange: &str, routing_key: &str) -> String {
    let exchange = if exchange.is_empty() {
        "(default)"
    } else {
        exchange
    };
    format!("{exchange}/{routing_key}")
}
