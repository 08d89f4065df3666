//! Reads a tracked pipeline's job stream into this box's [`Store`]: from
//! the offset the store has reached, in batches (one transaction each),
//! acknowledging as it goes (a stream gives a consumer more only as it
//! acknowledges). Any box reading the same stream folds the same events in
//! the same order, so every box answers the same for every job.

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::time::Instant;
use tracing::warn;
use warren::{
    Pipeline,
    jobs::{Event, JobRecord, JobView},
    names,
    publisher::Publisher,
};

use super::store::Store;

/// Events folded per transaction at most.
const BATCH: usize = 1000;

/// Longest wait for the first event of a batch.
const QUIET: Duration = Duration::from_millis(300);

/// A consumer of the job stream and the store it folds into.
pub struct Tracker {
    store: std::sync::Arc<Store>,
    keep: Duration,
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// The job stream's name.
    stream: String,
    next: u64,
    /// The records that changed since [`Tracker::take_changed`], as they
    /// are now, once it was first called (`warren job` does not keep them).
    changed: Option<std::collections::BTreeMap<String, JobRecord>>,
    /// The id of the stream message [`Tracker::catch_up`] waits for, and
    /// whether it was read.
    marker: Option<(String, bool)>,
}

impl Tracker {
    /// Opens the store at `path` and starts reading the stream of
    /// `pipeline` where the store left off.
    pub async fn open(pipeline: &Pipeline, store: Store) -> Result<Tracker, warren::Error> {
        let next = store.next_offset().map_err(warren::Error::Setup)?;
        let connection = warren::connection::open(
            &pipeline.broker.urls,
            &format!("warren job tracker {}", pipeline.name),
        )
        .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| warren::Error::broker("open a channel", e))?;
        channel
            .basic_qos(BATCH as u16, BasicQosOptions::default())
            .await
            .map_err(|e| warren::Error::broker("set the prefetch", e))?;
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongLongInt(next as i64),
        );
        let stream = names::job_stream(&pipeline.name);
        let consumer = channel
            .basic_consume(
                stream.as_str().into(),
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
            })?;
        Ok(Tracker {
            store: std::sync::Arc::new(store),
            keep: pipeline.jobs.keep,
            connection,
            channel,
            consumer,
            stream,
            next,
            changed: None,
            marker: None,
        })
    }

    /// Folds everything the stream held when this was called, or until
    /// `deadline`: it writes a marker to the stream and reads up to it (a
    /// pause in the stream's deliveries, on a busy broker, is not its end).
    pub async fn catch_up(&mut self, deadline: Instant) -> Result<(), warren::Error> {
        let marker = format!("catch-up-{}", warren::message::new_id());
        let publisher = Publisher::open(&self.connection).await?;
        let props = warren::message::new_properties(&marker, &marker);
        let written = publisher
            .publish_confirmed("", &self.stream, b"[]", props)
            .await;
        publisher.close().await;
        written?;
        self.marker = Some((marker, false));
        while self.marker.as_ref().is_some_and(|(_, seen)| !seen) && Instant::now() < deadline {
            self.fold_some(deadline.min(Instant::now() + QUIET)).await?;
        }
        self.marker = None;
        Ok(())
    }

    /// Forgets records older than `jobs.keep` (at most once an hour).
    pub fn prune(&self) -> Result<usize, warren::Error> {
        self.store
            .prune(warren::message::epoch_ms(), self.keep.as_millis() as u64)
            .map_err(warren::Error::Setup)
    }

    /// The job as this box knows it now.
    pub fn view(&self, job: &str) -> Result<JobView, warren::Error> {
        let now = warren::message::epoch_ms();
        Ok(match self.store.get(job).map_err(warren::Error::Setup)? {
            Some(record) => record.view(job, now, self.keep.as_millis() as u64),
            None => JobView::unknown(job),
        })
    }

    /// Folds events as they come until `job` is done or failed or
    /// `deadline` passes; returns its view then.
    pub async fn wait(&mut self, job: &str, deadline: Instant) -> Result<JobView, warren::Error> {
        loop {
            let view = self.view(job)?;
            if view.state.is_settled() || Instant::now() >= deadline {
                return Ok(view);
            }
            self.fold_some(deadline).await?;
        }
    }

    /// The store it folds into, for readers beside it.
    pub fn store(&self) -> std::sync::Arc<Store> {
        self.store.clone()
    }

    /// The record of `job`, if any event of it was folded in.
    pub fn record(&self, job: &str) -> Result<Option<JobRecord>, warren::Error> {
        self.store.get(job).map_err(warren::Error::Setup)
    }

    /// Every record (see [`Store::each`]).
    pub fn each(&self, each: impl FnMut(&str, JobRecord)) -> Result<(), warren::Error> {
        self.store.each(each).map_err(warren::Error::Setup)
    }

    /// The records that changed since the last call, by job (none at the
    /// first: from then on they are kept).
    pub fn take_changed(&mut self) -> std::collections::BTreeMap<String, JobRecord> {
        self.changed.replace(Default::default()).unwrap_or_default()
    }

    /// Folds the events that arrive until a batch is full or nothing came
    /// before `until`; returns how many stream messages were read.
    pub async fn fold_some(&mut self, until: Instant) -> Result<usize, warren::Error> {
        let mut events = Vec::new();
        let mut last_tag = None;
        let mut read = 0;
        while read < BATCH {
            let wait = if read == 0 {
                until
            } else {
                // A batch started: take what is already there.
                Instant::now() + Duration::from_millis(20)
            };
            let delivery = match tokio::time::timeout_at(wait, self.consumer.next()).await {
                Err(_) => break,
                Ok(None) => {
                    return Err(warren::Error::Setup(
                        "the job stream's consumer was cancelled".into(),
                    ));
                }
                Ok(Some(delivery)) => {
                    delivery.map_err(|e| warren::Error::broker("read the job stream", e))?
                }
            };
            last_tag = Some(delivery.delivery_tag);
            read += 1;
            let offset = offset_of(&delivery.properties).unwrap_or(self.next);
            if offset < self.next {
                continue; // the stream starts a read at its chunk's start
            }
            self.next = offset + 1;
            if let Some((marker, seen)) = &mut self.marker {
                *seen |= delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str())
                    == Some(marker.as_str());
            }
            match Event::decode_all(&delivery.data) {
                Ok(batch) => events.extend(batch),
                Err(why) => warn!("job stream offset {offset}: {why}; skipped"),
            }
        }
        if let Some(tag) = last_tag {
            let changed = self
                .store
                .fold(&events, self.next)
                .map_err(warren::Error::Setup)?;
            if let Some(kept) = &mut self.changed {
                kept.extend(changed);
            }
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| warren::Error::broker("acknowledge job events", e))?;
        }
        Ok(read)
    }

    /// Syncs the store to disk and closes the connection.
    pub async fn close(self) {
        if let Err(error) = self.store.sync() {
            warn!("{error}; the next start reads some events again");
        }
        warren::connection::close(&self.connection, "done").await;
    }
}

/// The stream offset of a delivery (`x-stream-offset`).
fn offset_of(props: &lapin::BasicProperties) -> Option<u64> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}
