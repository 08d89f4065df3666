//! The sink index's sorted file, `{path}.keys` ([`super`]):
//! a header (magic, count, data length, the generation of the last log
//! merged), then every hash written, sorted. Every [`FENCE`]th hash is kept
//! in memory, so a lookup reads one block of hashes; a merge writes the
//! union of the file and a sorted batch of hashes into a new file.

use crate::builtin::sink::disk::{self, fail};
use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::Path,
};

/// An id's key in the index: its SHA-256, cut to 16 bytes.
pub type Key = [u8; 16];

/// Every `FENCE`th sorted hash is kept in memory: a lookup reads one block
/// of `FENCE` hashes (4 KiB).
pub const FENCE: u64 = 256;

const KEYS_MAGIC: &[u8; 8] = b"WKEYS001";
/// Magic, count, data length, generation merged.
const KEYS_HEADER: u64 = 32;

/// The sorted hashes: the file, how many, and every `FENCE`th.
pub(super) struct Sorted {
    /// The file (none before the first merge).
    pub(super) file: Option<File>,
    /// Hashes in it.
    pub(super) count: u64,
    fences: Vec<Key>,
    /// The data length its last merged record covered.
    pub(super) data_len: u64,
    /// The generation of the last log merged into it.
    pub(super) generation: u64,
}

impl Sorted {
    /// No hashes (yet), covering `data_len` bytes up to log `generation`.
    pub(super) fn empty(data_len: u64, generation: u64) -> Sorted {
        Sorted {
            file: None,
            count: 0,
            fences: Vec::new(),
            data_len,
            generation,
        }
    }

    /// Reads the sorted file's header and fences (an empty one if there is
    /// no file).
    pub(super) fn open(path: &Path) -> Result<Sorted, String> {
        let Ok(file) = File::open(path) else {
            return Ok(Sorted::empty(0, 0));
        };
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut header = [0u8; KEYS_HEADER as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| fail(path, format!("not a sink index ({e})")))?;
        if &header[..8] != KEYS_MAGIC {
            return Err(fail(path, "not a sink index"));
        }
        let field = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let (count, data_len, generation) = (field(8), field(16), field(24));
        let mut fences = Vec::with_capacity(count.div_ceil(FENCE) as usize);
        let mut key = [0u8; 16];
        for i in 0..count {
            reader
                .read_exact(&mut key)
                .map_err(|e| fail(path, format!("holds fewer hashes than it says ({e})")))?;
            if i.is_multiple_of(FENCE) {
                fences.push(key);
            }
        }
        Ok(Sorted {
            file: Some(file),
            count,
            fences,
            data_len,
            generation,
        })
    }

    /// Whether `key` is among the sorted hashes (`block`: a buffer).
    pub(super) fn contains(&self, key: &Key, block: &mut Vec<u8>) -> std::io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let after = self.fences.partition_point(|fence| fence <= key);
        if after == 0 {
            return Ok(false);
        }
        let first = (after as u64 - 1) * FENCE;
        let n = FENCE.min(self.count - first);
        block.resize((n * 16) as usize, 0);
        file.read_exact_at(block, KEYS_HEADER + first * 16)?;
        let (mut low, mut high) = (0, n as usize);
        while low < high {
            let middle = (low + high) / 2;
            match block[middle * 16..middle * 16 + 16].cmp(key.as_slice()) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Writes the union of these hashes and `fresh` (in ascending order) to
    /// `to`, synced; returns it as the new sorted hashes (without its
    /// file).
    pub(super) fn merge(
        &self,
        fresh: impl IntoIterator<Item = std::io::Result<Key>>,
        to: &Path,
        data_len: u64,
        generation: u64,
    ) -> std::io::Result<Sorted> {
        let out = disk::create(to)?;
        let mut writer = BufWriter::with_capacity(1 << 20, disk::Writer::new(&out, to, 0));
        writer.write_all(&[0u8; KEYS_HEADER as usize])?;
        let mut old = match &self.file {
            Some(file) => {
                let mut reader = BufReader::with_capacity(1 << 20, file.try_clone()?);
                reader.seek(SeekFrom::Start(KEYS_HEADER))?;
                Some(reader)
            }
            None => None,
        };
        let mut left = self.count;
        let mut next_old = || -> std::io::Result<Option<Key>> {
            match &mut old {
                Some(reader) if left > 0 => {
                    left -= 1;
                    let mut key = [0u8; 16];
                    reader.read_exact(&mut key)?;
                    Ok(Some(key))
                }
                _ => Ok(None),
            }
        };
        let mut fresh = fresh.into_iter();
        let mut next_fresh = || fresh.next().transpose();
        let mut merged = Sorted::empty(data_len, generation);
        let (mut a, mut b) = (next_old()?, next_fresh()?);
        // The smaller of the two heads goes first; equal heads once.
        while let Some(key) = match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        } {
            if merged.count.is_multiple_of(FENCE) {
                merged.fences.push(key);
            }
            merged.count += 1;
            writer.write_all(&key)?;
            if a == Some(key) {
                a = next_old()?;
            }
            if b == Some(key) {
                b = next_fresh()?;
            }
        }
        writer.flush()?;
        drop(writer);
        let mut header = Vec::with_capacity(KEYS_HEADER as usize);
        header.extend_from_slice(KEYS_MAGIC);
        header.extend_from_slice(&merged.count.to_le_bytes());
        header.extend_from_slice(&data_len.to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        disk::write_at(&out, to, 0, &header)?;
        disk::sync(&out, to)?;
        Ok(merged)
    }
}
