//! The cancelled jobs a worker knows of (DESIGN.md, *Jobs*: cancel). A
//! cancel is one message on the pipeline's cancel stream
//! ([`names::cancel_stream`], kept for `jobs.keep`); every session of a
//! tracked pipeline's worker reads it from its start, and starts consuming
//! its stages only once it has read up to a marker it wrote, so that a
//! worker started after a cancel still knows it. Later cancels reach the
//! reader as the broker pushes them (well within a second).
//!
//! [`Cancels`] is what the stages ask: a delivery of a cancelled job is
//! acknowledged without being handled, and a handling that runs when its
//! job is cancelled has its context cancelled.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    Connection, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    error::Error,
    jobs::{Event, What},
    message, names,
    publisher::Publisher,
};

/// How long a session waits to read the cancels the stream held at its
/// start before it gives up and starts again.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(60);

/// The cancelled jobs of a pipeline, and the handlings running for jobs.
#[derive(Debug)]
pub(crate) struct Cancels {
    keep_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Cancelled jobs, with when.
    jobs: HashMap<String, u64>,
    /// Handlings running, by job: a key and the context's token.
    running: HashMap<String, Vec<(u64, CancellationToken)>>,
    next: u64,
}

/// A handling's registration: its context is cancelled if its job is;
/// dropped when the handling ends.
pub(crate) struct Watch {
    cancels: Arc<Cancels>,
    job: String,
    key: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.cancels.state.lock().expect("cancels");
        if let Some(list) = state.running.get_mut(&self.job) {
            list.retain(|(key, _)| *key != self.key);
            if list.is_empty() {
                state.running.remove(&self.job);
            }
        }
    }
}

impl Cancels {
    /// Cancels remembered for `keep` (`jobs.keep`).
    pub fn new(keep: Duration) -> Cancels {
        Cancels {
            keep_ms: keep.as_millis() as u64,
            state: Mutex::default(),
        }
    }

    /// Whether `job` was cancelled.
    pub fn is_cancelled(&self, job: &str) -> bool {
        self.state.lock().expect("cancels").jobs.contains_key(job)
    }

    /// Notes that `job` was cancelled at `at_ms` (unless that is older than
    /// `jobs.keep`), and cancels its running handlings.
    pub fn cancel(&self, job: &str, at_ms: u64) {
        let now = message::epoch_ms();
        let mut state = self.state.lock().expect("cancels");
        state
            .jobs
            .retain(|_, at| now.saturating_sub(*at) <= self.keep_ms);
        if now.saturating_sub(at_ms) > self.keep_ms {
            return;
        }
        if state.jobs.insert(job.to_string(), at_ms).is_none() {
            info!(%job, "job cancelled: its messages are acknowledged without being handled");
        }
        for (_, token) in state.running.get(job).into_iter().flatten() {
            token.cancel();
        }
    }

    /// Registers a handling of `job` whose context stops with `token`; it
    /// is cancelled at once when the job already is.
    pub fn watch(self: &Arc<Self>, job: &str, token: CancellationToken) -> Watch {
        let mut state = self.state.lock().expect("cancels");
        if state.jobs.contains_key(job) {
            token.cancel();
        }
        state.next += 1;
        let key = state.next;
        state
            .running
            .entry(job.to_string())
            .or_default()
            .push((key, token));
        Watch {
            cancels: self.clone(),
            job: job.to_string(),
            key,
        }
    }
}

/// Starts reading `pipeline`'s cancel stream on `connection` (which never
/// publishes) and writes a marker to it through `publisher`: the reader
/// [`follow`] sends on its `caught_up` once it read that far.
pub(crate) async fn open(
    pipeline: &str,
    connection: &Connection,
    publisher: &Publisher,
) -> Result<(lapin::Channel, Consumer, String), Error> {
    let stream = names::cancel_stream(pipeline);
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open a channel for the cancel stream", e))?;
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
            stream.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(|e| Error::broker(format!("read the cancel stream {stream}"), e))?;
    let marker = format!("marker-{}", message::new_id());
    publisher
        .publish_confirmed(
            "",
            &stream,
            b"{}",
            message::new_properties(&marker, &marker),
        )
        .await?;
    Ok((channel, consumer, marker))
}

/// What [`follow`] reads on: the stream's name, the consuming connection
/// and the session's publisher (for markers).
pub(crate) struct Source {
    pub pipeline: String,
    pub connection: Arc<Connection>,
    pub publisher: Publisher,
}

/// Follows the cancel stream into `cancels` from `first` (what [`open`]
/// gave) until `stop`; sends on `caught_up` once the first marker was read.
/// A reader lost before that ends with why (the session cannot start); a
/// reader lost later opens again after a pause (doubling up to 15 s) and
/// reads the stream from its start again, while the stages go on: a cancel
/// is then late, never lost.
pub(crate) async fn follow(
    source: Source,
    first: (lapin::Channel, Consumer, String),
    cancels: Arc<Cancels>,
    caught_up: oneshot::Sender<()>,
    stop: CancellationToken,
) -> Option<String> {
    let mut caught_up = Some(caught_up);
    let mut current = Some(first);
    let mut pause = Duration::from_secs(1);
    loop {
        let (channel, consumer, marker) = match current.take() {
            Some(open) => open,
            None => {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(15));
                match open(&source.pipeline, &source.connection, &source.publisher).await {
                    Ok(open) => open,
                    Err(error) => {
                        warn!(%error, "the cancel stream cannot be read; trying again");
                        continue;
                    }
                }
            }
        };
        let why = read(channel, consumer, &marker, &cancels, &mut caught_up, &stop).await?;
        if caught_up.is_some() {
            return Some(why);
        }
        warn!(reason = %why, "lost the cancel stream; reading it again");
    }
}

/// Reads until `stop` (`None`) or a loss (why).
async fn read(
    channel: lapin::Channel,
    mut consumer: Consumer,
    marker: &str,
    cancels: &Cancels,
    caught_up: &mut Option<oneshot::Sender<()>>,
    stop: &CancellationToken,
) -> Option<String> {
    let _channel = channel;
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return None,
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            None => return Some("the cancel stream's consumer ended".into()),
            Some(Err(error)) => return Some(format!("reading the cancel stream: {error}")),
            Some(Ok(delivery)) => delivery,
        };
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str());
        if id == Some(marker)
            && let Some(caught_up) = caught_up.take()
        {
            let _ = caught_up.send(());
        }
        if let Ok(event) = Event::decode(&delivery.data)
            && event.what == What::Cancelled
        {
            cancels.cancel(&event.job, event.at_ms);
        }
        if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
            return Some(format!("acknowledging on the cancel stream: {error}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_stops_the_running_handlings_of_its_job_and_later_ones() {
        let cancels = Arc::new(Cancels::new(Duration::from_secs(3600)));
        let mine = CancellationToken::new();
        let other = CancellationToken::new();
        let _a = cancels.watch("j", mine.clone());
        let _b = cancels.watch("k", other.clone());
        assert!(!cancels.is_cancelled("j"));
        cancels.cancel("j", message::epoch_ms());
        assert!(cancels.is_cancelled("j") && !cancels.is_cancelled("k"));
        assert!(mine.is_cancelled() && !other.is_cancelled());
        let late = CancellationToken::new();
        let watch = cancels.watch("j", late.clone());
        assert!(late.is_cancelled(), "a handling started after the cancel");
        drop(watch);
        drop(_a);
        assert!(!cancels.state.lock().unwrap().running.contains_key("j"));
        // A cancel older than jobs.keep is not remembered.
        cancels.cancel("old", 0);
        assert!(!cancels.is_cancelled("old"));
    }
}
