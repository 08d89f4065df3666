//! The sink's data file and its index, opened, repaired and written in
//! batches (see the module docs of [`super`]).

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    MAX_BATCH, Pending, disk,
    index::{self, Index, Key},
};

pub(super) struct Files {
    data_path: PathBuf,
    data: File,
    /// Length after the last complete batch.
    data_len: u64,
    pub(super) index: Index,
    /// Keeps the lock for the life of the writer.
    _lock: File,
}

impl Files {
    pub(super) fn open(path: &Path) -> Result<Files, String> {
        Files::open_compacting_at(path, index::COMPACT_AT)
    }

    pub(super) fn open_compacting_at(path: &Path, compact_at: usize) -> Result<Files, String> {
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
        let (mut index, mut data_len) = Index::open_compacting_at(path, compact_at)?;
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

    pub(super) fn write_batches(mut self, mut writes: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = writes.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match writes.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let written = self.write(&batch);
            for write in batch {
                let _ = write.done.send(written.clone());
            }
        }
    }

    /// Writes the lines of the batch whose ids were not written before,
    /// each id once; the batch is done (every message of it may be
    /// acknowledged) when this returns `Ok`.
    pub(super) fn write(&mut self, batch: &[Pending]) -> Result<(), String> {
        let keys: Vec<Key> = batch.iter().map(|w| w.key).collect();
        let known = self.index.contains(&keys)?;
        let mut in_batch = HashSet::new();
        let fresh: Vec<&Pending> = batch
            .iter()
            .zip(known)
            .filter(|(write, known)| !known && in_batch.insert(write.key))
            .map(|(write, _)| write)
            .collect();
        self.append(&fresh)
    }

    /// Data lines, sync, then the index; on any error the data file is cut
    /// back (now, and again before the next batch if that fails).
    fn append(&mut self, batch: &[&Pending]) -> Result<(), String> {
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
            disk::append(&self.data, &self.data_path, &data)?;
            disk::sync(&self.data, &self.data_path)?;
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
            disk::set_len(&self.data, &self.data_path, self.data_len)?;
            disk::sync(&self.data, &self.data_path)?;
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
    disk::rename(&ids_path, &imported).map_err(|e| format!("cannot rename {shown}: {e}"))?;
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

