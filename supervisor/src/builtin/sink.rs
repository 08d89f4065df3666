//! The built-in `sink` stage: each message appended to a file as one JSON
//! line, each message id once, fsynced before the message is acknowledged.
//!
//! Next to the data file `{path}` lives `{path}.ids`, one message id per
//! line, in the same order. A batch of messages is written as: data lines,
//! fsync, ids, fsync, then every message of the batch is acknowledged (group
//! commit: two fsyncs per batch, not per message). After a crash between the
//! two, the data file has lines whose ids were not recorded; those messages
//! were not acknowledged, so the broker delivers them again. On start the
//! data file is therefore cut back to as many lines as there are ids, and
//! the ids are loaded, so a message seen again (a redelivery, a retry, a
//! second run) is acknowledged without being written twice.
//!
//! A write that fails (disk full, file not writable) cuts both files back to
//! their last good length and fails the whole batch: the messages are
//! retried later, and nothing was acknowledged that was not written.
//!
//! One process writes a file at a time (an exclusive lock on the data file);
//! a sink stage runs one worker per box.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::info;
use warren::{
    Context, Failure, Outcome,
    worker::{Handler, HandlerFuture},
};

/// Most messages written in one batch.
const MAX_BATCH: usize = 2048;

/// A message to write, and who waits for it.
struct Pending {
    id: String,
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The writer of one sink file.
pub struct Sink {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Sink {
    /// Opens (or creates) the sink file and its id index, takes the lock,
    /// repairs them after a crash, and starts the writer thread.
    pub fn open(path: &Path) -> Result<Sink, String> {
        let files = Files::open(path)?;
        let (queue, pending) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("warren-sink".into())
            .spawn(move || files.write_batches(pending))
            .map_err(|e| format!("cannot start the sink writer: {e}"))?;
        Ok(Sink { queue })
    }

    /// Writes one line (or nothing, if the id was written before) and
    /// returns once it is on disk.
    async fn write_line(&self, id: String, line: Vec<u8>) -> Outcome {
        let (done, written) = oneshot::channel();
        self.queue
            .send(Pending { id, line, done })
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
        let id = ctx.id().to_string();
        Ok(Box::pin(async move { sink.write_line(id, line).await }))
    }
}

struct Files {
    data_path: PathBuf,
    data: File,
    ids: File,
    /// Lengths after the last complete batch.
    data_len: u64,
    ids_len: u64,
    seen: HashSet<String>,
    /// Keeps the lock for the life of the writer.
    _lock: File,
}

impl Files {
    fn open(path: &Path) -> Result<Files, String> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the directory of {shown}: {e}"))?;
        }
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(p)
        };
        let data = open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
        let lock = data
            .try_clone()
            .map_err(|e| format!("cannot lock {shown}: {e}"))?;
        if lock.try_lock().is_err() {
            info!("{shown} is being written by another process; waiting for it");
            lock.lock()
                .map_err(|e| format!("cannot lock {shown}: {e}"))?;
        }
        let ids_path = PathBuf::from(format!("{}.ids", path.display()));
        let ids =
            open(&ids_path).map_err(|e| format!("cannot open {}: {e}", ids_path.display()))?;
        // The directory entries of files just created must survive a crash
        // as well as their contents.
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync the directory {}: {e}", dir.display()))?;
        let (seen, ids_len) =
            read_ids(&ids).map_err(|e| format!("cannot read {}: {e}", ids_path.display()))?;
        let data_len = offset_after_lines(&data, seen.len())
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut files = Files {
            data_path: path.to_path_buf(),
            data,
            ids,
            data_len,
            ids_len,
            seen,
            _lock: lock,
        };
        // Lines beyond the recorded ids belong to unacknowledged messages,
        // which come again: drop them now.
        files
            .cut_back()
            .map_err(|e| format!("cannot repair {shown}: {e}"))?;
        if !files.seen.is_empty() {
            info!("{shown}: {} messages already written", files.seen.len());
        }
        Ok(files)
    }

    fn write_batches(mut self, mut pending: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = pending.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match pending.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let mut fresh = Vec::new();
            let mut repeated = Vec::new();
            let mut in_batch = HashSet::new();
            for item in batch {
                if self.seen.contains(&item.id) || !in_batch.insert(item.id.clone()) {
                    repeated.push(item);
                } else {
                    fresh.push(item);
                }
            }
            let written = self.append(&fresh);
            if written.is_ok() {
                self.seen.extend(fresh.iter().map(|p| p.id.clone()));
            }
            for item in fresh {
                let _ = item.done.send(written.clone());
            }
            // Duplicates are done once the first copy is on disk.
            let repeats_done = if written.is_ok() {
                Ok(())
            } else {
                written.clone()
            };
            for item in repeated {
                let _ = item.done.send(repeats_done.clone());
            }
        }
    }

    /// Data lines, fsync, ids, fsync; on any error both files are cut back
    /// (now, and again before the next batch if that fails).
    fn append(&mut self, batch: &[Pending]) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let result = (|| -> std::io::Result<()> {
            // A failed batch was cut back; if that failed too, it is done
            // now, so nothing follows a partial line.
            self.cut_back()?;
            let mut data = Vec::with_capacity(batch.iter().map(|p| p.line.len()).sum());
            let mut ids = Vec::new();
            for item in batch {
                data.extend_from_slice(&item.line);
                ids.extend_from_slice(item.id.as_bytes());
                ids.push(b'\n');
            }
            self.data.write_all(&data)?;
            self.data.sync_data()?;
            self.ids.write_all(&ids)?;
            self.ids.sync_data()?;
            self.data_len += data.len() as u64;
            self.ids_len += ids.len() as u64;
            Ok(())
        })();
        result.map_err(|error| {
            let _ = self.cut_back();
            format!("writing {} failed: {error}", self.data_path.display())
        })
    }

    /// Truncates both files to their last good lengths.
    fn cut_back(&mut self) -> std::io::Result<()> {
        if self.data.metadata()?.len() != self.data_len {
            self.data.set_len(self.data_len)?;
            self.data.sync_data()?;
        }
        if self.ids.metadata()?.len() != self.ids_len {
            self.ids.set_len(self.ids_len)?;
            self.ids.sync_data()?;
        }
        Ok(())
    }
}

