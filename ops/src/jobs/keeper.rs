//! The job keeper of a tracked pipeline: of all the supervisors of the
//! pipeline, on every box, one at a time fires the completion callbacks and
//! releases the gather stages ([`duties`](super::duties)), and fires the
//! schedules' ticks ([`schedules`](super::schedules)), so that each
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
//!
//! Every token goes to the single active consumer, so a second token never
//! makes a second keeper: the leader removes any token beyond its own. That
//! makes minting a token safe whenever it may have vanished (RabbitMQ 4's
//! quorum queues drop a message returned too often): the leader mints one
//! when its token does not come back, and a follower when the queue is
//! empty and no keeper said on the job stream that it leads for
//! [`LOST`] ([`token_lost`]; the token's handling is [`token`](super::token)).
//!
//! While waiting, a supervisor keeps its keeper store folded, so that it
//! takes over quickly; a keeper that still needs long to catch up hands
//! the token back and takes it again meanwhile.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::{
    Channel, Consumer,
    options::{BasicAckOptions, BasicQosOptions},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren::{
    Pipeline, Topology, backoff::Backoff, message::epoch_ms, names, publisher::Publisher,
};

use super::{
    duties::Duties,
    schedules::Schedules,
    store::Store,
    token::{LOST, consume_tokens, look, mint, recycle, token_lost, token_tag},
    tracker::{KEEPER_ALIVE, Tracker},
};
use crate::status::{KeeperStatus, SupervisorStatus};

/// How often the leader hands its token back and takes it again.
const RECYCLE: Duration = Duration::from_secs(60);

/// Longest time a fold waits for events before the duties come round.
const TURN: Duration = Duration::from_millis(200);

/// How often the leader says on the job stream that it leads.
const ALIVE: Duration = Duration::from_secs(15);

/// How often a follower looks at the keeper queue.
const LOOK: Duration = Duration::from_secs(5);

