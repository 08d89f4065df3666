//! Reads a tracked pipeline's job stream into this box's [`Store`]: from
//! the offset the store has reached, in batches (one transaction each),
//! acknowledging as it goes (a stream gives a consumer more only as it
//! acknowledges). Any box reading the same stream folds the same events in
//! the same order, so every box answers the same for every job.
//!
//! Each time it attaches, it first makes sure the stream is the one the
//! store read ([`attach`](super::attach)): a stream deleted and declared
//! again is read from its start, and a gap the stream's retention left is
//! said, with the jobs it may hide. A lost connection is for the owner to
//! mend with [`Tracker::reconnect`].

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicQosOptions},
    types::AMQPValue,
};
use tokio::time::Instant;
use tracing::warn;
use warren::{
    Pipeline,
    broker::BrokerUrls,
    jobs::{Event, JobRecord, JobView},
    names,
    publisher::Publisher,
    schedule::Tick,
};

use super::{
    attach::{self, offset_of, print_of},
    store::Store,
};

/// Events folded per transaction at most.
const BATCH: usize = 1000;

/// Longest wait for the first event of a batch.
const QUIET: Duration = Duration::from_millis(300);

/// The id prefix of the keeper's stream messages saying it leads (see
/// [`Tracker::keeper_alive_ms`]).
pub const KEEPER_ALIVE: &str = "keeper-alive-";

/// A connection reading the stream.
struct Link {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

/// A consumer of the job stream and the store it folds into.
pub struct Tracker {
    store: std::sync::Arc<Store>,
    keep: Duration,
    urls: BrokerUrls,
    pipeline: String,
    /// The job stream's name.
    stream: String,
    link: Option<Link>,
    next: u64,
    /// The records that changed since [`Tracker::take_changed`], as they
    /// are now, once it was first called (`warren job` does not keep them).
    changed: Option<std::collections::BTreeMap<String, JobRecord>>,
    /// The id of the stream message [`Tracker::catch_up`] waits for, and
    /// whether it was read.
    marker: Option<(String, bool)>,
    /// The newest time a keeper said it leads, as read from the stream.
    keeper_alive_ms: Option<u64>,
}

impl Tracker {
    /// Opens the store at `path` and starts reading the stream of
    /// `pipeline` where the store left off.
    pub async fn open(pipeline: &Pipeline, store: Store) -> Result<Tracker, warren::Error> {
        let mut tracker = Tracker::detached(pipeline, store);
        tracker.reconnect().await?;
        Ok(tracker)
    }

    /// A tracker of `pipeline`'s stream into `store`, not reading yet:
    /// [`Tracker::reconnect`] attaches it.
    pub fn detached(pipeline: &Pipeline, store: Store) -> Tracker {
        Tracker {
            store: std::sync::Arc::new(store),
            keep: pipeline.jobs.keep,
            urls: pipeline.broker.urls.clone(),
            pipeline: pipeline.name.clone(),
            stream: names::job_stream(&pipeline.name),
            link: None,
            next: 0,
            changed: None,
            marker: None,
            keeper_alive_ms: None,
        }
    }

    /// Whether it is attached to the stream.
    pub fn attached(&self) -> bool {
        self.link.is_some()
    }

    /// Closes the connection, if any, and attaches again where the store
    /// left off, once the stream is known to be the one the store read.
    pub async fn reconnect(&mut self) -> Result<(), warren::Error> {
        self.disconnect().await;
        self.marker = None;
        let connection =
            warren::connection::open(&self.urls, &format!("warren job tracker {}", self.pipeline))
                .await?;
        match self.attach(&connection).await {
            Ok((channel, consumer)) => {
                self.link = Some(Link {
                    connection,
                    channel,
                    consumer,
                });
                Ok(())
            }
            Err(error) => {
                warren::connection::close(&connection, "could not read the job stream").await;
                Err(error)
            }
        }
    }

    /// Closes the connection (the store stays).
    pub async fn disconnect(&mut self) {
        if let Some(link) = self.link.take() {
            warren::connection::close(&link.connection, "done").await;
        }
    }

    /// Decides where to read ([`attach::start_offset`]) and starts
    /// consuming there.
    async fn attach(
        &mut self,
        connection: &Connection,
    ) -> Result<(Channel, Consumer), warren::Error> {
        self.next = attach::start_offset(connection, &self.stream, &self.store).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| warren::Error::broker("open a channel", e))?;
        channel
            .basic_qos(BATCH as u16, BasicQosOptions::default())
            .await
            .map_err(|e| warren::Error::broker("set the prefetch", e))?;
        let consumer = attach::consume(
            &channel,
            &self.stream,
            AMQPValue::LongLongInt(self.next as i64),
        )
        .await?;
        Ok((channel, consumer))
    }

    /// Folds everything the stream held when this was called, or until
    /// `deadline`: it writes a marker to the stream and reads up to it (a
    /// pause in the stream's deliveries, on a busy broker, is not its end).
    pub async fn catch_up(&mut self, deadline: Instant) -> Result<(), warren::Error> {
        while !self.catch_up_until(deadline).await? && Instant::now() < deadline {}
        self.marker = None;
        Ok(())
    }

