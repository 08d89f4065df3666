//! The built-in `sink` stage: each message appended to a file as one JSON
//! line, each message id once, synced to disk before the message is
//! acknowledged.
//!
//! **The data file** (`{path}`) holds one JSON document per line: the
//! message body as it came (compacted onto one line if it spanned
//! several), followed by `\n`, in the order written. The sink adds
//! nothing to it (no id, no wrapper), so the file is the results and
//! nothing else; the ids live in the index beside it.
//!
//! **Beside it**, its index ([`index`]: `{path}.log`, `{path}.keys`): the
//! ids written (hashed) and the data length they cover. A batch of
//! messages is written as: data lines, fsync, then the ids and the new
//! length as one synced record, then every message of the batch is
//! acknowledged (group commit: two syncs per batch, not per message). A
//! message seen again (a redelivery, a retry, a second run) is
//! acknowledged without being written twice.
//!
//! **The sink never deletes a line it did not write in this run.** On
//! start ([`tail`] decides, [`aside`] moves):
//! - Lines beyond the recorded length, at most one batch of them: a crash
//!   came between the data and its record; those messages were not
//!   acknowledged and come again. They are moved to `{path}.cut.{n}` (the
//!   log names it) and the file is cut back.
//! - A data file without an index (a new box, a restored backup, a
//!   container that mounts only the data file, the index deleted), or
//!   longer than the index records by more than a batch: it is adopted.
//!   Every whole line counts as written, but its id is unknown: a message
//!   of such a line sent again (a `--fresh` run) is written once more. The
//!   ids are kept only in the index, so keep the index files with the
//!   data file when copying or restoring it.
//! - A data file shorter than recorded (lines removed, logrotate's
//!   `copytruncate`): kept as it is; the messages of the removed lines
//!   count as written. The same holds for a file cut under a running
//!   sink: the sink appends after what is left, never filling the gap.
//! - A last line without its newline (cut short) is moved aside too.
//!
//! A write that fails (disk full, file not writable) fails the whole
//! batch, and its bytes (this run's, never acknowledged) are cut back
//! once the log is known not to hold the batch's record: the messages
//! are retried later, and nothing was acknowledged that was not written.
//! A damaged index (a record damaged amid the log, a header that is not a
//! log's) stops the sink with an error naming the file and the offset,
//! rather than cutting anything.
//!
//! One process writes a file at a time (an exclusive lock on the data
//! file); a sink stage runs one worker per box. A file written by an
//! earlier version (ids in `{path}.ids`, one per line) is indexed on first
//! start ([`ids_file`]).

use std::{path::Path, sync::Arc};

use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warren::{
    Context, Failure, Outcome,
    worker::{Handler, HandlerFuture},
};

mod aside;
mod disk;
mod files;
mod ids_file;
mod index;
mod tail;
#[cfg(test)]
mod tests;

use files::Files;
use index::Key;

/// Most messages written in one batch.
const MAX_BATCH: usize = index::MAX_KEYS;

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