/// The complete lines of the id index, and the length they take.
fn read_ids(file: &File) -> std::io::Result<(HashSet<String>, u64)> {
    let mut reader = BufReader::new(file.try_clone()?);
    reader.seek(SeekFrom::Start(0))?;
    let mut seen = HashSet::new();
    let mut len = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // end, or a line cut by a crash
        }
        len += read as u64;
        seen.insert(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    Ok((seen, len))
}

/// The byte offset just after the first `lines` lines of the data file (or
/// its length, if it has fewer: then the index has ids of lines lost in a
/// crash, which cannot happen when data is synced before ids).
fn offset_after_lines(file: &File, lines: usize) -> std::io::Result<u64> {
    let mut reader = BufReader::new(file.try_clone()?);
    reader.seek(SeekFrom::Start(0))?;
    let mut offset = 0u64;
    let mut buffer = [0u8; 64 * 1024];
    let mut count = 0usize;
    if lines == 0 {
        return Ok(0);
    }
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(offset);
        }
        for (i, byte) in buffer[..read].iter().enumerate() {
            if *byte == b'\n' {
                count += 1;
                if count == lines {
                    return Ok(offset + i as u64 + 1);
                }
            }
        }
        offset += read as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str, body: &str) -> (Pending, oneshot::Receiver<Result<(), String>>) {
        let (done, rx) = oneshot::channel();
        (
            Pending {
                id: id.into(),
                line: format!("{body}\n").into_bytes(),
                done,
            },
            rx,
        )
    }

    #[test]
    fn writes_each_id_once_across_restarts_and_repairs_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/results.jsonl");
        let mut files = Files::open(&path).unwrap();
        let (a, _) = pending("a", "{\"n\":1}");
        let (b, _) = pending("b", "{\"n\":2}");
        files.append(&[a, b]).unwrap();
        files.seen.extend(["a".to_string(), "b".to_string()]);
        drop(files);
        // A crash after the data of "c" was written but before its id.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"n\":3}\n{\"n\":")
            .unwrap();
        let files = Files::open(&path).unwrap();
        assert_eq!(files.seen.len(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        drop(files);
    }

    #[test]
    fn a_second_writer_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let first = Files::open(&path).unwrap();
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = opened.clone();
        let second_path = path;
        let second = std::thread::spawn(move || {
            let files = Files::open(&second_path).unwrap();
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(files);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !opened.load(std::sync::atomic::Ordering::SeqCst),
            "the second writer did not wait"
        );
        drop(first);
        second.join().unwrap();
        assert!(opened.load(std::sync::atomic::Ordering::SeqCst));
    }
}
