//! A stage's scheduled messages: those that wait in the delay cascade
//! (`delay.rs`) for their `x-warren-not-before`, sent with a delay or a
//! time. Look at them, soonest first; they stay where they are.
//!
//! The cascade's queues belong to the whole pipeline, so a listing reads
//! every level and keeps the messages whose routing key names the stage.
//! A level is read held (warren's delivery limit: a message handed back
//! keeps its place and what it has waited); a message due while it is
//! held expires as soon as the level is given back, a moment late, never
//! early.

use crate::{
    dead_letters::letter,
    delay,
    error::Error,
    message,
    pass::Pass,
    pipeline::Pipeline,
    topology::{Role, Topology},
};

/// Delayed messages read per listing at most, over every level and stage.
pub const SCANNED: usize = 50_000;

/// One scheduled message, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// Its message id (empty if it has none).
    pub id: String,
    /// When it is due (`x-warren-not-before`, ms since the Unix epoch).
    pub due_ms: u64,
    /// The start of its body (`dead_letters::BODY_LISTED` bytes).
    pub body: Vec<u8>,
    /// The length of its whole body.
    pub body_len: usize,
    /// Its headers, as text (the first 32, each cut to 256 characters).
    pub headers: Vec<(String, String)>,
}

impl Scheduled {
    /// Whether [`Self::body`] is only the start of the body.
    pub fn is_cut(&self) -> bool {
        self.body.len() < self.body_len
    }
}

/// What a listing found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The first `limit` scheduled messages of the stage, soonest first.
    pub messages: Vec<Scheduled>,
    /// How many of the stage's it found in all.
    pub found: usize,
    /// Whether it stopped after [`SCANNED`] delayed messages (of every
    /// stage): there may be more.
    pub partial: bool,
}

/// The scheduled messages of `stage` (see [`Listing`]).
pub async fn list(pipeline: &Pipeline, stage: &str, limit: usize) -> Result<Listing, Error> {
    pipeline.require_stage(stage)?;
    let mut found = Vec::new();
    let mut scanned = 0;
    let levels = Topology::plan(pipeline)
        .queues
        .into_iter()
        .filter(|q| matches!(q.role, Role::Delay(_)));
    for queue in levels {
        if scanned >= SCANNED {
            break;
        }
        let pass = Pass::open(pipeline, &queue, false).await?;
        pass.look(SCANNED - scanned, |got| {
            scanned += 1;
            if delay::stage_of(got.routing_key.as_str()) == Some(stage) {
                let listed = letter::describe(&got.properties, &got.data, true);
                found.push(Scheduled {
                    id: listed.id,
                    due_ms: message::not_before_of(&got.properties).unwrap_or_default(),
                    body: listed.body,
                    body_len: listed.body_len,
                    headers: listed.headers,
                });
            }
        })
        .await?;
    }
    found.sort_by_key(|m| m.due_ms);
    let total = found.len();
    found.truncate(limit);
    Ok(Listing {
        messages: found,
        found: total,
        partial: scanned >= SCANNED,
    })
}
