//! Input of `warren send` and `warren run`: one JSON document per line,
//! read as a stream, so memory does not grow with the input and an endless
//! pipe (`tail -F log | warren send p.yaml ingest -`) is sent as its lines
//! arrive. A line that is not JSON (or lacks the id field) is reported with
//! its number and why.
//!
//! A file can be checked whole before anything is sent ([`check`], a first
//! streaming pass); a pipe cannot, so its bad lines are met while sending.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde::{
    Deserialize as _, Deserializer,
    de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::exit::BadInput;

/// Most bad lines listed; the rest are counted.
pub const SHOWN: usize = 20;

/// Lines handed to the sender at once, at most: the reader and the sender
/// wake each other once per chunk, not once per line.
const CHUNK: usize = 256;

/// Chunks read ahead of the sender (so at most 1,024 lines).
const READ_AHEAD: usize = 4;

/// Where lines come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl Source {
    /// `-` is standard input; anything else a file, which must exist and
    /// not be a directory.
    pub fn new(path: &Path) -> anyhow::Result<Source> {
        if path == Path::new("-") {
            return Ok(Source::Stdin);
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| BadInput(format!("{}: cannot read it: {e}", path.display())))?;
        if meta.is_dir() {
            return Err(BadInput(format!(
                "{}: is a directory, not an input file",
                path.display()
            ))
            .into());
        }
        Ok(Source::File(path.to_path_buf()))
    }

    /// The name in messages.
    pub fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Stdin => "stdin".into(),
        }
    }

    fn open(&self, from: u64) -> std::io::Result<BufReader<Box<dyn Read + Send>>> {
        Ok(match self {
            Source::File(path) => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(from))?;
                BufReader::with_capacity(64 * 1024, Box::new(file))
            }
            Source::Stdin => BufReader::new(Box::new(std::io::stdin())),
        })
    }
}

/// Where reading starts: after `offset` bytes, which held `lines` lines.
#[derive(Clone, Debug, Default)]
pub struct Start {
    /// Bytes already consumed.
    pub offset: u64,
    /// Lines they held.
    pub lines: usize,
    /// The SHA-256 state of those bytes (to continue the prefix digest).
    pub digest: Sha256,
}

/// One line read.
pub enum Item {
    /// A JSON document.
    Good(Line),
    /// Not one: its number and why.
    Bad(usize, String),
}

/// A good line.
pub struct Line {
    /// 1-based line number in the input.
    pub number: usize,
    /// The id taken from the id field, if one was asked for.
    pub id: Option<String>,
    /// The JSON text as written (trimmed).
    pub body: Vec<u8>,
    /// Bytes of the input up to the end of this line.
    pub end: u64,
    /// The SHA-256 state of those bytes.
    pub digest: Sha256,
}

impl Line {
    /// The id of a line of `warren run` without an id field: its number
    /// and a hash of its text. Stable when the input grows (lines appended
    /// keep the ids of those before), different when a line changes.
    pub fn derived_id(&self) -> String {
        let hash = Sha256::digest(&self.body);
        format!("{}.{}", crate::digest::hex(&hash[..6]), self.number)
    }
}

/// The lines of an input, as [`stream`] reads them.
pub struct Lines {
    chunks: mpsc::Receiver<Vec<std::io::Result<Item>>>,
    chunk: std::vec::IntoIter<std::io::Result<Item>>,
}

impl Lines {
    /// The next line; `None` at the end of the input.
    pub async fn recv(&mut self) -> Option<std::io::Result<Item>> {
        loop {
            if let Some(item) = self.chunk.next() {
                return Some(item);
            }
            self.chunk = self.chunks.recv().await?.into_iter();
        }
    }

    /// The next line if one was read already.
    pub fn try_recv(&mut self) -> Result<std::io::Result<Item>, mpsc::error::TryRecvError> {
        loop {
            if let Some(item) = self.chunk.next() {
                return Ok(item);
            }
            self.chunk = self.chunks.try_recv()?.into_iter();
        }
    }
}

/// Reads `source` on a thread of its own from `start`, handing lines over
/// as they are read: in chunks of up to [`CHUNK`] while more is at hand,
/// at once when the next read could wait (an endless pipe), at most
/// [`READ_AHEAD`] chunks ahead of the receiver. The lines end at the end of
/// the input; a read error ends them with `Err`.
pub fn stream(source: &Source, start: Start, id_field: Option<String>) -> Lines {
    let (chunks, receiver) = mpsc::channel(READ_AHEAD);
    let source = source.clone();
    std::thread::Builder::new()
        .name("warren-input".into())
        .spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            let result = (|| -> std::io::Result<()> {
                let mut reader = source.open(start.offset)?;
                let mut number = start.lines;
                let mut end = start.offset;
                let mut digest = start.digest;
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    let read = reader.read_until(b'\n', &mut raw)?;
                    if read == 0 {
                        return Ok(());
                    }
                    number += 1;
                    end += read as u64;
                    digest.update(&raw);
                    if let Some(item) = classify(&raw, number, end, &digest, id_field.as_deref()) {
                        chunk.push(Ok(item));
                    }
                    if (chunk.len() >= CHUNK || reader.buffer().is_empty())
                        && !chunk.is_empty()
                        && chunks
                            .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                            .is_err()
                    {
                        return Ok(());
                    }
                }
            })();
            if let Err(error) = result {
                chunk.push(Err(error));
            }
            if !chunk.is_empty() {
                let _ = chunks.blocking_send(chunk);
            }
        })
        .expect("start the input reader");
    Lines {
        chunks: receiver,
        chunk: Vec::new().into_iter(),
    }
}