/// Runs for the supervisor until `stop`: folds the stream into its keeper
/// store, leads while it holds the token, and starts again after a lost
/// connection.
pub async fn run(
    pipeline: Pipeline,
    status: Arc<Mutex<SupervisorStatus>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let store = loop {
        match open_store(&pipeline, &stop).await {
            Ok(Some(store)) => break store,
            Ok(None) => return,
            Err(error) => {
                warn!(pipeline = %pipeline.name, %error, "job keeper: cannot open its store")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    };
    let mut tracker = Tracker::detached(&pipeline, store);
    while !stop.is_cancelled() {
        let result = term(&pipeline, &status, &stop, &mut tracker).await;
        status.lock().expect("status").keeper = None;
        match result {
            Ok(()) => break,
            Err(error) => warn!(pipeline = %pipeline.name, %error, "job keeper: starting again"),
        }
        tracker.disconnect().await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    tracker.close().await;
}

/// One term: connects, follows the stream until the token comes, leads
/// until `stop` (`Ok`) or until the connection or the token is lost
/// (`Err`). The POSTs on their way end with it.
async fn term(
    pipeline: &Pipeline,
    status: &Arc<Mutex<SupervisorStatus>>,
    stop: &CancellationToken,
    tracker: &mut Tracker,
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
        if !tracker.attached() {
            tracker.reconnect().await?;
        }
        let queue = names::keeper_queue(&pipeline.name);
        let mut tokens = consume_tokens(&queue, &channel, &publisher).await?;
        let Some(first) = follow(pipeline, stop, tracker, &channel, &publisher, &queue, &mut tokens).await? else {
            return Ok(());
        };
        let mut held = vec![first];
        info!(pipeline = %pipeline.name, "this supervisor is now the job keeper (callbacks, gathers)");
        status.lock().expect("status").keeper = Some(KeeperStatus {
            leader: true,
            ..KeeperStatus::default()
        });
        let stream = names::job_stream(&pipeline.name);
        let mut said: Option<Instant> = None;
        let mut recycled = Instant::now();
        // Everything the last keeper wrote is read before looking at any
        // job, so that nothing done is done again. A long read hands the
        // token back and takes it again, as leading does.
        loop {
            say_alive(&publisher, &stream, &mut said).await?;
            if tracker.catch_up_until(Instant::now() + ALIVE).await? {
                break;
            }
            if stop.is_cancelled() {
                return Ok(());
            }
            if recycled.elapsed() >= RECYCLE {
                info!(pipeline = %pipeline.name, "job keeper: still reading the job stream; handing the token back and taking it again meanwhile");
                held = recycle(&channel, &mut tokens, &publisher, &queue, held).await?;
                recycled = Instant::now();
            }
        }
        tracker.take_changed();
        let mut duties = Duties::new(pipeline, publisher.clone());
        tracker.each(|job, record| duties.consider(job, &record))?;
        let mut schedules = Schedules::new(pipeline, publisher.clone(), &tracker.store())?;
        while !stop.is_cancelled() {
            say_alive(&publisher, &stream, &mut said).await?;
            tracker.fold_some(Instant::now() + TURN).await?;
            for (job, record) in tracker.take_changed() {
                duties.consider(&job, &record);
            }
            tracker.prune().await?;
            duties.act(&connection).await?;
            schedules.act().await?;
            status.lock().expect("status").keeper = Some(KeeperStatus {
                ticks_fired: schedules.fired().clone(),
                ..duties.status()
            });
            while let Some(more) = tokens.next().now_or_never() {
                // A token minted while this one led: one is enough.
                let surplus = token_tag(more)?;
                channel
                    .basic_ack(surplus, BasicAckOptions::default())
                    .await
                    .map_err(|e| warren::Error::broker("remove a second keeper token", e))?;
            }
            if recycled.elapsed() >= RECYCLE {
                // What the POSTs on their way got is written before the
                // token could go to another supervisor.
                duties.finish_calls().await?;
                held = recycle(&channel, &mut tokens, &publisher, &queue, held).await?;
                recycled = Instant::now();
            }
        }
        // Stopping: the answers of the POSTs on their way are written.
        let _ = tokio::time::timeout(Duration::from_secs(15), duties.finish_calls()).await;
        Ok(())
    }
    .await;
    warren::connection::close(&connection, "job keeper done").await;
    ran
}

/// Says on the job stream that a keeper leads, at most every [`ALIVE`]
/// (followers read it: see [`token_lost`]).
async fn say_alive(
    publisher: &Publisher,
    stream: &str,
    said: &mut Option<Instant>,
) -> Result<(), warren::Error> {
    if said.is_some_and(|at| at.elapsed() < ALIVE) {
        return Ok(());
    }
    let id = format!("{KEEPER_ALIVE}{}", epoch_ms());
    let props = warren::message::new_properties(&id, &id);
    publisher
        .publish_confirmed("", stream, b"[]", props)
        .await?;
    *said = Some(Instant::now());
    Ok(())
}

/// Folds the stream into the store until a token comes (its tag), or
/// `stop` (`None`); mints a token when it vanished ([`token_lost`]).
async fn follow(
    pipeline: &Pipeline,
    stop: &CancellationToken,
    tracker: &mut Tracker,
    channel: &Channel,
    publisher: &Publisher,
    queue: &str,
    tokens: &mut Consumer,
) -> Result<Option<u64>, warren::Error> {
    tracker.forget_changed();
    let mut watching_since = epoch_ms();
    let mut looked = Instant::now();
    loop {
        if stop.is_cancelled() {
            return Ok(None);
        }
        if let Some(token) = tokens.next().now_or_never() {
            return token_tag(token).map(Some);
        }
        tracker.fold_some(Instant::now() + TURN).await?;
        tracker.prune().await?;
        if looked.elapsed() >= LOOK {
            looked = Instant::now();
            let (ready, _) = look(channel, queue).await?;
            if token_lost(ready, tracker.keeper_alive_ms(), watching_since, epoch_ms()) {
                warn!(pipeline = %pipeline.name, "no job keeper said it leads for {}s and the keeper queue holds no token: minting one", LOST.as_secs());
                mint(publisher, queue).await?;
                watching_since = epoch_ms();
            }
        }
    }
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
