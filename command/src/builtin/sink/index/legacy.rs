//! An index of the format before the log and the sorted file: an embedded
//! database (`redb`), `{path}.index`. Converted on first start, then
//! renamed `{path}.index.imported`.

use std::path::{Path, PathBuf};

use super::{Key, sorted::Sorted};
use crate::builtin::sink::disk::{self, fail};

/// Converts an index of the previous format (a `redb` database of hashes,
/// read in key order, so already sorted) into a sorted file (generation
/// 0). The caller starts the log, then renames the database with
/// [`set_aside`]: a crash before that converts it again.
pub fn convert(old: &Path, keys_path: &Path) -> Result<(), String> {
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
    disk::rename(&aside, keys_path).map_err(|e| fail(keys_path, e))?;
    disk::sync_folder(keys_path)?;
    tracing::info!(
        "{}: {count} ids of an earlier version indexed",
        old.display()
    );
    Ok(())
}

/// Renames the converted database `.index.imported`.
pub fn set_aside(old: &Path) -> Result<(), String> {
    let imported = PathBuf::from(format!("{}.imported", old.display()));
    disk::rename(old, &imported).map_err(|e| fail(old, e))?;
    disk::sync_folder(old)
}
