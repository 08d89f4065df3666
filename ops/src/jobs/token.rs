//! The keeper token (see [`keeper`](super::keeper)): one message in the
//! keeper queue, held unacknowledged by the supervisor that leads. Every
//! token goes to the queue's single active consumer, so a second token
//! never makes a second keeper (the leader removes it): minting one is
//! safe whenever the token may have vanished ([`token_lost`], and
//! [`recycle`] when a token handed back does not come back).

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::{
    Channel, Consumer,
    options::{BasicConsumeOptions, BasicNackOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tracing::warn;
use warren::publisher::Publisher;

/// How long a follower sees no word of a keeper, with the keeper queue
/// empty, before it mints a token.
pub const LOST: Duration = Duration::from_secs(60);

/// Longest wait for a token handed back to come again.
const COME_BACK: Duration = Duration::from_secs(10);

/// Whether a follower should mint a token: the keeper queue holds none
/// (`ready`), and neither the last word of a keeper on the stream
/// (`alive_ms`) nor the start of this follower's watch is [`LOST`] old.
pub fn token_lost(ready: u32, alive_ms: Option<u64>, watching_since_ms: u64, now_ms: u64) -> bool {
    let last = alive_ms.unwrap_or(0).max(watching_since_ms);
    ready == 0 && now_ms.saturating_sub(last) >= LOST.as_millis() as u64
}

/// The keeper queue's ready messages and consumers.
pub(super) async fn look(channel: &Channel, queue: &str) -> Result<(u32, u32), warren::Error> {
    let state = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| warren::Error::broker(format!("look at queue {queue}"), e))?;
    Ok((state.message_count(), state.consumer_count()))
}

/// Puts a token in the keeper queue.
pub(super) async fn mint(publisher: &Publisher, queue: &str) -> Result<(), warren::Error> {
    let props = warren::message::new_properties("keeper-token", "keeper-token");
    publisher
        .publish_confirmed("", queue, br#"{"token":"job keeper"}"#, props)
        .await
}

/// Consumes the keeper queue, after putting the token in when the queue
/// is empty and nobody consumes it (two supervisors starting together may
/// both do: the active consumer then removes the second).
pub(super) async fn consume_tokens(
    queue: &str,
    channel: &Channel,
    publisher: &Publisher,
) -> Result<Consumer, warren::Error> {
    if look(channel, queue).await? == (0, 0) {
        mint(publisher, queue).await?;
    }
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| warren::Error::broker(format!("consume queue {queue}"), e))
}

/// The delivery tag of a token, or the loss of the consumer as an error.
pub(super) fn token_tag(
    delivery: Option<Result<lapin::message::Delivery, lapin::Error>>,
) -> Result<u64, warren::Error> {
    match delivery {
        Some(Ok(delivery)) => Ok(delivery.delivery_tag),
        Some(Err(error)) => Err(warren::Error::broker("hold the keeper token", error)),
        None => Err(warren::Error::Setup(
            "the keeper token's consumer was cancelled".into(),
        )),
    }
}

/// The next token within [`COME_BACK`], if any.
pub(super) async fn next_token(tokens: &mut Consumer) -> Result<Option<u64>, warren::Error> {
    match tokio::time::timeout(COME_BACK, tokens.next()).await {
        Ok(delivery) => token_tag(delivery).map(Some),
        Err(_) => Ok(None),
    }
}

/// Hands the token back and takes it again (the single active consumer
/// stays this one), resetting the broker's acknowledgement timeout. One
/// that does not come back while the queue is empty vanished (a delivery
/// limit drops a message returned too often): a new one is minted.
pub(super) async fn recycle(
    channel: &Channel,
    tokens: &mut Consumer,
    publisher: &Publisher,
    queue: &str,
    held: Vec<u64>,
) -> Result<Vec<u64>, warren::Error> {
    for tag in &held {
        channel
            .basic_nack(
                *tag,
                BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| warren::Error::broker("hand the keeper token back", e))?;
    }
    if let Some(tag) = next_token(tokens).await? {
        return Ok(vec![tag]);
    }
    if look(channel, queue).await?.0 == 0 {
        warn!(
            queue,
            "the keeper token handed back did not come back and the queue is empty: it vanished (a delivery limit?); minting a new one"
        );
        mint(publisher, queue).await?;
        if let Some(tag) = next_token(tokens).await? {
            return Ok(vec![tag]);
        }
    }
    Err(warren::Error::Setup(
        "the keeper token did not come back; another supervisor leads now".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_lost_when_the_queue_is_empty_and_no_keeper_spoke_for_long() {
        let lost = LOST.as_millis() as u64;
        let t0 = 1_000_000;
        // Just started watching: not yet, whatever the queue.
        assert!(!token_lost(0, None, t0, t0 + 1000));
        assert!(token_lost(0, None, t0, t0 + lost));
        // A token waits in the queue: someone will take it.
        assert!(!token_lost(1, None, t0, t0 + 10 * lost));
        // A keeper spoke a moment ago.
        assert!(!token_lost(0, Some(t0 + lost - 1), t0, t0 + lost));
        assert!(token_lost(0, Some(t0 + lost), t0, t0 + 2 * lost));
        // A keeper's word older than the watch counts from the watch.
        assert!(!token_lost(0, Some(1), t0, t0 + lost - 1));
    }
}
