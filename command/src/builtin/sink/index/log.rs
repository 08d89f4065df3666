//! The bytes of the index's log, `{path}.log` (pure: encoding and
//! reading; the file itself is [`super::Index`]'s).
//!
//! A header, then one record per batch:
//!
//! | version | header | record |
//! |---|---|---|
//! | `WLOG0002` (written now) | magic, generation, base length (u64 each), CRC32C of those 24 bytes (u32) | key count (u32), data length (u64), the keys (16 bytes each), CRC32C of all that (u32) |
//! | `WLOG0001` (read, and appended to until its next restart) | magic, generation | the same, with FNV-1a (u64) instead of CRC32C |
//!
//! The base length is the data length the log starts from (what the
//! sorted file covers, or what the sink adopted); a version 1 log starts
//! from the sorted file's. All numbers little-endian.
//!
//! A crash while appending leaves at most one record torn, at the end. A
//! damaged record that is not the last thing in the file (a valid record
//! follows it, or more bytes than one record can hold) is not a crash's
//! doing: [`read`] reports it rather than dropping what follows.

use super::Key;

/// Most keys in one record: a batch of the sink.
pub const MAX_KEYS: usize = 2048;

/// The format of a log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// FNV-1a checksums, no base length (the previous format).
    V1,
    /// CRC32C checksums and a base length.
    V2,
}

const MAGIC_V1: &[u8; 8] = b"WLOG0001";
const MAGIC_V2: &[u8; 8] = b"WLOG0002";

impl Version {
    /// The header's length.
    pub fn header_len(self) -> usize {
        match self {
            Version::V1 => 16,
            Version::V2 => 28,
        }
    }

    fn sum_len(self) -> usize {
        match self {
            Version::V1 => 8,
            Version::V2 => 4,
        }
    }

    fn sum(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Version::V1 => warren::message::fnv1a(bytes).to_le_bytes().to_vec(),
            Version::V2 => crc32c::crc32c(bytes).to_le_bytes().to_vec(),
        }
    }
}

/// A log's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its format.
    pub version: Version,
    /// Its generation: the sorted file that merged it has the same.
    pub generation: u64,
    /// The data length before its first record (`None`: version 1, the
    /// sorted file's).
    pub base_len: Option<u64>,
}

/// A version 2 header.
pub fn header(generation: u64, base_len: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(Version::V2.header_len());
    bytes.extend_from_slice(MAGIC_V2);
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(&base_len.to_le_bytes());
    let sum = Version::V2.sum(&bytes);
    bytes.extend_from_slice(&sum);
    bytes
}

/// What the start of a log file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// A whole header.
    Header(Header),
    /// Nothing, or a header cut short or damaged with nothing after it (a
    /// crash while the log was started over).
    Empty,
    /// Bytes that are not a log's.
    Damaged,
}

/// Reads the header at the start of `bytes`.
pub fn start(bytes: &[u8]) -> Start {
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let v2 = Version::V2.header_len();
    if bytes.len() >= 16 && &bytes[..8] == MAGIC_V1 {
        return Start::Header(Header {
            version: Version::V1,
            generation: field(8),
            base_len: None,
        });
    }
    if bytes.len() >= v2
        && &bytes[..8] == MAGIC_V2
        && Version::V2.sum(&bytes[..24]) == bytes[24..v2]
    {
        return Start::Header(Header {
            version: Version::V2,
            generation: field(8),
            base_len: Some(field(16)),
        });
    }
    if bytes.len() <= v2 {
        Start::Empty
    } else {
        Start::Damaged
    }
}

/// A record of `keys` and the data length that holds them.
pub fn record(version: Version, keys: &[Key], data_len: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12 + 16 * keys.len() + version.sum_len());
    bytes.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for key in keys {
        bytes.extend_from_slice(key);
    }
    let sum = version.sum(&bytes);
    bytes.extend_from_slice(&sum);
    bytes
}

/// The whole record at `at`: its keys, its data length and where the next
/// one starts.
fn record_at(version: Version, bytes: &[u8], at: usize) -> Option<(Vec<Key>, u64, usize)> {
    let n = u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize;
    let end = at.checked_add(12)?.checked_add(n.checked_mul(16)?)?;
    let body = bytes.get(at..end)?;
    let next = end.checked_add(version.sum_len())?;
    if version.sum(body) != bytes.get(end..next)? {
        return None;
    }
    let data_len = u64::from_le_bytes(body[4..12].try_into().ok()?);
    let keys = body[12..]
        .chunks_exact(16)
        .map(|k| k.try_into().expect("16 bytes"))
        .collect();
    Some((keys, data_len, next))
}