    /// One stretch of [`Tracker::catch_up`], until `until`: writes the
    /// marker unless one is awaited already; true once it was read (the
    /// next call writes another).
    pub async fn catch_up_until(&mut self, until: Instant) -> Result<bool, warren::Error> {
        if self.marker.is_none() {
            let marker = format!("catch-up-{}", warren::message::new_id());
            self.write_marker(&marker).await?;
            self.marker = Some((marker, false));
        }
        while self.marker.as_ref().is_some_and(|(_, seen)| !seen) && Instant::now() < until {
            self.fold_some(until.min(Instant::now() + QUIET)).await?;
        }
        if self.marker.as_ref().is_some_and(|(_, seen)| *seen) {
            self.marker = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes a message with id `id` and no events to the stream.
    pub async fn write_marker(&self, id: &str) -> Result<(), warren::Error> {
        let link = self.link()?;
        let publisher = Publisher::open(&link.connection).await?;
        let props = warren::message::new_properties(id, id);
        let written = publisher
            .publish_confirmed("", &self.stream, b"[]", props)
            .await;
        publisher.close().await;
        written
    }

    fn link(&self) -> Result<&Link, warren::Error> {
        self.link.as_ref().ok_or_else(|| {
            warren::Error::Setup(format!("not reading the job stream {}", self.stream))
        })
    }

    /// Forgets records older than `jobs.keep` (at most once an hour).
    pub async fn prune(&self) -> Result<usize, warren::Error> {
        let keep_ms = self.keep.as_millis() as u64;
        on_store(&self.store, move |store| {
            store.prune(warren::message::epoch_ms(), keep_ms)
        })
        .await
    }

    /// The job as this box knows it now.
    pub fn view(&self, job: &str) -> Result<JobView, warren::Error> {
        let now = warren::message::epoch_ms();
        let stale = self.store.stale(job).map_err(warren::Error::Setup)?;
        if stale {
            warn!(%job, "this store has a gap (events the job stream's retention dropped before it read them) that may hold events of job {job}: it cannot answer for job {job}; what follows is what it has");
        }
        Ok(match self.store.get(job).map_err(warren::Error::Setup)? {
            Some(record) => record.view(job, now, self.keep.as_millis() as u64),
            None => {
                if let Some(gap) = self.store.gap().map_err(warren::Error::Setup)? {
                    warn!(%job, "this store has a gap (job stream offsets {}..{}, dropped by its retention before they were read): a job whose events all fell in it is unknown here", gap.start, gap.end);
                }
                JobView::unknown(job)
            }
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

    /// Stops keeping the records that change (see
    /// [`Tracker::take_changed`]).
    pub fn forget_changed(&mut self) {
        self.changed = None;
    }

    /// When a keeper last said on the stream that it leads (ms since the
    /// Unix epoch, its clock), as far as this tracker read.
    pub fn keeper_alive_ms(&self) -> Option<u64> {
        self.keeper_alive_ms
    }

    /// Folds the events that arrive until a batch is full or nothing came
    /// before `until`; returns how many stream messages were read. Not
    /// attached, or the connection lost: an error (see
    /// [`Tracker::reconnect`]).
    pub async fn fold_some(&mut self, until: Instant) -> Result<usize, warren::Error> {
        let result = self.fold_batch(until).await;
        if result.is_err() {
            self.disconnect().await;
        }
        result
    }

    async fn fold_batch(&mut self, until: Instant) -> Result<usize, warren::Error> {
        let Some(link) = self.link.as_mut() else {
            return Err(warren::Error::Setup(format!(
                "not reading the job stream {}",
                self.stream
            )));
        };
        let mut events = Vec::new();
        let mut ticks = Vec::new();
        let mut last_tag = None;
        let mut last_print = None;
        let mut read = 0;
        while read < BATCH {
            let wait = if read == 0 {
                until
            } else {
                // A batch started: take what is already there.
                Instant::now() + Duration::from_millis(20)
            };
            let delivery = match tokio::time::timeout_at(wait, link.consumer.next()).await {
                Err(_) => break,
                Ok(None) => {
                    return Err(warren::Error::Setup(format!(
                        "the job stream {}'s consumer was cancelled (was the stream deleted?)",
                        self.stream
                    )));
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
            last_print = Some(print_of(&delivery));
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str());
            if let Some((marker, seen)) = &mut self.marker {
                *seen |= id == Some(marker.as_str());
            }
            if let Some(ms) = id
                .and_then(|id| id.strip_prefix(KEEPER_ALIVE))
                .and_then(|ms| ms.parse::<u64>().ok())
            {
                self.keeper_alive_ms = Some(self.keeper_alive_ms.unwrap_or(0).max(ms));
            }
            if let Some(tick) = id.and_then(Tick::from_record_id) {
                ticks.push(tick);
            }
            match Event::decode_all(&delivery.data) {
                Ok(batch) => events.extend(batch),
                Err(why) => warn!("job stream offset {offset}: {why}; skipped"),
            }
        }
        if let Some(tag) = last_tag {
            if let Some(print) = last_print {
                // Before the offset moves past them (a crash in between
                // reads them again, which changes nothing).
                let next = self.next;
                let changed = on_store(&self.store, move |store| {
                    store.note_ticks(&ticks)?;
                    store.fold(&events, next, print)
                })
                .await?;
                if let Some(kept) = &mut self.changed {
                    kept.extend(changed);
                }
            }
            link.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| warren::Error::broker("acknowledge job events", e))?;
        }
        Ok(read)
    }

    /// Syncs the store to disk and closes the connection.
    pub async fn close(mut self) {
        if let Err(error) = on_store(&self.store, |store| store.sync()).await {
            warn!("{error}; the next start reads some events again");
        }
        self.disconnect().await;
    }
}

/// Runs `work` on the store on a thread of its own. A write waits on
/// the disk (a sync every second, seconds under heavy I/O), and
/// `warren` runs on one thread, the one that also sends the AMQP
/// heartbeats: a write there for two heartbeats' time gets every
/// connection of the process closed by the broker.
async fn on_store<T: Send + 'static>(
    store: &std::sync::Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
) -> Result<T, warren::Error> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| warren::Error::Setup(format!("the job store's writer: {e}")))?
        .map_err(warren::Error::Setup)
}
