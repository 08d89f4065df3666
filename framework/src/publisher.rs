//! A channel in confirm mode: every publish is mandatory and its confirm
//! awaited by whoever needs it; a nack, a return (nothing routed it) or a
//! closed channel is an error, never a silent drop. Public because the
//! `warren` binary's job keeper publishes with it.

use std::time::{Duration, Instant};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use tokio::sync::watch;

use crate::error::Error;

use crate::limits::SETTLE_TIMEOUT;

/// A confirm-mode channel; cheap to clone, safe to share between tasks.
#[derive(Clone, Debug)]
pub struct Publisher {
    channel: Channel,
    /// `Some(reason)` while the broker blocks this channel's connection (a
    /// memory or disk alarm), as its owner follows it; never set otherwise.
    blocked: watch::Receiver<Option<String>>,
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
        Ok(Publisher {
            channel,
            blocked: watch::channel(None).1,
        })
    }

    /// This publisher, told by `blocked` when the broker blocks its
    /// connection (the worker's session follows the connection's events):
    /// [`Publisher::publish_before_ack`] does not count that time.
    pub(crate) fn following_blocks(
        mut self,
        blocked: watch::Receiver<Option<String>>,
    ) -> Publisher {
        self.blocked = blocked;
        self
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
    /// frames' write included: for retries, dead letters, hand-backs, copies
    /// and job events, after which a delivery is acknowledged. While the
    /// broker blocks the connection (an alarm, when the owner follows it)
    /// the clock stops: a block asks publishers to wait, and a hand-over
    /// that gave up would start the session over and charge every held
    /// delivery an attempt. (A block longer than the broker's
    /// `consumer_timeout` still ends in the broker closing the channel.)
    pub async fn publish_before_ack(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), Error> {
        let publish = self.publish_confirmed(exchange, routing_key, body, properties);
        within_unblocked(publish, SETTLE_TIMEOUT, self.blocked.clone())
            .await
            .unwrap_or_else(|| {
                Err(Error::Publish {
                    target: target(exchange, routing_key),
                    reason: format!("not confirmed within {}s", SETTLE_TIMEOUT.as_secs()),
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

/// Runs `work` until it ends (`Some`) or until it has taken `limit` while
/// `blocked` said nothing (`None`): time while it holds a reason does not
/// count. Once its sender is gone, `limit` counts on plainly.
async fn within_unblocked<T>(
    work: impl Future<Output = T>,
    limit: Duration,
    mut blocked: watch::Receiver<Option<String>>,
) -> Option<T> {
    tokio::pin!(work);
    let mut left = limit;
    let mut following = true;
    loop {
        if following && blocked.borrow_and_update().is_some() {
            tokio::select! {
                done = &mut work => return Some(done),
                changed = blocked.changed() => following = changed.is_ok(),
            }
            continue;
        }
        let since = Instant::now();
        tokio::select! {
            done = &mut work => return Some(done),
            _ = tokio::time::sleep(left) => return None,
            changed = blocked.changed(), if following => {
                following = changed.is_ok();
                left = left.saturating_sub(since.elapsed());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn work_that_outlasts_the_limit_gives_up() {
        let (_tx, blocked) = watch::channel(None);
        let work = tokio::time::sleep(Duration::from_secs(11));
        assert_eq!(within_unblocked(work, LIMIT, blocked).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn time_while_blocked_does_not_count() {
        let (tx, blocked) = watch::channel(None);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            tx.send_replace(Some("low on memory".into()));
            tokio::time::sleep(Duration::from_secs(60)).await;
            tx.send_replace(None);
            tokio::time::sleep(Duration::from_secs(600)).await;
        });
        // 4 s before the block, 60 s blocked, 5 s after: 9 s counted.
        let started = tokio::time::Instant::now();
        let work = tokio::time::sleep(Duration::from_secs(69));
        assert_eq!(within_unblocked(work, LIMIT, blocked).await, Some(()));
        assert_eq!(started.elapsed(), Duration::from_secs(69));
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_counts_on_after_the_block_lifts() {
        let (tx, blocked) = watch::channel(Some("low on memory".to_string()));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            tx.send_replace(None);
            tokio::time::sleep(Duration::from_secs(600)).await;
        });
        let started = tokio::time::Instant::now();
        let work = tokio::time::sleep(Duration::from_secs(3600));
        assert_eq!(within_unblocked(work, LIMIT, blocked).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn without_anyone_following_blocks_the_limit_is_plain() {
        let blocked = watch::channel(None).1;
        let started = tokio::time::Instant::now();
        let work = tokio::time::sleep(Duration::from_secs(3600));
        assert_eq!(within_unblocked(work, LIMIT, blocked).await, None);
        assert_eq!(started.elapsed(), LIMIT);
    }
}
