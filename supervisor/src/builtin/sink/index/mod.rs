//! The sink's record of what it wrote, on disk next to the data file: a
//! 16-byte hash (SHA-256, cut) of each message id written, and the length
//! of the data file that holds them. Memory does not grow with the number
//! of results, and starting on a file of millions of results reads the
//! hashes once (16 bytes each), never the data file.
//!
//! Two files:
//! - `{path}.log`: appended per batch: its hashes and the new data length,
//!   synced (one record, with a checksum, so that a record cut by a crash
//!   is recognised and dropped). Its hashes are also kept in memory.
//! - `{path}.keys`: every older hash, sorted. When the log holds
//!   [`COMPACT_AT`] hashes, they are merged into a new `.keys` (written
//!   aside, synced, renamed over the old one) and the log starts over.
//!   Looking up a hash that is not in the log reads one block of 256
//!   hashes, found through every 256th hash kept in memory.
//!
//! Any byte string is an id (newlines, quotes, bytes that were not UTF-8):
//! only its hash is kept. A batch is recorded after its data lines were
//! written and synced. After a crash between the two, the data file is
//! longer than the recorded length: the lines beyond it belong to messages
//! that were not acknowledged, and [`Index::open`] tells the sink to cut
//! them off. The log carries a generation number and `.keys` the
//! generation of the last log merged into it, so a crash between the
//! rename and the log's restart never counts a log twice.
//!
//! An index of the previous format (an embedded database, `{path}.index`)
//! is converted on first start and renamed `.index.imported`.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

mod sorted;

use super::disk;

pub use sorted::{Key, sync_dir};
use sorted::{Sorted, fail};

/// Hashes the log holds before they are merged into the sorted file: a
/// hash set of 2^19 slots (about 9 MB) holds 458,752 before it doubles,
/// and a batch (at most 2,048) may come on top of this.
pub const COMPACT_AT: usize = 456_704;

const LOG_MAGIC: &[u8; 8] = b"WLOG0001";
/// `.log`: magic, generation.
const LOG_HEADER: u64 = 16;

