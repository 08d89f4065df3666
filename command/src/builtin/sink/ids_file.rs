//! The ids file of an early version of the sink, `{path}.ids` (one id per
//! line, in the order of the data lines): indexed on first start, then
//! renamed `{path}.ids.imported` (the rename synced). Importing again
//! after a crash is harmless: the ids are recorded again, and the length
//! recorded never goes back.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use tracing::info;

use super::{
    disk::{self, fail},
    index::{self, Index, MAX_KEYS},
};

/// The ids file of the data file `path`.
pub fn path_of(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.ids", path.display()))
}

/// Records the ids of the ids file (the index has a log) and the data
/// length that holds them, then renames the file.
pub fn import(path: &Path, data: &File, index: &mut Index) -> Result<(), String> {
    let ids_path = path_of(path);
    let file = File::open(&ids_path).map_err(|e| fail(&ids_path, e))?;
    let mut keys = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(&ids_path, e))?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // end, or a line cut by a crash
        }
        keys.push(index::key(&String::from_utf8_lossy(
            &line[..line.len() - 1],
        )));
    }
    let covered = offset_after_lines(data, keys.len()).map_err(|e| fail(path, e))?;
    let len = covered.max(index.data_len());
    if keys.is_empty() {
        index.record(&[], len)?;
    }
    for chunk in keys.chunks(MAX_KEYS) {
        index.record(chunk, len)?;
    }
    let imported = PathBuf::from(format!("{}.imported", ids_path.display()));
    disk::rename(&ids_path, &imported).map_err(|e| fail(&ids_path, e))?;
    disk::sync_folder(&ids_path)?;
    info!(
        "{}: {} ids of an earlier version indexed",
        ids_path.display(),
        keys.len()
    );
    Ok(())
}

/// The byte offset just after the first `lines` lines of the data file (or
/// its length, if it has fewer).
fn offset_after_lines(file: &File, lines: usize) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(0);
    }
    let mut reader = BufReader::new(file.try_clone()?);
    reader.seek(SeekFrom::Start(0))?;
    let mut offset = 0u64;
    let mut buffer = [0u8; 64 * 1024];
    let mut count = 0usize;
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
