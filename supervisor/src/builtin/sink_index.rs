//! The sink's record of what it wrote, on disk: an embedded database
//! (`redb`) next to the data file, `{path}.index`, holding a 16-byte hash
//! (SHA-256, cut) of each message id written and the length of the data
//! file that holds them. Memory does not grow with the number of results,
//! and starting on a file of millions of results reads neither the data
//! file nor the ids.
//!
//! Any byte string is an id (newlines, quotes, bytes that were not UTF-8):
//! only its hash is kept. A batch is recorded in one transaction, after
//! its data lines were written and synced; the transaction is synced too
//! (redb's immediate durability). After a crash between the two, the data
//! file is longer than the recorded length: the lines beyond it belong to
//! messages that were not acknowledged, and [`Index::open`] tells the sink
//! to cut them off.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use sha2::{Digest, Sha256};

/// Hashes of the ids written.
const IDS: TableDefinition<'_, &[u8], ()> = TableDefinition::new("ids");
/// `data_len`: bytes of the data file that hold recorded messages.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The page cache of the index: lookups of ids not seen before touch few
/// pages, and the operating system caches the file anyway.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// An id's key in the index.
pub type Key = [u8; 16];

/// The key of `id`.
pub fn key(id: &str) -> Key {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The open index of one sink file.
pub struct Index {
    db: Database,
    path: PathBuf,
}

impl Index {
    /// Opens (or creates) the index of the data file `data`; returns it and
    /// the length of the data file that its records cover.
    pub fn open(data: &Path) -> Result<(Index, u64), String> {
        let path = PathBuf::from(format!("{}.index", data.display()));
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let index = Index { db, path };
        let len = index.recorded_len()?;
        Ok((index, len))
    }

    fn fail(&self, error: impl std::fmt::Display) -> String {
        format!("{}: {error}", self.path.display())
    }

    /// The data length of the last recorded batch (0 for a new index).
    fn recorded_len(&self) -> Result<u64, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let meta = match read.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(error) => return Err(self.fail(error)),
        };
        Ok(meta
            .get("data_len")
            .map_err(|e| self.fail(e))?
            .map_or(0, |len| len.value()))
    }

    /// How many ids are recorded.
    pub fn count(&self) -> Result<u64, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        match read.open_table(IDS) {
            Ok(ids) => ids.len().map_err(|e| self.fail(e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Which of `keys` are recorded already.
    pub fn contains(&self, keys: &[Key]) -> Result<Vec<bool>, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let ids = match read.open_table(IDS) {
            Ok(ids) => ids,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![false; keys.len()]),
            Err(error) => return Err(self.fail(error)),
        };
        keys.iter()
            .map(|key| {
                ids.get(key.as_slice())
                    .map(|found| found.is_some())
                    .map_err(|e| self.fail(e))
            })
            .collect()
    }

    /// Records `keys` and the data length that now holds them, durably.
    pub fn record(&self, keys: &[Key], data_len: u64) -> Result<(), String> {
        let write = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut ids = write.open_table(IDS).map_err(|e| self.fail(e))?;
            for key in keys {
                ids.insert(key.as_slice(), ()).map_err(|e| self.fail(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.fail(e))?;
            meta.insert("data_len", data_len)
                .map_err(|e| self.fail(e))?;
        }
        write.commit().map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_any_id_is_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("out.jsonl");
        let ids = ["plain", "two\nlines", "\"quoted\"", "\\xff\\xfe not utf-8"];
        let keys: Vec<Key> = ids.iter().map(|id| key(id)).collect();
        {
            let (index, len) = Index::open(&data).unwrap();
            assert_eq!(len, 0);
            assert_eq!(index.contains(&keys).unwrap(), vec![false; 4]);
            index.record(&keys[..2], 40).unwrap();
        }
        let (index, len) = Index::open(&data).unwrap();
        assert_eq!(len, 40);
        assert_eq!(index.count().unwrap(), 2);
        assert_eq!(
            index.contains(&keys).unwrap(),
            vec![true, true, false, false]
        );
        assert_ne!(key("a\nb"), key("a b"));
    }
}
