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

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::Read,
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

    /// Reads the log's records into memory; drops a record torn by a
    /// crash, and a whole log already merged into the sorted file.
    fn read_log(&mut self) -> Result<Found, String> {
        let path = self.log_path.clone();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| fail(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| fail(&path, e))?;
        self.log = Some(file);
        let header = match log::start(&bytes) {
            log::Start::Damaged => {
                return Err(fail(
                    &path,
                    "not a sink log (its header is damaged); the sink does not start rather than guess what it recorded. Keep a copy; moving it aside starts the sink, which then keeps every line of the data file, counting those of unknown id as written",
                ));
            }
            // Emptied while starting over after a merge: `.keys` holds all.
            log::Start::Empty if self.sorted.file.is_some() => {
                self.restart_log()?;
                return Ok(Found::Log);
            }
            log::Start::Empty => return Ok(Found::NoLog),
            log::Start::Header(header) => header,
        };
        if header.generation < self.sorted.generation {
            self.restart_log()?; // merged whole
            return Ok(Found::Log);
        }
        let read = log::read(header.version, &bytes, header.version.header_len()).map_err(|damaged| {
            fail(
                &path,
                format!(
                    "the record at byte {} is damaged and more follows it: not the torn end a crash leaves. The sink does not start rather than drop the records after it and cut their lines off the data file. Keep a copy; moving it aside starts the sink, which then keeps every line of the data file, counting those of unknown id as written",
                    damaged.at
                ),
            )
        })?;
        self.version = header.version;
        self.generation = header.generation;
        self.data_len = header.base_len.unwrap_or(self.sorted.data_len);
        for (keys, data_len) in read.records {
            self.recent.extend(keys);
            self.data_len = data_len;
        }
        self.log_len = read.end as u64;
        if read.torn {
            warn!(
                "{}: dropped a record torn by a crash at byte {} (its batch was not acknowledged)",
                path.display(),
                read.end
            );
            self.unsettled = true;
            self.settle()?;
        }
        if header.generation == self.sorted.generation && !self.recent.is_empty() {
            // Merged (in part) already: `.keys` covers at least what it
            // says, and merging again keeps each hash once.
            self.data_len = self.data_len.max(self.sorted.data_len);
            if let Err(error) = self.compact() {
                warn!("the sink's index could not merge its log: {error}");
            }
        }
        Ok(Found::Log)
    }

    /// Starts the log when there was none ([`Found::NoLog`]): the data file
    /// holds `base_len` bytes, written. Created whole or not at all.
    pub fn begin(&mut self, base_len: u64) -> Result<(), String> {
        let aside = PathBuf::from(format!("{}.new", self.log_path.display()));
        let header = log::header(self.generation, base_len);
        let created = (|| {
            let file = disk::create(&aside)?;
            disk::write_at(&file, &aside, 0, &header)?;
            disk::sync(&file, &aside)?;
            disk::rename(&aside, &self.log_path)?;
            disk::sync_dir(&self.log_path)?;
            Ok::<_, std::io::Error>(file)
        })();
        let file = created.map_err(|e| {
            let _ = disk::remove(&aside);
            fail(&self.log_path, format!("cannot create it: {e}"))
        })?;
        self.log = Some(file);
        self.version = log::Version::V2;
        self.log_len = header.len() as u64;
        self.data_len = base_len;
        self.unsettled = false;
        Ok(())
    }

    /// Empties the log and gives it the current generation; until this
    /// succeeds, nothing is recorded.
    fn restart_log(&mut self) -> Result<(), String> {
        let path = &self.log_path;
        let log = self.log.as_ref().ok_or_else(|| fail(path, "no log"))?;
        let header = log::header(self.generation, self.data_len);
        self.log_len = 0;
        (|| {
            disk::set_len(log, path, 0)?;
            disk::write_at(log, path, 0, &header)?;
            disk::sync(log, path)
        })()
        .map_err(|e| fail(path, e))?;
        self.log_len = header.len() as u64;
        self.version = log::Version::V2;
        self.recent.clear();
        self.next_compact = self.compact_at;
        self.unsettled = false;
        Ok(())
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
