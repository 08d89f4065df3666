//! The job keeper of a tracked pipeline: of all the supervisors of the
//! pipeline, on every box, one at a time fires the completion callbacks and
//! releases the gather stages ([`duties`](super::duties)), so that each
//! happens once (more than once only after a crash).
//!
//! The election is the broker's: the keeper queue (`{pipeline}.jobs.keeper`,
//! a quorum queue with a single active consumer) holds one token message.
//! Every supervisor consumes it; the broker delivers the token to one of
//! them, which keeps it unacknowledged while it leads. When that supervisor
//! stops or its connection goes, the broker requeues the token and gives it
//! to the next consumer. The token is handed back and taken again every
//! minute, so that the broker's delivery-acknowledgement timeout never
//! closes the leader's channel.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::{
    Channel, Consumer,
    options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren::{Pipeline, Topology, backoff::Backoff, names, publisher::Publisher};

use super::{duties::Duties, store::Store, tracker::Tracker};
use crate::supervise::status::SupervisorStatus;

/// How often the leader hands its token back and takes it again.
const RECYCLE: Duration = Duration::from_secs(60);

/// Longest time a fold waits for events before the duties come round.
const TURN: Duration = Duration::from_millis(200);

/// What `warren status` shows of the keeper.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// This supervisor holds the token.
    pub leader: bool,
    /// Callbacks answered with a 2xx since it took over.
    pub callbacks_delivered: u64,
    /// Jobs whose callback failed and waits for another attempt.
    pub callbacks_failing: u64,
    /// The last callback failure: the job and why.
    pub last_failure: Option<String>,
    /// Gather stages released since it took over.
    pub gathers_released: u64,
}

/// Runs for the supervisor until `stop`: waits for the token, leads while
/// it holds it, and starts again after a lost connection.
pub async fn run(
    pipeline: Pipeline,
    status: Arc<Mutex<SupervisorStatus>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    while !stop.is_cancelled() {
        let result = elect_and_lead(&pipeline, &status, &stop).await;
        status.lock().expect("status").keeper = None;
        match result {
            Ok(()) => return,
            Err(error) => warn!(pipeline = %pipeline.name, %error, "job keeper: starting again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One term: connects, waits for the token, leads until `stop` (`Ok`) or
/// until the connection or the token is lost (`Err`).
async fn elect_and_lead(
    pipeline: &Pipeline,
    status: &Arc<Mutex<SupervisorStatus>>,
    stop: &CancellationToken,
) -> Result<(), warren::Error> {
    let connection = warren::connection::open(
        &pipeline.broker.urls,
        &format!("warren job keeper {}", pipeline.name),
    )
    .await?;
    let ran = async {
        Topology::plan(pipeline).declare(&connection).await?;
        let publisher = Publisher::open(&connection).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| warren::Error::broker("open a channel", e))?;
        channel
            .basic_qos(8, BasicQosOptions::default())
            .await
            .map_err(|e| warren::Error::broker("set the prefetch", e))?;
        let mut tokens = consume_tokens(pipeline, &channel, &publisher).await?;
        let mut held = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            first = tokens.next() => vec![token_tag(first)?],
        };
        info!(pipeline = %pipeline.name, "this supervisor is now the job keeper (callbacks, gathers)");
        status.lock().expect("status").keeper = Some(KeeperStatus {
            leader: true,
            ..KeeperStatus::default()
        });
        let store = open_store(pipeline, stop).await?;
        let Some(store) = store else { return Ok(()) };
        let mut tracker = Tracker::open(pipeline, store).await?;
        // Everything the last keeper wrote is read before looking at any
        // job, so that nothing done is done again.
        tracker
            .catch_up(Instant::now() + Duration::from_secs(24 * 3600))
            .await?;
        tracker.take_changed();
        let mut duties = Duties::new(pipeline, publisher);
        tracker.each(|job, record| duties.consider(job, &record))?;
        let mut recycled = Instant::now();
        while !stop.is_cancelled() {
            tracker.fold_some(Instant::now() + TURN).await?;
            for (job, record) in tracker.take_changed() {
                duties.consider(&job, &record);
            }
            tracker.prune()?;
            duties.act().await?;
            status.lock().expect("status").keeper = Some(duties.status());
            while let Some(more) = tokens.next().now_or_never() {
                held.push(token_tag(more)?);
            }
            if recycled.elapsed() >= RECYCLE {
                held = recycle(&channel, &mut tokens, held).await?;
                recycled = Instant::now();
            }
        }
        tracker.close().await;
        Ok(())
    }
    .await;
    warren::connection::close(&connection, "job keeper done").await;
    ran
}

/// Consumes the keeper queue, after putting the token in when the queue
/// is empty and nobody consumes it (two supervisors starting together may
/// both do: the active consumer then holds two tokens, which is the same).
async fn consume_tokens(
    pipeline: &Pipeline,
    channel: &Channel,
    publisher: &Publisher,
) -> Result<Consumer, warren::Error> {
    let queue = names::keeper_queue(&pipeline.name);
    let state = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| warren::Error::broker(format!("look at queue {queue}"), e))?;
    if state.message_count() == 0 && state.consumer_count() == 0 {
        let props = warren::message::new_properties("keeper-token", "keeper-token");
        publisher
            .publish_confirmed("", &queue, br#"{"token":"job keeper"}"#, props)
            .await?;
    }
    channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| warren::Error::broker(format!("consume queue {queue}"), e))
}

/// The delivery tag of a token, or the loss of the consumer as an error.
fn token_tag(
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

/// Hands the tokens back and takes them again (the single active consumer
/// stays this one), resetting the broker's acknowledgement timeout.
async fn recycle(
    channel: &Channel,
    tokens: &mut Consumer,
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
    let mut again = Vec::new();
    while again.len() < held.len() {
        match tokio::time::timeout(Duration::from_secs(10), tokens.next()).await {
            Ok(delivery) => again.push(token_tag(delivery)?),
            Err(_) => break,
        }
    }
    if again.is_empty() {
        return Err(warren::Error::Setup(
            "the keeper token did not come back; another supervisor leads now".into(),
        ));
    }
    Ok(again)
}

/// Opens the keeper's store, waiting while another process of this box
/// holds it; `None` when `stop` came first.
async fn open_store(
    pipeline: &Pipeline,
    stop: &CancellationToken,
) -> Result<Option<Store>, warren::Error> {
    let path = super::store::path(&pipeline.name, "keeper");
    loop {
        if let Some(store) = Store::open(&path).map_err(warren::Error::Setup)? {
            return Ok(Some(store));
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