/// A line as read (its newline included); `None` for a blank line.
fn classify(
    raw: &[u8],
    number: usize,
    end: u64,
    digest: &Sha256,
    id_field: Option<&str>,
) -> Option<Item> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Some(Item::Bad(number, "is not UTF-8 text".into()));
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(match check_line(text, id_field) {
        Ok(id) => Item::Good(Line {
            number,
            id,
            body: text.as_bytes().to_vec(),
            end,
            digest: digest.clone(),
        }),
        Err(reason) => Item::Bad(number, reason),
    })
}

/// What a first pass over a file found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Good lines.
    pub good: usize,
    /// Bad lines: the first [`SHOWN`] with their numbers and why.
    pub bad: Vec<(usize, String)>,
    /// All bad lines.
    pub bad_count: usize,
}

/// Reads a whole file once, checking every line, in constant memory.
pub fn check(path: &Path, id_field: Option<&str>) -> anyhow::Result<Checked> {
    let name = path.display();
    let file = File::open(path).map_err(|e| BadInput(format!("{name}: cannot read it: {e}")))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut checked = Checked::default();
    let mut raw = Vec::new();
    let mut number = 0;
    loop {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| BadInput(format!("{name}: cannot read it: {e}")))?;
        if read == 0 {
            return Ok(checked);
        }
        number += 1;
        let verdict = match std::str::from_utf8(&raw) {
            Err(_) => Some(Err("is not UTF-8 text".to_string())),
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(check_line(text.trim(), id_field).map(|_| ())),
        };
        match verdict {
            None => {}
            Some(Ok(())) => checked.good += 1,
            Some(Err(reason)) => {
                checked.bad_count += 1;
                if checked.bad.len() < SHOWN {
                    checked.bad.push((number, reason));
                }
            }
        }
    }
}

impl Checked {
    /// Fails (exit 65) when there are bad lines, unless they may be
    /// skipped; prints each bad line either way.
    pub fn refuse_bad_lines(&self, name: &str, skip_bad: bool) -> anyhow::Result<()> {
        if self.bad_count == 0 {
            return Ok(());
        }
        for (number, reason) in &self.bad {
            err!("{name}:{number}: {reason}");
        }
        if self.bad_count > self.bad.len() {
            err!("... and {} more bad lines", self.bad_count - self.bad.len());
        }
        if skip_bad {
            err!(
                "skipping {} bad lines (--skip-bad); sending the {} good ones",
                self.bad_count,
                self.good
            );
            return Ok(());
        }
        Err(BadInput(format!(
            "{name} has {} bad lines; nothing was sent. Fix them, or pass --skip-bad to send only the good lines",
            self.bad_count
        ))
        .into())
    }
}

/// The SHA-256 of the first `len` bytes of `path`, and the lines they hold
/// (to resume where an earlier run stopped); `None` if the file is shorter.
pub fn prefix(path: &Path, len: u64) -> std::io::Result<Option<Start>> {
    let file = File::open(path)?;
    let mut reader = BufReader::with_capacity(64 * 1024, file.take(len));
    let mut digest = Sha256::new();
    let mut lines = 0;
    let mut read_total = 0u64;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let read = reader.read_until(b'\n', &mut raw)?;
        if read == 0 {
            break;
        }
        read_total += read as u64;
        lines += usize::from(raw.last() == Some(&b'\n'));
        digest.update(&raw);
    }
    Ok((read_total == len).then_some(Start {
        offset: len,
        lines,
        digest,
    }))
}

/// Checks one non-empty line: JSON, and the id field when asked for.
/// Nothing but the id is kept: the line is read through once, without
/// building a document (most of the cost of a line, before).
fn check_line(text: &str, id_field: Option<&str>) -> Result<Option<String>, String> {
    let mut reader = serde_json::Deserializer::from_str(text);
    let found = match id_field {
        None => IgnoredAny::deserialize(&mut reader).map(|_| Found::Absent),
        Some(field) => FieldOf(field).deserialize(&mut reader),
    };
    let found = found
        .and_then(|found| reader.end().map(|()| found))
        .map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(field) = id_field else {
        return Ok(None);
    };
    let id = match found {
        Found::Text(id) => id,
        Found::Other => return Err(format!("the id field `{field}` is not text or a number")),
        Found::Absent => return Err(format!("has no `{field}` field (--id-field {field})")),
    };
    if id.is_empty() || id.len() > warren::message::MAX_ID {
        return Err(format!(
            "the id field `{field}` must be 1 to {} bytes long",
            warren::message::MAX_ID
        ));
    }
    Ok(Some(id))
}

