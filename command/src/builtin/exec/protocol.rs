//! The JSON-lines protocol of `exec` stages (DESIGN.md, *exec stages*):
//! what warren writes on the program's stdin, and what it may answer on its
//! stdout. Pure: encoding and decoding only.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use warren::message::one_line;

/// Longest line the program may write: far above any message, low enough
/// that a program gone wrong cannot fill the worker's memory.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One message for the program.
#[derive(Serialize)]
pub struct Input<'a> {
    /// The message id; its answers name it.
    pub id: &'a str,
    /// The job it belongs to.
    pub job: &'a str,
    /// The stage.
    pub stage: &'a str,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// Milliseconds left before warren gives up on it.
    pub deadline_ms: u64,
    /// The message itself.
    pub body: &'a RawValue,
}

impl Input<'_> {
    /// The line, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("an input line encodes");
        line.push(b'\n');
        line
    }
}

/// What the program says about a message.
#[derive(Debug)]
pub enum Answer {
    /// A message to emit (to the outputs, or to `to`).
    Emit {
        /// The message it comes from.
        id: String,
        /// One output, or all when `None`.
        to: Option<String>,
        /// The message, as written.
        body: Box<RawValue>,
    },
    /// Done: acknowledge once the emits are confirmed.
    Done {
        /// The message.
        id: String,
    },
    /// Try again later (after `after`, or the stage's backoff).
    Retry {
        /// The message.
        id: String,
        /// Why.
        reason: String,
        /// At least this long.
        after: Option<Duration>,
    },
    /// It can never succeed: dead-letter it.
    Dead {
        /// The message.
        id: String,
        /// Why.
        reason: String,
    },
    /// How far the handling got (shown with the job).
    Progress {
        /// The message.
        id: String,
        /// From 0 to 1.
        fraction: f64,
        /// What it says.
        note: String,
    },
}

/// The line telling the program that the job of message `id` was
/// cancelled, newline included.
pub fn cancel_line(id: &str) -> Vec<u8> {
    let id = serde_json::to_string(id).expect("an id encodes");
    format!("{{\"id\":{id},\"cancel\":true}}\n").into_bytes()
}

impl Answer {
    /// The message the answer is about.
    pub fn id(&self) -> &str {
        match self {
            Answer::Emit { id, .. }
            | Answer::Done { id }
            | Answer::Retry { id, .. }
            | Answer::Dead { id, .. }
            | Answer::Progress { id, .. } => id,
        }
    }
}

/// An answer line as written: exactly one of `emit`, `done`, `retry`,
/// `dead`, and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    emit: Option<Box<RawValue>>,
    to: Option<String>,
    done: Option<bool>,
    retry: Option<String>,
    after: Option<String>,
    dead: Option<String>,
    progress: Option<f64>,
    note: Option<String>,
}

/// Reads one line of the program's stdout (without its newline), or says
/// why it is not the protocol.
pub fn decode(line: &[u8]) -> Result<Answer, String> {
    let text = std::str::from_utf8(line).map_err(|_| "it is not UTF-8 text".to_string())?;
    let line: Line = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!(
            "{}; an answer is {{\"id\", and one of \"emit\", \"done\", \"retry\", \"dead\"}}",
            one_line(&e.to_string(), 200)
        ),
        _ => format!("it is not JSON ({})", one_line(&e.to_string(), 200)),
    })?;
    let kinds = [
        line.emit.is_some(),
        line.done.is_some(),
        line.retry.is_some(),
        line.dead.is_some(),
        line.progress.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(format!(
            "the answer about `{}` must have exactly one of \"emit\", \"done\", \"retry\", \"dead\", \"progress\"",
            line.id
        ));
    }
    if line.to.is_some() && line.emit.is_none() {
        return Err("\"to\" goes with \"emit\" only".into());
    }
    if line.after.is_some() && line.retry.is_none() {
        return Err("\"after\" goes with \"retry\" only".into());
    }
    if line.note.is_some() && line.progress.is_none() {
        return Err("\"note\" goes with \"progress\" only".into());
    }
    if let Some(fraction) = line.progress {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(format!("\"progress\" is from 0 to 1, not {fraction}"));
        }
        return Ok(Answer::Progress {
            id: line.id,
            fraction,
            note: line.note.unwrap_or_default(),
        });
    }
    if let Some(body) = line.emit {
        return Ok(Answer::Emit {
            id: line.id,
            to: line.to,
            body,
        });
    }
    if let Some(done) = line.done {
        if !done {
            return Err("\"done\" is `true` or absent".into());
        }
        return Ok(Answer::Done { id: line.id });
    }
    if let Some(reason) = line.retry {
        let after = match line.after {
            Some(text) => {
                Some(warren::duration::parse(&text).map_err(|e| format!("\"after\": {e}"))?)
            }
            None => None,
        };
        return Ok(Answer::Retry {
            id: line.id,
            reason,
            after,
        });
    }
    Ok(Answer::Dead {
        id: line.id,
        reason: line.dead.unwrap_or_default(),
    })
}

