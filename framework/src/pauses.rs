//! Paused stages (DESIGN.md, *Stage control*). The state lives on the
//! broker alone, in the pipeline's pause stream ([`names::pause_stream`], a
//! RabbitMQ stream kept without an age limit): one [`Change`] per `warren
//! pause` or `resume` (written by [`crate::Producer::set_paused`]), the
//! last change of a stage wins. Every worker reads
//! it from its start before it consumes and then follows it live
//! (`control_stream.rs`), so a worker or supervisor started while a stage
//! is paused starts paused; `warren status` reads it once, `warren serve`
//! follows it.

use std::{collections::BTreeSet, sync::Arc};

use lapin::{Connection, options::QueueDeclareOptions, types::FieldTable};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    broker::BrokerUrls,
    connection,
    control_stream::{self, Apply, Source},
    error::Error,
    names,
};

/// One pause or resume of a stage, as written on the pause stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The stage.
    pub stage: String,
    /// Paused (true) or resumed (false).
    pub paused: bool,
    /// When (milliseconds since the epoch).
    pub at_ms: u64,
    /// Who asked: the command or route, and the host.
    #[serde(default)]
    pub by: String,
}

impl Change {
    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a change is JSON")
    }

    /// A change read back; `None` for anything else (markers).
    pub fn decode(body: &[u8]) -> Option<Change> {
        serde_json::from_slice(body).ok()
    }
}

/// The paused stages of a pipeline as one reader folded them so far;
/// clones share the state. Readers wait for changes with
/// [`Pauses::subscribe`].
#[derive(Clone, Debug)]
pub struct Pauses {
    state: Arc<watch::Sender<BTreeSet<String>>>,
}

impl Default for Pauses {
    fn default() -> Self {
        Pauses::new()
    }
}

impl Pauses {
    /// Nothing paused (nothing read yet).
    pub fn new() -> Pauses {
        Pauses {
            state: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }

    /// Whether `stage` is paused.
    pub fn is_paused(&self, stage: &str) -> bool {
        self.state.borrow().contains(stage)
    }

    /// The paused stages.
    pub fn paused(&self) -> BTreeSet<String> {
        self.state.borrow().clone()
    }

    /// A receiver woken by every change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.state.subscribe()
    }

    /// Folds one change in.
    pub fn apply(&self, change: &Change) {
        self.state.send_if_modified(|paused| {
            if change.paused {
                paused.insert(change.stage.clone())
            } else {
                paused.remove(&change.stage)
            }
        });
    }

    /// What a message of the stream does to this state.
    pub(crate) fn applier(&self) -> Apply {
        let pauses = self.clone();
        Arc::new(move |body: &[u8]| {
            if let Some(change) = Change::decode(body) {
                pauses.apply(&change);
            }
        })
    }
}

/// Declares `pipeline`'s pause stream on `connection` (safe to repeat).
pub async fn declare(connection: &Connection, pipeline: &str) -> Result<(), Error> {
    let stream = names::pause_stream(pipeline);
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open a channel", e))?;
    channel
        .queue_declare(
            stream.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            stream_args(),
        )
        .await
        .map_err(|e| Error::broker(format!("declare the pause stream {stream}"), e))?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// The stream's declaration arguments, as the topology states them
/// (`Role::PauseStream`).
fn stream_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("stream".into()),
    );
    args
}

/// Reads `pipeline`'s paused stages once, on a connection of its own:
/// nothing is paused when the stream does not exist.
pub async fn read(urls: &BrokerUrls, pipeline: &str) -> Result<BTreeSet<String>, Error> {
    let connection = Arc::new(connection::open(urls, &format!("warren pauses {pipeline}")).await?);
    let read = read_on(&connection, pipeline).await;
    connection::close(&connection, "read the pauses").await;
    read
}

async fn read_on(connection: &Arc<Connection>, pipeline: &str) -> Result<BTreeSet<String>, Error> {
    let stream = names::pause_stream(pipeline);
    let probe = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open a channel", e))?;
    let exists = probe
        .queue_declare(
            stream.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    if exists {
        let _ = probe.close(200, "looked".into()).await;
    } else {
        return Ok(BTreeSet::new());
    }
    let pauses = Pauses::new();
    let connection = connection.clone();
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let source = Source { stream, connection };
    let readers = vec![(source, pauses.applier())];
    let read = control_stream::start(readers, &mut tasks, stop.clone()).await;
    stop.cancel();
    tasks.abort_all();
    read.map(|()| pauses.paused())
}

/// Keeps `pauses` following `pipeline`'s pause stream on a connection of
/// its own, reconnecting after any loss, until `stop` (for `warren
/// serve`).
pub async fn follow(urls: BrokerUrls, pipeline: String, pauses: Pauses, stop: CancellationToken) {
    let mut waits = control_stream::pauses();
    loop {
        let why = follow_once(&urls, &pipeline, &pauses, &stop).await;
        if stop.is_cancelled()
            || !control_stream::again_after(&mut waits, "the pause stream is", &why, &stop).await
        {
            return;
        }
    }
}

async fn follow_once(
    urls: &BrokerUrls,
    pipeline: &str,
    pauses: &Pauses,
    stop: &CancellationToken,
) -> String {
    let connection = match connection::open(urls, &format!("warren pauses {pipeline}")).await {
        Ok(connection) => Arc::new(connection),
        Err(error) => return error.to_string(),
    };
    let run = async {
        declare(&connection, pipeline).await?;
        let mut tasks = tokio::task::JoinSet::new();
        let source = Source {
            stream: names::pause_stream(pipeline),
            connection: connection.clone(),
        };
        let readers = vec![(source, pauses.applier())];
        control_stream::start(readers, &mut tasks, stop.clone()).await?;
        Ok::<_, Error>(tasks.join_next().await)
    };
    let why = match run.await {
        Err(error) => error.to_string(),
        Ok(Some(Ok(Some(why)))) => why,
        Ok(_) => "the reader stopped".to_string(),
    };
    connection::close(&connection, "pause stream follower").await;
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(stage: &str, paused: bool) -> Vec<u8> {
        Change {
            stage: stage.into(),
            paused,
            at_ms: 1,
            by: "test".into(),
        }
        .encode()
    }

    #[test]
    fn the_last_change_of_each_stage_wins_and_markers_change_nothing() {
        let pauses = Pauses::new();
        let apply = pauses.applier();
        let mut changes = pauses.subscribe();
        apply(&change("a", true));
        apply(&change("b", true));
        apply(b"{}");
        apply(&change("a", false));
        apply(&change("b", true));
        assert!(!pauses.is_paused("a") && pauses.is_paused("b"));
        assert_eq!(pauses.paused(), ["b".to_string()].into());
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        apply(&change("b", true));
        apply(&change("c", false));
        assert!(
            !changes.has_changed().unwrap(),
            "a change that changes nothing wakes nobody"
        );
    }
}
