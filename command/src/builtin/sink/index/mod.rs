//! The sink's record of what it wrote, on disk next to the data file: a
//! 16-byte hash (SHA-256, cut) of each message id written, and the length
//! of the data file that holds them. Memory does not grow with the number
//! of results, and starting on a file of millions of results reads the
//! hashes once (16 bytes each), never the data file.
//!
//! Two files:
//! - `{path}.log` ([`log`]): appended per batch: its hashes and the new
//!   data length, synced (one record with a CRC32C, so that a record torn
//!   by a crash is recognised and dropped; a damaged record with more
//!   after it stops the sink instead). Its hashes are also kept in memory.
//! - `{path}.keys` ([`sorted`]): every older hash, sorted. When the log
//!   holds [`COMPACT_AT`] hashes, they are merged into a new `.keys`
//!   (written aside as `.keys.new`, synced, renamed over the old one) and
//!   the log starts over. A lookup of a hash not in the log reads one
//!   block of 256 hashes, found through every 256th hash kept in memory.
//!
//! The log carries a generation number and `.keys` the generation of the
//! last log merged into it. A log of an older generation than `.keys` was
//! merged whole and starts over; one of the same generation (a merge that
//! failed after its rename, or a crash before the log started over) is
//! read as it is: its records are true whichever `.keys` a crash left, and
//! a hash both in it and in `.keys` is merged once. A merge that fails
//! removes its `.keys.new` and is tried again after more batches.
//!
//! A log is created whole or not at all (written as `.log.new`, synced,
//! renamed), so a missing log means a new sink or a log deleted or not
//! copied: [`Found::NoLog`], and the sink adopts its data file. After a
//! failed write or sync of a record, the log is cut back to its last whole
//! record and synced ([`Index::settle`]) before anything else happens.
//!
//! An index of the previous format (an embedded database, `{path}.index`)
//! is converted on first start ([`legacy`]).

mod legacy;
mod log;
mod sorted;
mod start;

use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tracing::warn;

pub use log::MAX_KEYS;
pub use sorted::Key;
use sorted::Sorted;

use super::disk::{self, fail};

/// Hashes the log holds before they are merged into the sorted file: a
/// hash set of 2^19 slots (about 9 MB) holds 458,752 before it doubles,
/// and a batch (at most 2,048) may come on top of this.
pub const COMPACT_AT: usize = 456_704;

/// The key of `id`.
pub fn key(id: &str) -> Key {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Whether the index can tell what the data file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Its log was there: [`Index::data_len`] is the data its records
    /// cover; anything beyond was written after the last record.
    Log,
    /// No log: a new sink, or its log was deleted or not copied with the
    /// data file. Nothing tells which lines beyond [`Index::data_len`]
    /// (what `.keys` covers, 0 without it) were written, nor their ids.
    /// [`Index::begin`] starts the log.
    NoLog,
}

/// The open index of one sink file.
pub struct Index {
    keys_path: PathBuf,
    log_path: PathBuf,
    sorted: Sorted,
    /// The log (none until [`Index::begin`] when there was none).
    log: Option<File>,
    version: log::Version,
    /// Where the next record goes; 0 while the log must start over first.
    log_len: u64,
    generation: u64,
    /// The log's hashes.
    recent: HashSet<Key>,
    /// The data length of the last record.
    data_len: u64,
    compact_at: usize,
    /// Merge when the log holds this many hashes.
    next_compact: usize,
    /// A record failed: the log may hold part of it beyond `log_len`.
    unsettled: bool,
}

impl Index {
    /// Opens the index of the data file `data` (see [`Found`]), merging
    /// the log into the sorted file once it holds `compact_at` hashes.
    pub fn open_compacting_at(data: &Path, compact_at: usize) -> Result<(Index, Found), String> {
        let beside = |suffix: &str| PathBuf::from(format!("{}{suffix}", data.display()));
        let (keys_path, log_path, old) = (beside(".keys"), beside(".log"), beside(".index"));
        // What a merge or a log's creation left when a crash stopped it.
        for unfinished in [beside(".keys.new"), beside(".log.new")] {
            disk::remove(&unfinished).map_err(|e| fail(&unfinished, e))?;
        }
        let convert = old.exists() && !log_path.exists();
        if convert {
            legacy::convert(&old, &keys_path)?;
        }
        let sorted = Sorted::open(&keys_path)?;
        let compact_at = compact_at.max(1);
        let mut index = Index {
            keys_path,
            log_path,
            log: None,
            version: log::Version::V2,
            log_len: 0,
            generation: sorted.generation + 1,
            data_len: sorted.data_len,
            sorted,
            recent: HashSet::new(),
            compact_at,
            next_compact: compact_at,
            unsettled: false,
        };
        let found = if convert {
            index.begin(index.data_len)?;
            Found::Log
        } else if index.log_path.exists() {
            index.read_log()?
        } else {
            Found::NoLog
        };
        if old.exists() {
            legacy::set_aside(&old)?;
        }
        Ok((index, found))
    }

