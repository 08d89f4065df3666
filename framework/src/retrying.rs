//! A stage's retrying messages: the copies that wait in its retry queues
//! (one per delay of its backoff, [`names::retry_queue`]) until the broker
//! sends them back to the stage. Look at them, or send them back now.
//!
//! Looking never moves them: a retry queue keeps what a pass hands back
//! (warren's delivery limit), and a message held and handed back keeps its
//! place and what it has waited (`pass.rs`). A retry queue that could drop
//! what is handed back is not looked at: going round it would start every
//! message's wait again.
//!
//! [`names::retry_queue`]: crate::names::retry_queue

use std::time::Duration;

use lapin::BasicProperties;

use crate::{
    dead_letters::letter,
    error::Error,
    message,
    pass::Pass,
    pipeline::Pipeline,
    publisher::Publisher,
    topology::{Queue, Role, Topology},
};

/// One retrying message, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retrying {
    /// Its message id (empty if it has none).
    pub id: String,
    /// The attempt it will be handled at.
    pub attempt: u32,
    /// Why the attempt before failed (`x-warren-error`).
    pub reason: String,
    /// The start of its body (`dead_letters::BODY_LISTED` bytes).
    pub body: Vec<u8>,
    /// The length of its whole body.
    pub body_len: usize,
    /// Its headers, as text (the first 32, each cut to 256 characters).
    pub headers: Vec<(String, String)>,
    /// How long its retry queue holds a message.
    pub wait: Duration,
}

impl Retrying {
    /// Whether [`Self::body`] is only the start of the body.
    pub fn is_cut(&self) -> bool {
        self.body.len() < self.body_len
    }
}

/// The first `limit` retrying messages of `stage`: its retry queues from
/// the shortest wait, each in queue order. They stay where they are.
pub async fn list(pipeline: &Pipeline, stage: &str, limit: usize) -> Result<Vec<Retrying>, Error> {
    let mut out = Vec::new();
    for (queue, wait) in retry_queues(pipeline, stage)? {
        if out.len() >= limit {
            break;
        }
        let pass = Pass::open(pipeline, &queue, false).await?;
        let left = limit - out.len();
        pass.look(left, |got| {
            out.push(describe(&got.properties, &got.data, wait))
        })
        .await?;
    }
    Ok(out)
}

/// Sends the retrying messages of `stage` that `chosen` picks back to the
/// stage now (`at_most` of them: the rest of the queues is then left
/// unread), at the attempt they wait for; each leaves its retry queue only
/// after the broker confirmed it in the stage queue (a crash in between
/// leaves it in both: handled at least once, as everywhere). Returns how
/// many were sent.
pub async fn retry_now(
    pipeline: &Pipeline,
    stage: &str,
    chosen: impl Fn(&Retrying) -> bool,
    at_most: usize,
) -> Result<usize, Error> {
    let mut sent = 0;
    for (queue, wait) in retry_queues(pipeline, stage)? {
        if sent >= at_most {
            break;
        }
        let mut pass = Pass::open(pipeline, &queue, false).await?;
        let publisher = match Publisher::open(pass.connection()).await {
            Ok(publisher) => publisher,
            Err(error) => {
                pass.close().await;
                return Err(error);
            }
        };
        let walked: Result<(), Error> = async {
            while let Some(got) = pass.next().await? {
                let (props, body) = (&got.delivery.properties, &got.delivery.data);
                if !chosen(&describe(props, body, wait)) {
                    pass.keep(&got).await?;
                    continue;
                }
                // A wait longer than the longest queue goes round again
                // until its not-before: sent now, it must not.
                let props = message::republish_properties(props, &[], &[message::NOT_BEFORE]);
                publisher
                    .publish_before_ack(&pipeline.name, stage, body, props)
                    .await?;
                pass.take(&got).await?;
                sent += 1;
                if sent >= at_most {
                    break;
                }
            }
            Ok(())
        }
        .await;
        publisher.close().await;
        match walked {
            Ok(()) => pass.finish().await?,
            // What was not sent goes back to the queue, in its place.
            Err(error) => {
                pass.close().await;
                return Err(error);
            }
        }
    }
    Ok(sent)
}

/// `stage`'s retry queues, as planned, with their waits, shortest first.
fn retry_queues(pipeline: &Pipeline, stage: &str) -> Result<Vec<(Queue, Duration)>, Error> {
    pipeline.require_stage(stage)?;
    let mut queues: Vec<(Queue, Duration)> = Topology::plan(pipeline)
        .queues
        .into_iter()
        .filter(|q| q.stage.as_deref() == Some(stage))
        .filter_map(|q| match q.role {
            Role::Retry(wait) => Some((q, wait)),
            _ => None,
        })
        .collect();
    queues.sort_by_key(|(_, wait)| *wait);
    Ok(queues)
}

fn describe(props: &BasicProperties, body: &[u8], wait: Duration) -> Retrying {
    let listed = letter::describe(props, body, true);
    Retrying {
        id: listed.id,
        attempt: listed.attempts,
        reason: message::text_header(props, message::ERROR).unwrap_or_default(),
        body: listed.body,
        body_len: listed.body_len,
        headers: listed.headers,
        wait,
    }
}
