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

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use warren::{
    Context, Failure, Outcome,
    worker::{Handler, HandlerFuture},
};

mod index;

use index::{Index, Key};

/// Most messages written in one batch.
const MAX_BATCH: usize = 2048;

/// A line waiting for the writer, and who waits for it.
struct Pending {
    key: Key,
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
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

struct Files {
    data_path: PathBuf,
    data: File,
    /// Length after the last complete batch.
    data_len: u64,
    index: Index,
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
        let data = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("cannot open {shown}: {e}"))?;
        let lock = data
            .try_clone()
            .map_err(|e| format!("cannot lock {shown}: {e}"))?;
        if lock.try_lock().is_err() {
            info!("{shown} is being written by another process; waiting for it");
            lock.lock()
                .map_err(|e| format!("cannot lock {shown}: {e}"))?;
        }
        let (mut index, mut data_len) = Index::open(path)?;
        // The directory entries of files just created must survive a crash
        // as well as their contents.
        index::sync_dir(path)?;
        if let Some(imported) = import_ids_file(path, &data, &mut index)? {
            data_len = imported;
        }
        let on_disk = data
            .metadata()
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .len();
        if on_disk < data_len {
            warn!(
                "{shown} is shorter ({on_disk} bytes) than the {data_len} bytes its index records: lines were removed by hand; their messages count as written"
            );
            data_len = on_disk;
        }
        let mut files = Files {
            data_path: path.to_path_buf(),
            data,
            data_len,
            index,
            _lock: lock,
        };
        // Lines beyond the recorded length belong to unacknowledged
        // messages, which come again: drop them now.
        files
            .cut_back()
            .map_err(|e| format!("cannot repair {shown}: {e}"))?;
        let written = files.index.count()?;
        if written > 0 {
            info!("{shown}: {written} messages already written");
        }
        Ok(files)
    }

    fn write_batches(mut self, mut writes: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = writes.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match writes.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let keys: Vec<Key> = batch.iter().map(|w| w.key).collect();
            let known = match self.index.contains(&keys) {
                Ok(known) => known,
                Err(error) => {
                    for write in batch {
                        let _ = write.done.send(Err(error.clone()));
                    }
                    continue;
                }
            };
            let mut fresh = Vec::new();
            let mut repeated = Vec::new();
            let mut in_batch = HashSet::new();
            for (write, known) in batch.into_iter().zip(known) {
                if known || !in_batch.insert(write.key) {
                    repeated.push(write);
                } else {
                    fresh.push(write);
                }
            }
            let written = self.append(&fresh);
            for write in fresh {
                let _ = write.done.send(written.clone());
            }
            // Duplicates are done once the first copy is on disk.
            for write in repeated {
                let _ = write.done.send(written.clone());
            }
        }
    }

    /// Data lines, sync, then the index; on any error the data file is cut
    /// back (now, and again before the next batch if that fails).
    fn append(&mut self, batch: &[Pending]) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let data_path = self.data_path.display().to_string();
        let written = (|| -> std::io::Result<u64> {
            // A failed batch was cut back; if that failed too, it is done
            // now, so nothing follows a partial line.
            self.cut_back()?;
            let mut data = Vec::with_capacity(batch.iter().map(|w| w.line.len()).sum());
            for write in batch {
                data.extend_from_slice(&write.line);
            }
            self.data.write_all(&data)?;
            self.data.sync_data()?;
            Ok(self.data_len + data.len() as u64)
        })()
        .map_err(|error| format!("writing {data_path} failed: {error}"));
        let recorded = written.and_then(|len| {
            let keys: Vec<Key> = batch.iter().map(|w| w.key).collect();
            self.index.record(&keys, len).map(|()| len)
        });
        match recorded {
            Ok(len) => {
                self.data_len = len;
                Ok(())
            }
            Err(error) => {
                let _ = self.cut_back();
                Err(error)
            }
        }
    }

    /// Truncates the data file to its last good length.
    fn cut_back(&mut self) -> std::io::Result<()> {
        if self.data.metadata()?.len() != self.data_len {
            self.data.set_len(self.data_len)?;
            self.data.sync_data()?;
        }
        Ok(())
    }
}

/// Indexes the ids file of an earlier version (one id per line, in the
/// order of the data lines) and renames it; returns the data length it
/// covers, or `None` when there is no such file.
fn import_ids_file(path: &Path, data: &File, index: &mut Index) -> Result<Option<u64>, String> {
    let ids_path = PathBuf::from(format!("{}.ids", path.display()));
    let Ok(file) = File::open(&ids_path) else {
        return Ok(None);
    };
    let shown = ids_path.display();
    let mut keys = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // end, or a line cut by a crash
        }
        keys.push(index::key(&String::from_utf8_lossy(
            &line[..line.len() - 1],
        )));
    }
    let len = offset_after_lines(data, keys.len())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    index.record(&keys, len)?;
    let imported = PathBuf::from(format!("{}.imported", ids_path.display()));
    std::fs::rename(&ids_path, &imported).map_err(|e| format!("cannot rename {shown}: {e}"))?;
    info!("{shown}: {} ids of an earlier version indexed", keys.len());
    Ok(Some(len))
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

    fn write(id: &str, body: &str) -> (Pending, oneshot::Receiver<Result<(), String>>) {
        let (done, rx) = oneshot::channel();
        (
            Pending {
                key: index::key(id),
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
        let (a, _) = write("a\nb", "{\"n\":1}");
        let (b, _) = write("\"b\"", "{\"n\":2}");
        files.append(&[a, b]).unwrap();
        drop(files);
        // A crash after the data of "c" was written but before its id.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"n\":3}\n{\"n\":")
            .unwrap();
        let files = Files::open(&path).unwrap();
        assert_eq!(files.index.count().unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        // Ids that differ only where a line-based file would split them
        // are different ids; the ones written are known.
        let known = files
            .index
            .contains(&[
                index::key("a\nb"),
                index::key("a"),
                index::key("\"b\""),
            ])
            .unwrap();
        assert_eq!(known, vec![true, false, true]);
    }

    #[test]
    fn the_ids_file_of_an_earlier_version_is_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        std::fs::write(dir.path().join("results.jsonl.ids"), "a\nb\n").unwrap();
        let files = Files::open(&path).unwrap();
        assert_eq!(files.index.count().unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n",
            "the line without an id was never acknowledged"
        );
        assert!(dir.path().join("results.jsonl.ids.imported").exists());
        assert!(!dir.path().join("results.jsonl.ids").exists());
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
