//! The built-in `sink` stage: each message appended to a file as one JSON
//! line, each message id once, synced to disk before the message is
//! acknowledged.
//!
//! Next to the data file `{path}` lives its index ([`index`]:
//! `{path}.log` and `{path}.keys`): the ids written (hashed) and the data
//! length they cover. A batch of messages is written as: data lines,
//! fsync, then the ids and the new length as one synced record, then
//! every message of the batch is acknowledged (group commit: two syncs per
//! batch, not per message). After a crash between the two, the data file
//! has lines beyond the recorded length; those messages were not
//! acknowledged, so the broker delivers them again, and on start the data
//! file is cut back to the recorded length. A message seen again (a
//! redelivery, a retry, a second run) is acknowledged without being
//! written twice.
//!
//! A write that fails (disk full, file not writable) cuts the data file
//! back to its last good length and fails the whole batch: the messages
//! are retried later, and nothing was acknowledged that was not written.
//!
//! One process writes a file at a time (an exclusive lock on the data
//! file); a sink stage runs one worker per box. A file written by an
//! earlier version (ids in `{path}.ids`, one per line) is indexed on first
//! start and its `.ids` file renamed `.ids.imported`.

use std::{path::Path, sync::Arc};

use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warren::{
    Context, Failure, Outcome,
    worker::{Handler, HandlerFuture},
};

mod disk;
mod files;
mod index;
#[cfg(test)]
mod tests;

use files::Files;
use index::Key;

/// Most messages written in one batch.
const MAX_BATCH: usize = 2048;

/// A line waiting for the writer, and who waits for it.
pub(super) struct Pending {
    pub(super) key: Key,
    pub(super) line: Vec<u8>,
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

/// The writer of one sink file.
pub struct Sink {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Sink {
    /// Opens (or creates) the sink file and its index, takes the lock,
    /// repairs them after a crash, and starts the writer thread.
    pub fn open(path: &Path) -> Result<Sink, String> {
        let files = Files::open(path)?;
        let (queue, writes) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("warren-sink".into())
            .spawn(move || files.write_batches(writes))
            .map_err(|e| format!("cannot start the sink writer: {e}"))?;
        Ok(Sink { queue })
    }

    /// Writes one line (or nothing, if the id was written before) and
    /// returns once it is on disk.
    async fn write_line(&self, id: &str, line: Vec<u8>) -> Outcome {
        let (done, written) = oneshot::channel();
        let write = Pending {
            key: index::key(id),
            line,
            done,
        };
        self.queue
            .send(write)
            .map_err(|_| Failure::retry("the sink writer stopped"))?;
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Failure::retry(error)),
            Err(_) => Err(Failure::retry("the sink writer stopped")),
        }
    }
}

/// The sink as a handler of raw bodies: a body that is JSON on one line is
/// written as it is; one spread over several lines is written compact. No
/// document tree is built for the common case.
pub struct SinkHandler(pub Arc<Sink>);

impl Handler for SinkHandler {
    fn start(&self, body: &[u8], ctx: Context) -> Result<HandlerFuture, String> {
        let mut line = if body.iter().any(|b| *b == b'\n' || *b == b'\r') {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
            serde_json::to_vec(&value).map_err(|e| e.to_string())?
        } else {
            serde_json::from_slice::<IgnoredAny>(body)
                .map_err(|e| format!("body is not valid JSON: {e}"))?;
            body.to_vec()
        };
        line.push(b'\n');
        let sink = self.0.clone();
        Ok(Box::pin(
            async move { sink.write_line(ctx.id(), line).await },
        ))
    }
}

