//! Restart requests (DESIGN.md, *Stage control*: `warren restart FILE
//! [STAGE]`). A request is one more kind of record on the pipeline's pause
//! stream ([`names::pause_stream`]), `{"restart": {...}}` with an id of its
//! own; the pause readers of every worker skip it (it is no pause
//! [`Change`](crate::pauses::Change)). Every supervisor follows the stream
//! ([`follow`]) and rolls the named stage's workers (all its stages without
//! one) once per request id:
//!
//! - what the stream held when the supervisor started is not replayed (a
//!   supervisor that starts has fresh workers anyway): it reads up to its
//!   marker only to learn those ids;
//! - after losing the stream it reads it again from its start and acts on
//!   the requests it had not seen (written while it was away): late, never
//!   lost, never twice.

use std::{collections::HashSet, sync::Arc};

use futures_util::StreamExt;
use lapin::{Connection, options::BasicAckOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    broker::BrokerUrls, connection, control_stream, error::Error, names, pauses,
    publisher::Publisher,
};

/// One `warren restart`, as written on the pause stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique: each supervisor acts on it once.
    pub id: String,
    /// The stage; every stage when `None`.
    #[serde(default)]
    pub stage: Option<String>,
    /// When (milliseconds since the epoch).
    pub at_ms: u64,
    /// Who asked: the command and the host.
    #[serde(default)]
    pub by: String,
}

#[derive(Serialize, Deserialize)]
struct Record {
    restart: Request,
}

impl Request {
    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Record {
            restart: self.clone(),
        })
        .expect("a request is JSON")
    }

    /// A request read back; `None` for anything else (pauses, markers).
    pub fn decode(body: &[u8]) -> Option<Request> {
        serde_json::from_slice::<Record>(body)
            .ok()
            .map(|r| r.restart)
    }

    /// Whether it asks to restart `stage`.
    pub fn covers(&self, stage: &str) -> bool {
        self.stage.as_deref().is_none_or(|s| s == stage)
    }
}

/// Which requests a follower acts on (pure): those read after its first
/// catch-up, each id once.
#[derive(Debug, Default)]
pub struct Seen {
    ids: HashSet<String>,
    caught_up: bool,
}

impl Seen {
    /// A request was read: true when the follower acts on it.
    pub fn read(&mut self, request: &Request) -> bool {
        self.ids.insert(request.id.clone()) && self.caught_up
    }

    /// The follower read a marker of its own: what follows is new.
    /// Returns true the first time.
    pub fn caught_up(&mut self) -> bool {
        !std::mem::replace(&mut self.caught_up, true)
    }
}

/// Sends every new restart request of `pipeline` on `requests` until
/// `stop`, reading the pause stream on a connection of its own and
/// reconnecting after any loss (a supervisor's follower).
pub async fn follow(
    urls: BrokerUrls,
    pipeline: String,
    requests: mpsc::UnboundedSender<Request>,
    stop: CancellationToken,
) {
    let mut seen = Seen::default();
    let mut waits = control_stream::pauses();
    let what = "restart requests (`warren restart`) are";
    loop {
        let why = follow_once(&urls, &pipeline, &mut seen, &requests, &stop).await;
        if stop.is_cancelled()
            || requests.is_closed()
            || !control_stream::again_after(&mut waits, what, &why, &stop).await
        {
            return;
        }
    }
}

async fn follow_once(
    urls: &BrokerUrls,
    pipeline: &str,
    seen: &mut Seen,
    requests: &mpsc::UnboundedSender<Request>,
    stop: &CancellationToken,
) -> String {
    let connection = match connection::open(urls, &format!("warren restarts {pipeline}")).await {
        Ok(connection) => Arc::new(connection),
        Err(error) => return error.to_string(),
    };
    let why = match read(&connection, pipeline, seen, requests, stop).await {
        Ok(why) => why,
        Err(error) => error.to_string(),
    };
    connection::close(&connection, "restart follower").await;
    why
}

async fn read(
    connection: &Connection,
    pipeline: &str,
    seen: &mut Seen,
    requests: &mpsc::UnboundedSender<Request>,
    stop: &CancellationToken,
) -> Result<String, Error> {
    pauses::declare(connection, pipeline).await?;
    let publisher = Publisher::open(connection).await?;
    let stream = names::pause_stream(pipeline);
    let (_channel, mut consumer, marker) =
        control_stream::open(&stream, connection, Some(&publisher)).await?;
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return Ok("stopped".into()),
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            None => return Ok("the stream's consumer ended".into()),
            Some(Err(error)) => return Ok(format!("reading the stream: {error}")),
            Some(Ok(delivery)) => delivery,
        };
        if let Some(request) = Request::decode(&delivery.data)
            && seen.read(&request)
        {
            let _ = requests.send(request);
        }
        if delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str())
            == Some(&marker)
            && seen.caught_up()
        {
            info!(stream = %stream, "following `warren restart` requests");
        }
        if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
            return Ok(format!("acknowledging on the stream: {error}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> Request {
        Request {
            id: id.into(),
            stage: Some("a".into()),
            at_ms: 1,
            by: "test".into(),
        }
    }

    #[test]
    fn old_requests_are_not_replayed_and_each_is_acted_on_once() {
        let mut seen = Seen::default();
        assert!(!seen.read(&request("old")), "held before the start");
        seen.caught_up();
        assert!(seen.read(&request("new")));
        // The stream read again from its start after a loss.
        assert!(!seen.read(&request("old")));
        assert!(!seen.read(&request("new")));
        assert!(seen.read(&request("while away")));
    }

    #[test]
    fn a_request_is_no_pause_and_a_pause_no_request() {
        let body = request("r").encode();
        assert_eq!(Request::decode(&body), Some(request("r")));
        assert!(pauses::Change::decode(&body).is_none());
        assert!(Request::decode(b"{}").is_none());
        let change = pauses::Change {
            stage: "a".into(),
            paused: true,
            at_ms: 1,
            by: String::new(),
        };
        assert!(Request::decode(&change.encode()).is_none());
        assert!(request("r").covers("a") && !request("r").covers("b"));
        assert!(
            Request {
                stage: None,
                ..request("r")
            }
            .covers("b")
        );
    }
}