    /// The data length the records cover.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// How many ids are recorded.
    pub fn count(&self) -> Result<u64, String> {
        Ok(self.sorted.count + self.recent.len() as u64)
    }

    /// Which of `keys` are recorded already.
    pub fn contains(&self, keys: &[Key]) -> Result<Vec<bool>, String> {
        let mut block = Vec::new();
        keys.iter()
            .map(|key| {
                if self.recent.contains(key) {
                    return Ok(true);
                }
                self.sorted
                    .contains(key, &mut block)
                    .map_err(|e| fail(&self.keys_path, e))
            })
            .collect()
    }

    /// Whether the log is known to end with its last whole record (false
    /// after a record failed and cutting it back failed too).
    pub fn settled(&self) -> bool {
        !self.unsettled
    }

    /// Cuts the log back to its last whole record, synced, after a record
    /// failed: until then nothing is recorded, and the data of the failed
    /// batch must stay (the record may be on disk).
    pub fn settle(&mut self) -> Result<(), String> {
        if !self.unsettled {
            return Ok(());
        }
        let path = &self.log_path;
        let log = self.log.as_ref().ok_or_else(|| fail(path, "no log"))?;
        disk::set_len(log, path, self.log_len)
            .and_then(|()| disk::sync(log, path))
            .map_err(|e| fail(path, format!("cannot cut back a failed record: {e}")))?;
        self.unsettled = false;
        Ok(())
    }

    /// Records `keys` and the data length that now holds them, durably.
    pub fn record(&mut self, keys: &[Key], data_len: u64) -> Result<(), String> {
        self.settle()?;
        if self.log_len == 0 {
            // Starting the log over failed after a merge: again, first.
            self.restart_log()?;
        }
        let path = &self.log_path;
        let log = self.log.as_ref().ok_or_else(|| fail(path, "no log"))?;
        let record = log::record(self.version, keys, data_len);
        let written =
            disk::write_at(log, path, self.log_len, &record).and_then(|()| disk::sync(log, path));
        if let Err(error) = written {
            let error = fail(path, error);
            self.unsettled = true;
            let _ = self.settle();
            return Err(error);
        }
        self.log_len += record.len() as u64;
        self.recent.extend(keys.iter().copied());
        self.data_len = data_len;
        if self.recent.len() >= self.next_compact
            && let Err(error) = self.compact()
        {
            // The batch is recorded either way; the merge is tried again
            // after more batches (not after each, on a full disk).
            self.next_compact = self.recent.len() + (self.compact_at / 16).max(1);
            warn!("the sink's index could not merge its log: {error}");
        }
        Ok(())
    }

    /// Merges the log's hashes into a new sorted file, then starts the log
    /// over. The log stays as it is until the new file's name is synced.
    fn compact(&mut self) -> Result<(), String> {
        let mut fresh: Vec<Key> = self.recent.iter().copied().collect();
        fresh.sort_unstable();
        let aside = PathBuf::from(format!("{}.new", self.keys_path.display()));
        let merged = self
            .sorted
            .merge(
                fresh.into_iter().map(Ok),
                &aside,
                self.data_len,
                self.generation,
            )
            .and_then(|sorted| disk::rename(&aside, &self.keys_path).map(|()| sorted));
        let mut sorted = merged.map_err(|error| {
            // Never left behind (on a full disk, it would keep it full).
            let _ = disk::remove(&aside);
            fail(&aside, error)
        })?;
        disk::sync_folder(&self.keys_path)?;
        sorted.file = Some(File::open(&self.keys_path).map_err(|e| fail(&self.keys_path, e))?);
        self.sorted = sorted;
        self.generation += 1;
        self.restart_log()
    }
}

#[cfg(test)]
mod tests;