/// The key of `id`.
pub fn key(id: &str) -> Key {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The open index of one sink file.
pub struct Index {
    keys_path: PathBuf,
    log_path: PathBuf,
    sorted: Sorted,
    log: File,
    log_len: u64,
    generation: u64,
    /// The log's hashes.
    recent: HashSet<Key>,
    /// The data length of the last record.
    data_len: u64,
    compact_at: usize,
}

impl Index {
    /// Opens (or creates) the index of the data file `data`; returns it and
    /// the length of the data file that its records cover.
    pub fn open(data: &Path) -> Result<(Index, u64), String> {
        Index::open_compacting_at(data, COMPACT_AT)
    }

    /// [`Index::open`], merging the log into the sorted file once it holds
    /// `compact_at` hashes.
    pub fn open_compacting_at(data: &Path, compact_at: usize) -> Result<(Index, u64), String> {
        let keys_path = PathBuf::from(format!("{}.keys", data.display()));
        let log_path = PathBuf::from(format!("{}.log", data.display()));
        let old = PathBuf::from(format!("{}.index", data.display()));
        if old.exists() && !keys_path.exists() && !log_path.exists() {
            convert(&old, &keys_path)?;
        }
        let sorted = Sorted::open(&keys_path)?;
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(|e| fail(&log_path, e))?;
        let mut index = Index {
            keys_path,
            log_path,
            data_len: sorted.data_len,
            generation: sorted.generation + 1,
            sorted,
            log,
            log_len: 0,
            recent: HashSet::new(),
            compact_at: compact_at.max(1),
        };
        index.read_log()?;
        let data_len = index.data_len;
        Ok((index, data_len))
    }

    /// Reads the log's records into memory; drops a record cut by a crash,
    /// and a whole log already merged into the sorted file.
    fn read_log(&mut self) -> Result<(), String> {
        let path = self.log_path.clone();
        let mut bytes = Vec::new();
        (&self.log)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(&path, e))?;
        let generation = (bytes.len() >= LOG_HEADER as usize && &bytes[..8] == LOG_MAGIC)
            .then(|| u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")));
        match generation {
            Some(generation) if generation > self.sorted.generation => {
                self.generation = generation;
            }
            // Whole but not a log: its records cannot be read, and going on
            // without them would cut acknowledged lines off the data file.
            None if bytes.len() >= LOG_HEADER as usize => {
                return Err(fail(
                    &path,
                    "not a sink log (its first bytes are damaged); the sink does not start rather than cut the data file back to an older length",
                ));
            }
            // New, emptied by a crash while starting over, or merged
            // already: start it over.
            _ => return self.restart_log(),
        }
        let mut at = LOG_HEADER as usize;
        while let Some((keys, data_len, next)) = record_at(&bytes, at) {
            self.recent.extend(keys);
            self.data_len = data_len;
            at = next;
        }
        self.log_len = at as u64;
        if (at as u64) < bytes.len() as u64 {
            // A record cut by a crash: its batch was never acknowledged.
            disk::set_len(&self.log, &path, self.log_len).map_err(|e| fail(&path, e))?;
            disk::sync(&self.log, &path).map_err(|e| fail(&path, e))?;
        }
        Ok(())
    }

    /// Empties the log and gives it the next generation.
    fn restart_log(&mut self) -> Result<(), String> {
        let path = self.log_path.clone();
        let mut header = Vec::with_capacity(LOG_HEADER as usize);
        header.extend_from_slice(LOG_MAGIC);
        header.extend_from_slice(&self.generation.to_le_bytes());
        // Until the header is written, nothing may be appended (a record
        // after a missing header could not be read back).
        self.log_len = 0;
        (|| {
            disk::set_len(&self.log, &path, 0)?;
            disk::write_at(&self.log, &path, 0, &header)?;
            disk::sync(&self.log, &path)
        })()
        .map_err(|e| fail(&path, e))?;
        self.log_len = LOG_HEADER;
        self.recent.clear();
        Ok(())
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

    /// Records `keys` and the data length that now holds them, durably.
    pub fn record(&mut self, keys: &[Key], data_len: u64) -> Result<(), String> {
        if self.log_len == 0 {
            // Starting the log over failed after a merge: again, first.
            self.restart_log()?;
        }
        let mut record = Vec::with_capacity(20 + 16 * keys.len() + 8);
        record.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        record.extend_from_slice(&data_len.to_le_bytes());
        for key in keys {
            record.extend_from_slice(key);
        }
        let sum = checksum(&record);
        record.extend_from_slice(&sum.to_le_bytes());
        let path = self.log_path.clone();
        let written = disk::write_at(&self.log, &path, self.log_len, &record)
            .and_then(|()| disk::sync(&self.log, &path));
        if let Err(error) = written {
            // Nothing may follow a partial record.
            let _ = disk::set_len(&self.log, &path, self.log_len);
            return Err(fail(&path, error));
        }
        self.log_len += record.len() as u64;
        self.recent.extend(keys.iter().copied());
        self.data_len = data_len;
        if self.recent.len() >= self.compact_at {
            // The batch is recorded either way; a merge that failed (disk
            // full) is tried again after the next batch.
            if let Err(error) = self.compact() {
                tracing::warn!("the sink's index could not merge its log: {error}");
            }
        }
        Ok(())
    }

    /// Merges the log's hashes into a new sorted file, then starts the log
    /// over.
    fn compact(&mut self) -> Result<(), String> {
        let mut fresh: Vec<Key> = self.recent.iter().copied().collect();
        fresh.sort_unstable();
        let aside = PathBuf::from(format!("{}.new", self.keys_path.display()));
        let mut sorted = self
            .sorted
            .merge(
                fresh.into_iter().map(Ok),
                &aside,
                self.data_len,
                self.generation,
            )
            .map_err(|e| fail(&aside, e))?;
        disk::rename(&aside, &self.keys_path).map_err(|e| fail(&self.keys_path, e))?;
        sync_dir(&self.keys_path)?;
        sorted.file = Some(File::open(&self.keys_path).map_err(|e| fail(&self.keys_path, e))?);
        self.sorted = sorted;
        self.generation += 1;
        self.restart_log()
    }
}

/// The record at `at`: its hashes, its data length and where the next one
/// starts; `None` at the end or at a record cut short or damaged.
fn record_at(bytes: &[u8], at: usize) -> Option<(Vec<Key>, u64, usize)> {
    let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let end = at.checked_add(12 + 16 * n)?;
    let body = bytes.get(at..end)?;
    let sum = u64::from_le_bytes(bytes.get(end..end + 8)?.try_into().ok()?);
    if checksum(body) != sum {
        return None;
    }
    let data_len = u64::from_le_bytes(body[4..12].try_into().ok()?);
    let keys = body[12..]
        .chunks_exact(16)
        .map(|k| k.try_into().expect("16 bytes"))
        .collect();
    Some((keys, data_len, end + 8))
}

/// FNV-1a, 64 bits: tells a whole record from one cut or torn by a crash.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Converts an index of the previous format (a `redb` database of hashes,
/// read in key order, so already sorted) into a sorted file, and renames
/// it `.index.imported`.
fn convert(old: &Path, keys_path: &Path) -> Result<(), String> {
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
    const IDS: TableDefinition<'_, &[u8], ()> = TableDefinition::new("ids");
    const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
    let db = redb::Database::open(old).map_err(|e| fail(old, e))?;
    let read = db.begin_read().map_err(|e| fail(old, e))?;
    // A table that is not there is an index that never recorded a batch;
    // any other error stops the start (going on would cut the data file
    // back to nothing).
    let ids = match read.open_table(IDS) {
        Ok(ids) => Some(ids),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(fail(old, error)),
    };
    let data_len = match read.open_table(META) {
        Ok(meta) => meta
            .get("data_len")
            .map_err(|e| fail(old, e))?
            .map(|l| l.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(fail(old, error)),
    };
    let count = match &ids {
        Some(ids) => ids.len().map_err(|e| fail(old, e))?,
        None => 0,
    };
    let data_len = match data_len {
        Some(len) => len,
        None if count == 0 => 0,
        None => return Err(fail(old, "holds ids but not the data length they cover")),
    };
    // Read in key order: already sorted, streamed into the new file.
    let entries = match &ids {
        Some(ids) => Some(ids.iter().map_err(|e| fail(old, e))?),
        None => None,
    };
    let keys = entries.into_iter().flat_map(|entries| {
        entries.map(|entry| {
            let (key, _) = entry.map_err(std::io::Error::other)?;
            Key::try_from(key.value())
                .map_err(|_| std::io::Error::other("a hash not 16 bytes long"))
        })
    });
    let aside = PathBuf::from(format!("{}.new", keys_path.display()));
    Sorted::empty(0, 0)
        .merge(keys, &aside, data_len, 0)
        .map_err(|e| fail(old, format!("converting it into {}: {e}", aside.display())))?;
    std::fs::rename(&aside, keys_path).map_err(|e| fail(keys_path, e))?;
    let imported = PathBuf::from(format!("{}.imported", old.display()));
    std::fs::rename(old, &imported).map_err(|e| fail(old, e))?;
    sync_dir(keys_path)?;
    tracing::info!(
        "{}: {count} ids of an earlier version indexed",
        old.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
