//! Where a tracker attaches to the job stream: it looks at the stream's
//! first message and at the one before the store's offset, asks
//! [`resume::resume`] (pure) whether the stream is the one the store read,
//! and applies the answer to the store, saying so in the log: a re-created
//! stream is read from its start, a gap its retention left is noted with
//! the jobs it may hide.

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::time::Instant;
use tracing::warn;

use super::{
    resume::{self, Found, Resume, Saved},
    store::Store,
};

/// Longest wait for the stream's first message, or the one at the saved
/// offset (a stream's reads answer at once when there is something to
/// read).
const PROBE: Duration = Duration::from_secs(3);

/// Jobs named at most in the log of a gap.
const SHOWN: usize = 20;

/// The offset to read `stream` from into `store`, once the store is set
/// to it.
pub async fn start_offset(
    connection: &Connection,
    stream: &str,
    store: &Store,
) -> Result<u64, warren::Error> {
    let saved = Saved {
        next: store.next_offset().map_err(warren::Error::Setup)?,
        print: store.last_print().map_err(warren::Error::Setup)?,
    };
    let mut found = Found {
        first: None,
        at_last: None,
    };
    if saved.next > 0 {
        found.first = probe(connection, stream, None)
            .await?
            .map(|(offset, _)| offset);
        if resume::needs_last(saved, found.first) {
            found.at_last = probe(connection, stream, Some(saved.next - 1))
                .await?
                .filter(|(offset, _)| *offset == saved.next - 1)
                .map(|(_, print)| print);
        }
    }
    match resume::resume(saved, found) {
        Resume::GoOn(next) => Ok(next),
        Resume::Recreated => {
            warn!(
                stream,
                "the job stream was re-created (it ends before offset {}, where this store left off, or holds another message there): reading it again from its start; what this store knew of the old stream stays",
                saved.next
            );
            store.restart(0).map_err(warren::Error::Setup)?;
            Ok(0)
        }
        Resume::Gap(gap) => {
            let open = store.note_gap(gap.clone()).map_err(warren::Error::Setup)?;
            warn!(
                stream,
                "this store has a gap: the job stream's retention (x-max-age, jobs.keep) dropped {} events (offsets {}..{}) before they were read; reading on from offset {}",
                gap.end - gap.start,
                gap.start,
                gap.end,
                gap.end
            );
            if !open.is_empty() {
                let mut named: Vec<&str> = open.iter().take(SHOWN).map(String::as_str).collect();
                if open.len() > SHOWN {
                    named.push("...");
                }
                warn!(
                    stream,
                    "the gap may hold events of {} unsettled jobs: this store cannot answer for job {}",
                    open.len(),
                    named.join(", job ")
                );
            }
            store.restart(gap.end).map_err(warren::Error::Setup)?;
            Ok(gap.end)
        }
    }
}

/// Consumes `stream` from `offset` on `channel`.
pub async fn consume(
    channel: &Channel,
    stream: &str,
    offset: AMQPValue,
) -> Result<Consumer, warren::Error> {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    channel
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(|e| {
            warren::Error::broker(
                format!("read the job stream {stream} (declared by `warren declare`, the workers or `warren run` of a pipeline with jobs.track)"),
                e,
            )
        })
}

/// The offset and print of the stream's first message (`at` `None`), or
/// of the first one at or after offset `at`; `None` when nothing comes
/// within [`PROBE`] (an empty stream, or one that ends before).
async fn probe(
    connection: &Connection,
    stream: &str,
    at: Option<u64>,
) -> Result<Option<(u64, u64)>, warren::Error> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| warren::Error::broker("open a channel", e))?;
    let found = async {
        channel
            .basic_qos(100, BasicQosOptions::default())
            .await
            .map_err(|e| warren::Error::broker("set the prefetch", e))?;
        let from = match at {
            None => AMQPValue::LongString("first".into()),
            Some(offset) => AMQPValue::LongLongInt(offset as i64),
        };
        let mut consumer = consume(&channel, stream, from).await?;
        let deadline = Instant::now() + PROBE;
        loop {
            let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(delivery)) => {
                    delivery.map_err(|e| warren::Error::broker("read the job stream", e))?
                }
            };
            let Some(offset) = offset_of(&delivery.properties) else {
                continue;
            };
            // A read starts at its chunk's start: the ones before `at` are
            // passed over.
            if at.is_some_and(|at| offset < at) {
                channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|e| warren::Error::broker("acknowledge job events", e))?;
                continue;
            }
            return Ok(Some((offset, print_of(&delivery))));
        }
    }
    .await;
    let _ = channel.close(200, "probed".into()).await;
    found
}

/// A delivery's print ([`resume::print`]).
pub fn print_of(delivery: &lapin::message::Delivery) -> u64 {
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map_or("", |id| id.as_str());
    resume::print(id, &delivery.data)
}

/// The stream offset of a delivery (`x-stream-offset`).
pub fn offset_of(props: &lapin::BasicProperties) -> Option<u64> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}
