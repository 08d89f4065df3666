//! A peek at a stage's waiting messages: the first of its queue, in queue
//! order, with their payload and headers, left where they are.
//!
//! RabbitMQ shows a message only by handing it out. A peek holds the first
//! messages (a consumer whose prefetch is what it wants, unacknowledged),
//! writes their ids to the pipeline's peek stream (`peeks.rs`: so that
//! workers take the redelivery for what it is, not a crash), and gives
//! them back to the head of the queue, in their order, [`GIVE_BACK`]
//! later (the connection closes: also if the process dies). Meanwhile
//! workers take the messages behind them. A queue that could drop what is
//! handed back (a delivery limit other than warren's) is not peeked at.

use std::time::Duration;

use lapin::BasicProperties;
use tracing::warn;

use crate::{
    dead_letters::letter,
    error::Error,
    message, names,
    pass::Pass,
    peeks::{Held, Peek},
    pipeline::Pipeline,
    publisher::Publisher,
    topology::{Role, Topology},
    worker::id_of,
};

/// How long a peek goes on holding what it showed after it wrote its
/// peek: workers follow the peek stream within milliseconds.
pub const GIVE_BACK: Duration = Duration::from_secs(1);

/// One waiting message, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Its message id (empty if it has none: a worker gives it one).
    pub id: String,
    /// The attempt it will be handled at.
    pub attempt: u32,
    /// The start of its body (`dead_letters::BODY_LISTED` bytes).
    pub body: Vec<u8>,
    /// The length of its whole body.
    pub body_len: usize,
    /// Its headers, as text (the first 32, each cut to 256 characters).
    pub headers: Vec<(String, String)>,
}

impl Waiting {
    /// Whether [`Self::body`] is only the start of the body.
    pub fn is_cut(&self) -> bool {
        self.body.len() < self.body_len
    }
}

/// What a peek found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peeked {
    /// Messages ready in the queue when the peek began.
    pub ready: usize,
    /// The first of them (at most the `limit` asked for), in queue order.
    pub messages: Vec<Waiting>,
}

/// The first `limit` messages waiting in `stage`'s queue. Returns once
/// they are read and the peek written; they go back to the queue
/// [`GIVE_BACK`] later, in the background.
pub async fn peek(pipeline: &Pipeline, stage: &str, limit: usize) -> Result<Peeked, Error> {
    pipeline.require_stage(stage)?;
    let queues = Topology::plan(pipeline).queues;
    let planned = |role: Role, of: Option<&str>| {
        queues
            .iter()
            .find(|q| q.role == role && q.stage.as_deref() == of)
            .expect("planned for every pipeline")
    };
    let queue = planned(Role::Stage, Some(stage));
    let mut pass = Pass::open(pipeline, queue, false).await?;
    // There before anything is held (a pipeline declared by an earlier
    // warren has no peek stream): a peek that cannot be written gives
    // back what it holds at once, and workers count a crash.
    let stream = planned(Role::PeekStream, None);
    if let Err(error) = stream.declare_alone(pass.connection()).await {
        pass.close().await;
        return Err(error);
    }
    let ready = pass.ready();
    let mut messages = Vec::new();
    let mut held = Vec::new();
    let looked = pass
        .hold(limit, |got| {
            messages.push(describe(&got.properties, &got.data));
            held.push(Held {
                id: id_of(got),
                returns: message::returns_of(&got.properties),
            });
        })
        .await;
    let written = match looked {
        Ok(()) if held.is_empty() => Ok(()),
        Ok(()) => write(pipeline, stage, held, &pass).await,
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        // Given back now, unexplained: the broker failed between the hold
        // and the write, and workers count a crash.
        pass.close().await;
        return Err(error);
    }
    tokio::spawn(async move {
        tokio::time::sleep(GIVE_BACK).await;
        pass.close().await;
    });
    Ok(Peeked { ready, messages })
}

/// Writes the peek of `held` to the peek stream, confirmed.
async fn write(
    pipeline: &Pipeline,
    stage: &str,
    held: Vec<Held>,
    pass: &Pass,
) -> Result<(), Error> {
    let peek = Peek {
        id: message::new_id(),
        stage: stage.to_string(),
        held,
        at_ms: message::epoch_ms(),
    };
    let publisher = Publisher::open(pass.connection()).await?;
    let stream = names::peek_stream(&pipeline.name);
    let props = message::new_properties(&peek.id, &peek.id);
    let sent = publisher
        .publish_confirmed("", &stream, &peek.encode(), props)
        .await;
    publisher.close().await;
    if let Err(error) = &sent {
        warn!(stage, %error, "could not write a peek: its messages go back at once");
    }
    sent
}

fn describe(props: &BasicProperties, body: &[u8]) -> Waiting {
    let listed = letter::describe(props, body, true);
    Waiting {
        id: listed.id,
        attempt: listed.attempts,
        body: listed.body,
        body_len: listed.body_len,
        headers: listed.headers,
    }
}
