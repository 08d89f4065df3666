//! A stage's dead-letter queue: look at it, send its messages back to the
//! stage, or drop them.

use lapin::{
    BasicProperties, Channel, Connection,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
        QueueDeclareOptions, QueuePurgeOptions,
    },
    types::FieldTable,
};

use futures_util::StreamExt as _;

use crate::{connection, error::Error, message, names, pipeline::Pipeline, publisher::Publisher};

/// One dead letter, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its message id (empty if it has none).
    pub id: String,
    /// The attempt it died at.
    pub attempts: u32,
    /// Why: `x-warren-error`, or the broker's own reason (`delivery_limit`).
    pub reason: String,
    /// Its body.
    pub body: Vec<u8>,
    /// Its headers, as text (`x-warren-*` and any the producer set).
    pub headers: Vec<(String, String)>,
}

/// Opens a connection for dead-letter work on `stage`, checking it exists.
async fn open(pipeline: &Pipeline, stage: &str) -> Result<(Connection, Channel, String), Error> {
    pipeline.require_stage(stage)?;
    let name = format!("warren dlq {}.{stage}", pipeline.name);
    let conn = connection::open_with_retry(&pipeline.broker.urls, &name, 3).await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| Error::broker("open a channel", e))?;
    Ok((conn, channel, names::dead_queue(&pipeline.name, stage)))
}

/// How many dead letters `stage` has.
pub async fn count(pipeline: &Pipeline, stage: &str) -> Result<u32, Error> {
    let (conn, channel, queue) = open(pipeline, stage).await?;
    let counted = depth(&channel, &queue).await;
    connection::close(&conn, "done").await;
    counted
}

/// Messages ready in `queue`.
async fn depth(channel: &Channel, queue: &str) -> Result<u32, Error> {
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
        .map(|q| q.message_count())
        .map_err(|e| Error::broker(format!("look at {queue}"), e))
}

/// The first `limit` dead letters of `stage`, left in the queue. They are
/// taken with one consumer and a prefetch as large as what is wanted (not a
/// `basic.get` each), then given back by closing the channel.
pub async fn list(
    pipeline: &Pipeline,
    stage: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, Error> {
    let (conn, channel, queue) = open(pipeline, stage).await?;
    let wanted = limit.min(depth(&channel, &queue).await? as usize);
    let mut out = Vec::with_capacity(wanted);
    if wanted > 0 {
        channel
            .basic_qos(wanted.min(65_535) as u16, BasicQosOptions::default())
            .await
            .map_err(|e| Error::broker(format!("set the prefetch on {queue}"), e))?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("read {queue}"), e))?;
        while out.len() < wanted {
            // Fewer than counted (another reader took some): stop waiting.
            let next = tokio::time::timeout(std::time::Duration::from_secs(2), consumer.next());
            match next.await {
                Ok(Some(Ok(delivery))) => out.push(describe(&delivery.properties, delivery.data)),
                Ok(Some(Err(error))) => return Err(Error::broker(format!("read {queue}"), error)),
                Ok(None) | Err(_) => break,
            }
        }
    }
    // Closing the channel gives back every message taken.
    let _ = channel.close(200, "listed".into()).await;
    connection::close(&conn, "done").await;
    Ok(out)
}

/// Sends up to `limit` dead letters back to `stage` as new first attempts;
/// each leaves the dead-letter queue only after the broker confirmed it
/// in the stage queue. Only what the queue held when the replay started is
/// replayed: messages dead-lettered again meanwhile (by workers running now)
/// stay, instead of going round for ever. Returns how many were sent.
pub async fn replay(pipeline: &Pipeline, stage: &str, limit: usize) -> Result<usize, Error> {
    replay_matching(pipeline, stage, limit, |_| true).await
}

