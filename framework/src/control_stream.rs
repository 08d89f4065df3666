//! A pipeline's control streams (RabbitMQ streams every worker reads from
//! their start before it consumes, then follows live): the cancelled jobs
//! (`worker/cancels.rs`), the paused stages (`pauses.rs`) and the peeks at
//! waiting messages (`peeks.rs`).
//!
//! A reader opens a consumer at the stream's first offset and reads until
//! [`IDLE_END`] passes without a message: a stream hands what it holds over
//! within milliseconds, so it has then seen everything the stream held
//! when it started. It writes nothing: a worker that published at its
//! start would learn at once of a memory alarm's block and start nothing,
//! where it can still handle and acknowledge what it holds (its publishing
//! waits, `worker/session.rs`); and a marker per reader would pile up in a
//! stream kept without an age limit. (The restart follower, `restarts.rs`,
//! writes one per connection to tell old requests from new.) Later
//! messages reach a reader as the broker pushes them (well within a
//! second). A reader lost after that opens again after a growing pause
//! ([`Backoff`]) and reads the stream from its start again: a change is
//! then late, never lost.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{
    Connection, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{backoff::Backoff, error::Error, message, publisher::Publisher};

/// How long a reader waits to read what the stream held at its start
/// before it gives up.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(60);

/// How long a reader that has not read its marker (or has none) waits for
/// a next message before it takes the stream to be read to its end.
const IDLE_END: Duration = Duration::from_millis(200);

/// What one message of a control stream does to the reader's state: its
/// body (markers are `{}`).
pub(crate) type Apply = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// An open reader: its channel, consumer and the marker it wrote.
pub(crate) type Opened = (lapin::Channel, Consumer, String);

/// Starts reading `stream` on `connection` and, given a `publisher`,
/// writes a marker to it: the reader [`follow`] sends on its `caught_up`
/// once it read that far (or after [`IDLE_END`] without a message).
pub(crate) async fn open(
    stream: &str,
    connection: &Connection,
    publisher: Option<&Publisher>,
) -> Result<Opened, Error> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker(format!("open a channel for the stream {stream}"), e))?;
    channel
        .basic_qos(256, BasicQosOptions::default())
        .await
        .map_err(|e| Error::broker("set the prefetch", e))?;
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let consumer = channel
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(|e| Error::broker(format!("read the stream {stream}"), e))?;
    let marker = format!("marker-{}", message::new_id());
    let Some(publisher) = publisher else {
        return Ok((channel, consumer, marker));
    };
    // Written on its own: a broker that blocks publishing holds it (and
    // the reader ends its catch-up by [`IDLE_END`] instead).
    let publisher = publisher.clone();
    let (to, id) = (stream.to_string(), marker.clone());
    tokio::spawn(async move {
        let props = message::new_properties(&id, &id);
        if let Err(error) = publisher.publish_confirmed("", &to, b"{}", props).await {
            warn!(stream = %to, %error, "could not write a control stream's marker");
        }
    });
    Ok((channel, consumer, marker))
}

/// What [`follow`] reads on: the stream's name and the consuming
/// connection.
pub(crate) struct Source {
    pub stream: String,
    pub connection: Arc<Connection>,
}

/// Follows the stream into `apply` from `first` (what [`open`] gave) until
/// `stop`; sends on `caught_up` once the first marker was read. A reader
/// lost before that ends with why; a reader lost later opens again.
pub(crate) async fn follow(
    source: Source,
    first: Opened,
    apply: Apply,
    caught_up: oneshot::Sender<()>,
    stop: CancellationToken,
) -> Option<String> {
    let mut caught_up = Some(caught_up);
    let mut current = Some(first);
    let mut pauses = pauses();
    loop {
        let (channel, consumer, marker) = match current.take() {
            Some(open) => open,
            None => {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(pauses.next_delay()) => {}
                }
                match open(&source.stream, &source.connection, None).await {
                    Ok(open) => open,
                    Err(error) => {
                        warn!(stream = %source.stream, %error, "a control stream cannot be read; trying again");
                        continue;
                    }
                }
            }
        };
        let why = read(channel, consumer, &marker, &apply, &mut caught_up, &stop).await?;
        if caught_up.is_some() {
            return Some(why);
        }
        warn!(stream = %source.stream, reason = %why, "lost a control stream; reading it again");
    }
}

/// Reads until `stop` (`None`) or a loss (why).
async fn read(
    channel: lapin::Channel,
    mut consumer: Consumer,
    marker: &str,
    apply: &Apply,
    caught_up: &mut Option<oneshot::Sender<()>>,
    stop: &CancellationToken,
) -> Option<String> {
    let _channel = channel;
    loop {
        let idle = async {
            match caught_up.is_some() {
                true => tokio::time::sleep(IDLE_END).await,
                false => std::future::pending().await,
            }
        };
        let delivery = tokio::select! {
            _ = stop.cancelled() => return None,
            delivery = consumer.next() => delivery,
            _ = idle => {
                if let Some(caught_up) = caught_up.take() {
                    let _ = caught_up.send(());
                }
                continue;
            }
        };
        let delivery = match delivery {
            None => return Some("the stream's consumer ended".into()),
            Some(Err(error)) => return Some(format!("reading the stream: {error}")),
            Some(Ok(delivery)) => delivery,
        };
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str());
        apply(&delivery.data);
        if id == Some(marker)
            && let Some(caught_up) = caught_up.take()
        {
            let _ = caught_up.send(());
        }
        if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
            return Some(format!("acknowledging on the stream: {error}"));
        }
    }
}

/// Opens a reader of each stream, spawns its [`follow`] into `tasks`, and
/// waits until every one read what its stream held: an error when one
/// could not. The readers catch up at the same time, so a worker with
/// several control streams waits one [`IDLE_END`], not one per stream.
pub(crate) async fn start(
    readers: Vec<(Source, Apply)>,
    tasks: &mut tokio::task::JoinSet<Option<String>>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let mut reading = Vec::new();
    for (source, apply) in readers {
        let stream = source.stream.clone();
        let first = open(&stream, &source.connection, None).await?;
        let (caught_up, read_up) = oneshot::channel();
        let reader = tasks.spawn(follow(source, first, apply, caught_up, stop.clone()));
        reading.push((stream, reader, read_up));
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    for (stream, reader, read_up) in reading {
        match tokio::time::timeout_at(deadline, read_up).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let why = match tasks.join_next().await {
                    Some(Ok(Some(why))) => why,
                    _ => format!("the reader of {stream} stopped"),
                };
                return Err(Error::Setup(why));
            }
            Err(_) => {
                reader.abort();
                return Err(Error::Setup(format!(
                    "the stream {stream} was not read within {}s",
                    CATCH_UP.as_secs()
                )));
            }
        }
    }
    Ok(())
}

/// The pause before a follower of a stream on a connection of its own
/// tries again: the first of a growing series.
pub(crate) fn pauses() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(15))
}

/// A follower (`what`) lost its stream for `why`: logs it and waits the
/// next of `pauses`; false when `stop` came first.
pub(crate) async fn again_after(
    pauses: &mut Backoff,
    what: &str,
    why: &str,
    stop: &CancellationToken,
) -> bool {
    warn!(reason = %why, "{what} not followed; trying again");
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(pauses.next_delay()) => true,
    }
}
