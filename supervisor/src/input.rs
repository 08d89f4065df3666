//! Input files of `warren send` and `warren run`: one JSON document per
//! line. Every line is checked before anything is sent; a bad line is
//! reported with its number and why.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use serde_json::Value;

use crate::exit::BadInput;

/// Most bad lines listed; the rest are counted.
const SHOWN: usize = 20;

/// A checked input, kept in memory (bodies are the lines as written).
pub struct Input {
    /// Where it came from, for messages (`-` for stdin).
    pub name: String,
    /// The good lines: (1-based line number, id from the id field, body).
    pub lines: Vec<Line>,
    /// The bad lines: (line number, reason).
    pub bad: Vec<(usize, String)>,
    /// The file's bytes, for a stable identity of the input.
    pub digest: String,
}

/// One good line.
pub struct Line {
    /// 1-based line number in the input.
    pub number: usize,
    /// The id taken from `--id-field`, if given.
    pub id: Option<String>,
    /// The JSON text as written.
    pub body: String,
}

impl Input {
    /// Reads and checks `path` (`-` is stdin).
    pub fn read(path: &Path, id_field: Option<&str>) -> anyhow::Result<Input> {
        let (name, mut reader): (String, Box<dyn Read>) = if path == Path::new("-") {
            ("stdin".into(), Box::new(std::io::stdin()))
        } else {
            let file = File::open(path)
                .map_err(|e| BadInput(format!("{}: cannot read it: {e}", path.display())))?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(BadInput(format!(
                    "{}: is a directory, not an input file",
                    path.display()
                ))
                .into());
            }
            (path.display().to_string(), Box::new(file))
        };
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| BadInput(format!("{name}: cannot read it: {e}")))?;
        let digest = crate::digest::hex(&bytes);
        let mut input = Input {
            name,
            lines: Vec::new(),
            bad: Vec::new(),
            digest,
        };
        for (index, raw) in BufReader::new(bytes.as_slice()).split(b'\n').enumerate() {
            let number = index + 1;
            let raw = raw?;
            let Ok(text) = String::from_utf8(raw) else {
                input.bad.push((number, "is not UTF-8 text".into()));
                continue;
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match check(text, id_field) {
                Ok(id) => input.lines.push(Line {
                    number,
                    id,
                    body: text.to_string(),
                }),
                Err(reason) => input.bad.push((number, reason)),
            }
        }
        Ok(input)
    }

    /// Fails (exit 65) when there are bad lines, unless they may be skipped;
    /// prints each bad line either way.
    pub fn refuse_bad_lines(&self, skip_bad: bool) -> anyhow::Result<()> {
        if self.bad.is_empty() {
            return Ok(());
        }
        for (number, reason) in self.bad.iter().take(SHOWN) {
            err!("{}:{number}: {reason}", self.name);
        }
        if self.bad.len() > SHOWN {
            err!("... and {} more bad lines", self.bad.len() - SHOWN);
        }
        if skip_bad {
            err!(
                "skipping {} bad lines (--skip-bad); sending the {} good ones",
                self.bad.len(),
                self.lines.len()
            );
            return Ok(());
        }
        Err(BadInput(format!(
            "{} has {} bad lines; nothing was sent. Fix them, or pass --skip-bad to send only the good lines",
            self.name,
            self.bad.len()
        ))
        .into())
    }
}

/// Checks one non-empty line: JSON, and the id field when asked for.
fn check(text: &str, id_field: Option<&str>) -> Result<Option<String>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(field) = id_field else {
        return Ok(None);
    };
    let id = match value.get(field) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(format!("the id field `{field}` is not text or a number")),
        None => return Err(format!("has no `{field}` field (--id-field {field})")),
    };
    if id.is_empty() || id.len() > warren::message::MAX_ID {
        return Err(format!(
            "the id field `{field}` must be 1 to {} bytes long",
            warren::message::MAX_ID
        ));
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_with_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"id\": 1, \"name\": \"Acme\"}\n\n{\"id\": \"x\"\n[1,2]\n{\"name\": \"no id\"}\n\"just text\"\n").unwrap();
        let input = Input::read(&path, Some("id")).unwrap();
        assert_eq!(
            input.lines.iter().map(|l| l.number).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(input.lines[0].id.as_deref(), Some("1"));
        let bad: Vec<usize> = input.bad.iter().map(|(n, _)| *n).collect();
        assert_eq!(bad, vec![3, 4, 5, 6]);
        assert!(input.bad[0].1.starts_with("not valid JSON"));
        assert!(input.bad[2].1.contains("has no `id` field"));
        assert!(input.refuse_bad_lines(false).is_err());
        assert!(input.refuse_bad_lines(true).is_ok());
        let plain = Input::read(&path, None).unwrap();
        assert_eq!(plain.lines.len(), 4, "any JSON document is a message");
    }
}