/// The body of a message as the program gets it: compact JSON on one line.
pub fn one_line_json(body: &[u8]) -> Result<Box<RawValue>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8 JSON".to_string())?;
    let raw: Box<RawValue> = serde_json::from_str(text)
        .map_err(|e| format!("body is not valid JSON: {}", one_line(&e.to_string(), 300)))?;
    if raw.get().contains(['\n', '\r']) {
        let value: serde_json::Value = serde_json::from_str(raw.get()).expect("valid JSON");
        return serde_json::value::to_raw_value(&value).map_err(|e| e.to_string());
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_line_carries_the_body_as_written() {
        let body = RawValue::from_string(r#"{"company":"Acme","n":1}"#.into()).unwrap();
        let line = Input {
            id: "c0.3",
            job: "c0",
            stage: "lookup",
            attempt: 1,
            deadline_ms: 29870,
            body: &body,
        }
        .line();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"id\":\"c0.3\",\"job\":\"c0\",\"stage\":\"lookup\",\"attempt\":1,\"deadline_ms\":29870,\"body\":{\"company\":\"Acme\",\"n\":1}}\n"
        );
    }

    #[test]
    fn the_four_answers_are_read() {
        match decode(br#"{"id": "a", "emit": {"x": 1}, "to": "grade"}"#).unwrap() {
            Answer::Emit { id, to, body } => {
                assert_eq!((id.as_str(), to.as_deref()), ("a", Some("grade")));
                assert_eq!(body.get(), r#"{"x": 1}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(br#"{"id": "a", "done": true}"#).unwrap(),
            Answer::Done { id } if id == "a"
        ));
        assert!(matches!(
            decode(br#"{"id": "a", "retry": "busy", "after": "30s"}"#).unwrap(),
            Answer::Retry { id, reason, after }
                if id == "a" && reason == "busy" && after == Some(Duration::from_secs(30))
        ));
        assert!(matches!(
            decode(br#"{"id": "a", "dead": "no such company"}"#).unwrap(),
            Answer::Dead { id, reason } if id == "a" && reason == "no such company"
        ));
    }

    #[test]
    fn anything_else_is_refused_with_why() {
        for (line, why) in [
            (&b"hello"[..], "not JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (br#"{"done": true}"#, "missing field `id`"),
            (br#"{"id": "a"}"#, "exactly one of"),
            (
                br#"{"id": "a", "done": true, "dead": "x"}"#,
                "exactly one of",
            ),
            (
                br#"{"id": "a", "done": true, "extra": 1}"#,
                "unknown field `extra`",
            ),
            (
                br#"{"id": "a", "done": true, "to": "b"}"#,
                "\"to\" goes with \"emit\"",
            ),
            (
                br#"{"id": "a", "retry": "x", "after": "soon"}"#,
                "\"after\"",
            ),
            (br#"{"id": "a", "done": false}"#, "is `true` or absent"),
            (br#"{"id": 7, "done": true}"#, "invalid type"),
            (br#"{"id": "a", "progress": 1.5}"#, "from 0 to 1"),
            (
                br#"{"id": "a", "done": true, "note": "x"}"#,
                "\"note\" goes with \"progress\"",
            ),
        ] {
            let error = decode(line).unwrap_err();
            assert!(error.contains(why), "{line:?}: {error}");
        }
    }

    #[test]
    fn progress_is_an_answer_and_cancel_a_line_for_the_program() {
        assert!(matches!(
            decode(br#"{"id": "a", "progress": 0.4, "note": "page 4 of 10"}"#).unwrap(),
            Answer::Progress { id, fraction, note }
                if id == "a" && fraction == 0.4 && note == "page 4 of 10"
        ));
        assert!(matches!(
            decode(br#"{"id": "a", "progress": 1}"#).unwrap(),
            Answer::Progress { note, .. } if note.is_empty()
        ));
        assert_eq!(
            cancel_line("c0.\"3"),
            b"{\"id\":\"c0.\\\"3\",\"cancel\":true}\n"
        );
    }
}