/// What a line holds in its id field.
enum Found {
    /// Text, or a number as written.
    Text(String),
    /// Something else (an object, a list, a boolean, null).
    Other,
    /// No such field (or the line is not an object).
    Absent,
}

/// Reads a JSON document, keeping only the top-level field of this name.
struct FieldOf<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Found, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found::Absent;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.0 {
                found = match map.next_value::<Value>()? {
                    Value::String(text) => Found::Text(text),
                    Value::Number(n) => Found::Text(n.to_string()),
                    _ => Found::Other,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::Absent)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
        Ok(Found::Absent)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Found, E> {
        Ok(Found::Absent)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Found, E> {
        Ok(Found::Absent)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
        Ok(Found::Absent)
    }

    fn visit_str<E>(self, _: &str) -> Result<Found, E> {
        Ok(Found::Absent)
    }

    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(Found::Absent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "{\"id\": 1, \"name\": \"Acme\"}\n\n{\"id\": \"x\"\n[1,2]\n{\"name\": \"no id\"}\n\"just text\"\n";

    #[test]
    fn a_first_pass_checks_every_line_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, TEXT).unwrap();
        let checked = check(&path, Some("id")).unwrap();
        assert_eq!(checked.good, 1);
        let bad: Vec<usize> = checked.bad.iter().map(|(n, _)| *n).collect();
        assert_eq!(bad, vec![3, 4, 5, 6]);
        assert!(checked.bad[0].1.starts_with("not valid JSON"));
        assert!(checked.bad[2].1.contains("has no `id` field"));
        assert!(checked.refuse_bad_lines("in.jsonl", false).is_err());
        assert!(checked.refuse_bad_lines("in.jsonl", true).is_ok());
        assert_eq!(
            check(&path, None).unwrap().good,
            4,
            "any JSON document is a message"
        );
    }

    #[test]
    fn a_line_is_checked_without_building_it() {
        let id = |text: &str| check_line(text, Some("id"));
        assert_eq!(
            id(r#"{"a": [1, {"id": 2}], "id": "x\"y"}"#),
            Ok(Some("x\"y".into()))
        );
        assert_eq!(id(r#"{"id": 12.5}"#), Ok(Some("12.5".into())));
        assert_eq!(
            id(r#"{"id": 1, "id": 2}"#),
            Ok(Some("2".into())),
            "the last one, as JSON parsers do"
        );
        assert!(
            id(r#"{"a": {"id": 1}}"#)
                .unwrap_err()
                .contains("has no `id` field")
        );
        assert!(
            id(r#"{"id": {"a": 1}}"#)
                .unwrap_err()
                .contains("not text or a number")
        );
        assert!(
            id(r#"{"id": null}"#)
                .unwrap_err()
                .contains("not text or a number")
        );
        assert!(id(r#"{"id": ""}"#).unwrap_err().contains("1 to"));
        assert!(id("7").unwrap_err().contains("has no `id` field"));
        for bad in [
            r#"{"id": 1} x"#,
            r#"{"id": 1"#,
            r#"{"id": 1,}"#,
            "nul",
            "[1 2]",
        ] {
            assert!(id(bad).unwrap_err().starts_with("not valid JSON"), "{bad}");
            assert!(
                check_line(bad, None)
                    .unwrap_err()
                    .starts_with("not valid JSON"),
                "{bad}"
            );
        }
        assert_eq!(check_line(r#"[{"a": null}, 1.5e3, "x"]"#, None), Ok(None));
    }

    #[tokio::test]
    async fn streamed_lines_carry_numbers_offsets_and_a_resumable_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, TEXT).unwrap();
        let source = Source::new(&path).unwrap();
        let mut lines = stream(&source, Start::default(), None);
        let mut seen = Vec::new();
        while let Some(item) = lines.recv().await {
            match item.unwrap() {
                Item::Good(line) => seen.push((line.number, line.end, line.digest.finalize())),
                Item::Bad(number, _) => seen.push((number, 0, Default::default())),
            }
        }
        let numbers: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(numbers, vec![1, 3, 4, 5, 6]);
        // Resuming after line 4 continues the same digest and numbering.
        let (_, end, digest) = seen[2];
        let start = prefix(&path, end).unwrap().unwrap();
        assert_eq!(start.lines, 4);
        assert_eq!(start.digest.clone().finalize(), digest);
        let mut rest = stream(&source, start, None);
        let Some(Ok(Item::Good(next))) = rest.recv().await else {
            panic!("a line after 4")
        };
        assert_eq!(next.number, 5);
        assert_eq!(next.digest.finalize(), seen[3].2);
    }

    #[test]
    fn derived_ids_keep_their_number_and_follow_the_text() {
        let line = |number, body: &str| Line {
            number,
            id: None,
            body: body.as_bytes().to_vec(),
            end: 0,
            digest: Sha256::new(),
        };
        assert_eq!(line(7, "{}").derived_id(), line(7, "{}").derived_id());
        assert_ne!(line(7, "{}").derived_id(), line(8, "{}").derived_id());
        assert_ne!(line(7, "{}").derived_id(), line(7, "[]").derived_id());
        assert!(line(7, "{}").derived_id().ends_with(".7"));
    }
}
