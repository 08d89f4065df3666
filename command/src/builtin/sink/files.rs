//! The sink's data file and its index, opened, repaired and written in
//! batches (see the module docs of [`super`]).

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    MAX_BATCH, Pending, aside,
    disk::{self, fail},
    ids_file,
    index::{self, Found, Index, Key},
    tail::{Facts, When, Why, plan},
};

/// The data file, its index and its lock.
pub(super) struct Files {
    data_path: PathBuf,
    data: File,
    /// Length after the last complete batch.
    data_len: u64,
    /// Bytes beyond `data_len` are this run's, of a batch that failed
    /// (never acknowledged): cut before the next batch.
    own_tail: bool,
    pub(super) index: Index,
    /// Keeps the lock for the life of the writer.
    _lock: File,
}

impl Files {
    /// Opens (or creates) the data file and its index, takes the lock and
    /// repairs them after a crash.
    pub(super) fn open(path: &Path) -> Result<Files, String> {
        Files::open_compacting_at(path, index::COMPACT_AT)
    }

    /// [`Files::open`], merging the index's log every `compact_at` ids.
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
        // The data file's name must survive a crash as well as its lines.
        disk::sync_folder(path)?;
        let (mut index, mut found) = Index::open_compacting_at(path, compact_at)?;
        if ids_file::path_of(path).exists() {
            if found == Found::NoLog {
                index.begin(index.data_len())?;
                found = Found::Log;
            }
            ids_file::import(path, &data, &mut index)?;
        }
        let mut files = Files {
            data_path: path.to_path_buf(),
            data,
            data_len: index.data_len(),
            own_tail: false,
            index,
            _lock: lock,
        };
        files.repair(found, When::Start)?;
        let written = files.index.count()?;
        if written > 0 {
            info!("{shown}: {written} messages already written");
        }
        Ok(files)
    }

    /// Keeps what the data file holds against what the index records
    /// ([`super::tail`]): moves aside what is not kept, and records the
    /// kept length when it is not what the index holds.
    fn repair(&mut self, found: Found, when: When) -> Result<(), String> {
        let path = self.data_path.clone();
        let facts = Facts::read(&self.data, found == Found::Log, self.data_len)
            .map_err(|e| fail(&path, e))?;
        let plan = plan(&facts, when);
        if plan.keep < facts.on_disk {
            let aside = aside::move_aside(&path, &self.data, plan.keep, facts.on_disk)
                .map_err(|e| fail(&path, format!("cannot move its last bytes aside: {e}")))?;
            let reason = match plan.why {
                Why::CrashTail => {
                    "they were written before a crash and never acknowledged: their messages come again"
                }
                _ => "a line cut short (no newline at its end)",
            };
            warn!(
                "{}: moved {} bytes from byte {} to {}: {reason}",
                path.display(),
                facts.on_disk - plan.keep,
                plan.keep,
                aside.display()
            );
        }
        let whole_lines = plan.keep.min(facts.last_line_end);
        match plan.why {
            Why::Same | Why::CrashTail => {}
            Why::Adopted if facts.recorded < whole_lines => warn!(
                "{}: kept {} bytes its index did not record (a new or copied file, or its index deleted): each of their lines counts as written; a message of one of them sent again is written once more",
                path.display(),
                whole_lines - facts.recorded
            ),
            Why::Adopted => {}
            Why::Shorter => warn!(
                "{}: shorter ({} bytes) than the {} bytes written: lines were removed by someone else (logrotate's copytruncate?); their messages count as written",
                path.display(),
                facts.on_disk,
                facts.recorded
            ),
            Why::Foreign => warn!(
                "{}: holds lines the sink did not write (after byte {}): kept, each counting as written",
                path.display(),
                facts.recorded
            ),
        }
        match (found, plan.record) {
            (Found::NoLog, _) => self.index.begin(plan.keep)?,
            (Found::Log, true) => self.index.record(&[], plan.keep)?,
            (Found::Log, false) => {}
        }
        self.data_len = plan.keep;
        Ok(())
    }

    /// Writes batches of what arrives until the sink is dropped.
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

    /// Data lines, sync, then the index. On an error, the batch's bytes are
    /// cut back, once the log is known not to hold its record.
    fn append(&mut self, batch: &[&Pending]) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_file()?;
        let data_path = self.data_path.display().to_string();
        let mut data = Vec::with_capacity(batch.iter().map(|w| w.line.len()).sum());
        for write in batch {
            data.extend_from_slice(&write.line);
        }
        let written = disk::append(&self.data, &self.data_path, &data)
            .and_then(|()| disk::sync(&self.data, &self.data_path))
            .map_err(|error| format!("writing {data_path} failed: {error}"));
        if let Err(error) = written {
            self.own_tail = true;
            let _ = self.cut_own_tail();
            return Err(error);
        }
        let len = self.data_len + data.len() as u64;
        let keys: Vec<Key> = batch.iter().map(|w| w.key).collect();
        if let Err(error) = self.index.record(&keys, len) {
            // Unless the log is cut back (synced), it may hold the record:
            // then the lines must stay.
            self.own_tail = true;
            if self.index.settled() {
                let _ = self.cut_own_tail();
            }
            return Err(error);
        }
        self.data_len = len;
        Ok(())
    }

    /// Before a batch: what a failed batch left is undone, and a file
    /// changed by someone else is taken as it is (never filled up again).
    fn check_file(&mut self) -> Result<(), String> {
        self.index.settle()?;
        if self.own_tail {
            self.cut_own_tail().map_err(|e| {
                fail(
                    &self.data_path,
                    format!("cannot cut back a failed batch: {e}"),
                )
            })?;
        }
        let on_disk = self
            .data
            .metadata()
            .map_err(|e| fail(&self.data_path, e))?
            .len();
        if on_disk != self.data_len {
            self.repair(Found::Log, When::Running)?;
        }
        Ok(())
    }

    /// Cuts this run's bytes of a failed batch (never acknowledged).
    fn cut_own_tail(&mut self) -> std::io::Result<()> {
        let on_disk = self.data.metadata()?.len();
        if on_disk > self.data_len {
            disk::set_len(&self.data, &self.data_path, self.data_len)?;
            disk::sync(&self.data, &self.data_path)?;
        }
        self.own_tail = false;
        Ok(())
    }
}