/// [`replay`] of the dead letters `chosen` picks (the others stay, in
/// their order).
pub async fn replay_matching(
    pipeline: &Pipeline,
    stage: &str,
    limit: usize,
    chosen: impl Fn(&DeadLetter) -> bool,
) -> Result<usize, Error> {
    let (conn, channel, queue) = open(pipeline, stage).await?;
    let there = depth(&channel, &queue).await? as usize;
    let publisher = Publisher::open(&conn).await?;
    let mut sent = 0;
    let mut seen = 0;
    while sent < limit && seen < there {
        let Some(got) = get(&channel, &queue).await? else {
            break;
        };
        seen += 1;
        if !chosen(&describe(
            &got.delivery.properties,
            got.delivery.data.clone(),
        )) {
            // Left unacknowledged: closing the channel gives it back.
            continue;
        }
        let props = message::republish_properties(
            &got.delivery.properties,
            &[(message::ATTEMPT, message::int(1))],
            &[message::ERROR, message::STAGE, message::NOT_BEFORE],
        );
        let tag = got.delivery.delivery_tag;
        let replayed = publisher
            .publish_before_ack(&pipeline.name, stage, &got.delivery.data, props)
            .await;
        if let Err(error) = replayed {
            // Closing the channel gives the message back to the queue.
            connection::close(&conn, "done").await;
            return Err(error);
        }
        channel
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(|e| Error::broker(format!("remove a replayed message from {queue}"), e))?;
        sent += 1;
    }
    publisher.close().await;
    connection::close(&conn, "done").await;
    Ok(sent)
}

/// Drops up to `limit` dead letters of `stage` (all when `None`); returns
/// how many.
pub async fn purge(pipeline: &Pipeline, stage: &str, limit: Option<usize>) -> Result<usize, Error> {
    let (conn, channel, queue) = open(pipeline, stage).await?;
    let purged = match limit {
        None => channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .map(|n| n as usize)
            .map_err(|e| Error::broker(format!("purge {queue}"), e))?,
        Some(limit) => {
            let mut purged = 0;
            while purged < limit {
                let Some(got) = get(&channel, &queue).await? else {
                    break;
                };
                channel
                    .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|e| Error::broker(format!("drop a message of {queue}"), e))?;
                purged += 1;
            }
            purged
        }
    };
    connection::close(&conn, "done").await;
    Ok(purged)
}

/// Drops the dead letters of `stage` that `chosen` picks (looking at what
/// the queue held when it started); returns how many.
pub async fn purge_matching(
    pipeline: &Pipeline,
    stage: &str,
    chosen: impl Fn(&DeadLetter) -> bool,
) -> Result<usize, Error> {
    let (conn, channel, queue) = open(pipeline, stage).await?;
    let there = depth(&channel, &queue).await? as usize;
    let mut purged = 0;
    for _ in 0..there {
        let Some(got) = get(&channel, &queue).await? else {
            break;
        };
        if chosen(&describe(
            &got.delivery.properties,
            got.delivery.data.clone(),
        )) {
            channel
                .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
                .await
                .map_err(|e| Error::broker(format!("drop a message of {queue}"), e))?;
            purged += 1;
        }
    }
    // Closing the channel gives back the messages not chosen.
    connection::close(&conn, "done").await;
    Ok(purged)
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::BasicGetMessage>, Error> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|e| Error::broker(format!("read {queue}"), e))
}

fn describe(props: &BasicProperties, body: Vec<u8>) -> DeadLetter {
    let reason = message::text_header(props, message::ERROR)
        .or_else(|| {
            message::death_reason(props).map(|r| format!("dead-lettered by the broker: {r}"))
        })
        .unwrap_or_else(|| "(no reason recorded)".into());
    let headers = props
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .map(|(name, value)| (name.to_string(), header_text(value)))
                .collect()
        })
        .unwrap_or_default();
    DeadLetter {
        id: message::id_of(props).unwrap_or_default().to_string(),
        attempts: message::attempt_of(props),
        reason,
        body,
        headers,
    }
}

/// A header's value as text (nested tables shown in their debug form).
fn header_text(value: &lapin::types::AMQPValue) -> String {
    use lapin::types::AMQPValue;
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}