/// The records of a log, read from the end of its header.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Each record's keys and data length, in order.
    pub records: Vec<(Vec<Key>, u64)>,
    /// Where the whole records end.
    pub end: usize,
    /// Bytes after `end` that a crash tore (to be cut off).
    pub torn: bool,
}

/// A damaged record with more after it: `at` is its offset.
#[derive(Debug, PartialEq, Eq)]
pub struct Damaged {
    /// The damaged record's offset in the file.
    pub at: usize,
}

/// Reads every record of `bytes` from `from`.
pub fn read(version: Version, bytes: &[u8], from: usize) -> Result<Records, Damaged> {
    let mut read = Records {
        end: from,
        ..Records::default()
    };
    while read.end < bytes.len() {
        match record_at(version, bytes, read.end) {
            Some((keys, data_len, next)) => {
                read.records.push((keys, data_len));
                read.end = next;
            }
            None => break,
        }
    }
    if read.end == bytes.len() {
        return Ok(read);
    }
    let largest = 12 + 16 * MAX_KEYS + version.sum_len();
    let followed = || {
        (read.end + 1..bytes.len()).any(|at| {
            record_at(version, bytes, at).is_some_and(|(keys, _, _)| keys.len() <= MAX_KEYS)
        })
    };
    if bytes.len() - read.end > largest || followed() {
        return Err(Damaged { at: read.end });
    }
    read.torn = true;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> Vec<Key> {
        (0..n).map(|i| [i; 16]).collect()
    }

    #[test]
    fn records_read_back_in_both_versions() {
        for version in [Version::V1, Version::V2] {
            let mut bytes = vec![0u8; 5];
            bytes.extend(record(version, &keys(2), 30));
            bytes.extend(record(version, &[], 40));
            let read = read(version, &bytes, 5).unwrap();
            assert_eq!(read.records, vec![(keys(2), 30), (vec![], 40)]);
            assert_eq!((read.end, read.torn), (bytes.len(), false));
        }
    }

    #[test]
    fn version_2_sums_with_crc32c() {
        let bytes = record(Version::V2, &keys(1), 7);
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        assert_eq!(sum, crc32c::crc32c(body).to_le_bytes());
        // The check value of CRC32C (RFC 3720's polynomial).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn a_torn_last_record_is_dropped_at_every_cut() {
        let mut bytes = record(Version::V2, &keys(1), 10);
        let whole = bytes.len();
        bytes.extend(record(Version::V2, &keys(3), 20));
        for cut in whole + 1..bytes.len() {
            let read = read(Version::V2, &bytes[..cut], 0).unwrap();
            assert_eq!(read.records, vec![(keys(1), 10)], "cut at {cut}");
            assert_eq!((read.end, read.torn), (whole, true));
        }
        // Zeros where the record should be (a length written, not the data).
        let mut zeros = bytes[..whole].to_vec();
        zeros.resize(bytes.len(), 0);
        assert!(read(Version::V2, &zeros, 0).unwrap().torn);
    }

    #[test]
    fn a_damaged_record_before_others_is_reported_with_its_offset() {
        let mut bytes = record(Version::V2, &keys(1), 10);
        let second = bytes.len();
        bytes.extend(record(Version::V2, &keys(2), 20));
        bytes.extend(record(Version::V2, &keys(1), 30));
        bytes[second + 20] ^= 1;
        assert_eq!(read(Version::V2, &bytes, 0), Err(Damaged { at: second }));
        // Garbage longer than any record, after the last whole one.
        let mut long = bytes[..second].to_vec();
        long.extend(vec![7u8; 12 + 16 * MAX_KEYS + 5]);
        assert_eq!(read(Version::V2, &long, 0), Err(Damaged { at: second }));
    }

    #[test]
    fn headers_whole_torn_and_foreign() {
        let whole = header(3, 99);
        let expected = Header {
            version: Version::V2,
            generation: 3,
            base_len: Some(99),
        };
        assert_eq!(start(&whole), Start::Header(expected));
        for cut in 0..whole.len() {
            assert_eq!(start(&whole[..cut]), Start::Empty, "cut at {cut}");
        }
        let mut bad = whole;
        bad[20] ^= 1;
        assert_eq!(start(&bad), Start::Empty);
        bad.extend(record(Version::V2, &keys(1), 1));
        assert_eq!(start(&bad), Start::Damaged);
        let mut v1 = b"WLOG0001".to_vec();
        v1.extend(5u64.to_le_bytes());
        assert_eq!(
            start(&v1),
            Start::Header(Header {
                version: Version::V1,
                generation: 5,
                base_len: None
            })
        );
    }
}
