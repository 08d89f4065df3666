//! Peeks at a stage's waiting messages, and what workers make of them.
//!
//! RabbitMQ shows a message only by handing it out, and a message handed
//! back comes again flagged `redelivered`, which a worker reads as the
//! crash of the worker that held it (`worker/intake.rs`): it would isolate
//! the message and charge it an attempt. So a peek (`waiting.rs`) writes
//! what it holds to the pipeline's peek stream ([`names::peek_stream`],
//! kept [`KEPT`]) before it gives the messages back, and every worker
//! follows that stream (`control_stream.rs`): a redelivery that a peek
//! explains is a plain delivery.
//!
//! Which redelivery a peek explains: on a quorum queue, the one whose
//! count of returns ([`message::returns_of`]) is one more than the peek
//! saw, exactly. A classic queue counts nothing: there a worker takes the
//! first redelivery of a peeked id as the peek's, once. A worker that had
//! not read the peek yet when the message came back (it reads within
//! milliseconds; a peek gives back a second after writing) counts a crash,
//! as before; on a classic queue, a peeked message whose worker then
//! really crashes can pass once more unisolated through each other worker
//! that still holds the mark. Marks last [`KEPT`], so a stage paused while
//! it is peeked at keeps them until it resumes.
//!
//! [`names::peek_stream`]: crate::names::peek_stream

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::{control_stream::Apply, message};

/// How long the peek stream keeps a peek (its `x-max-age`), and how long
/// a worker keeps a peek's marks.
pub(crate) const KEPT: &str = "1D";
const KEPT_MS: u64 = 24 * 3600 * 1000;

/// One peek, as written on the peek stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peek {
    /// Its own id: a reader that reads the stream again applies it once.
    pub id: String,
    /// The stage whose queue it held.
    pub stage: String,
    /// The messages it held and gave back.
    pub held: Vec<Held>,
    /// When (milliseconds since the epoch).
    pub at_ms: u64,
}

/// A message a peek held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Its id (its own, or the one a worker gives it).
    pub id: String,
    /// Its count of returns when the peek held it (quorum queues).
    #[serde(default)]
    pub returns: Option<u64>,
}

impl Peek {
    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a peek is JSON")
    }

    /// A peek read back; `None` for anything else (markers).
    pub fn decode(body: &[u8]) -> Option<Peek> {
        serde_json::from_slice(body).ok()
    }
}

/// What a worker knows of the peeks: the marks of the messages they held.
/// Clones share the state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Peeks {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// (stage, id) -> (returns the peek saw, when it was peeked).
    marks: HashMap<(String, String), (Option<u64>, u64)>,
    /// The peeks applied, with when.
    applied: HashMap<String, u64>,
}

impl Peeks {
    /// Reads the peek stream's messages into these marks.
    pub fn applier(&self) -> Apply {
        let peeks = self.clone();
        Arc::new(move |body: &[u8]| {
            if let Some(peek) = Peek::decode(body) {
                peeks.note(peek, message::epoch_ms());
            }
        })
    }

    /// Remembers what `peek` held, unless it is older than [`KEPT`] or was
    /// applied before; forgets what is older than that.
    pub fn note(&self, peek: Peek, now_ms: u64) {
        let mut state = self.state.lock().expect("peeks");
        let fresh = |at: u64| now_ms.saturating_sub(at) < KEPT_MS;
        state.marks.retain(|_, (_, at)| fresh(*at));
        state.applied.retain(|_, at| fresh(*at));
        if !fresh(peek.at_ms) || state.applied.contains_key(&peek.id) {
            return;
        }
        state.applied.insert(peek.id, peek.at_ms);
        for held in peek.held {
            let key = (peek.stage.clone(), held.id);
            state.marks.insert(key, (held.returns, peek.at_ms));
        }
    }

    /// Whether a peek gave back the redelivery of message `id` of `stage`
    /// that counts `returns` ([`message::returns_of`]): then its
    /// `redelivered` flag says nothing of a crash.
    pub fn explains(&self, stage: &str, id: &str, returns: Option<u64>) -> bool {
        let mut state = self.state.lock().expect("peeks");
        let key = (stage.to_string(), id.to_string());
        let Some((seen, _)) = state.marks.get(&key) else {
            return false;
        };
        match returns {
            // Counted: exactly the return after the peek.
            Some(now) => now == seen.unwrap_or(0) + 1,
            // Not counted: the first redelivery this worker sees.
            None => {
                state.marks.remove(&key);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(id: &str, held: &[(&str, Option<u64>)], at_ms: u64) -> Peek {
        Peek {
            id: id.into(),
            stage: "grade".into(),
            held: held
                .iter()
                .map(|(id, returns)| Held {
                    id: id.to_string(),
                    returns: *returns,
                })
                .collect(),
            at_ms,
        }
    }

    #[test]
    fn an_uncounted_redelivery_is_explained_once() {
        let peeks = Peeks::default();
        peeks.note(peek("p1", &[("a", None)], 1000), 1000);
        assert!(!peeks.explains("grade", "b", None));
        assert!(!peeks.explains("lookup", "a", None));
        assert!(peeks.explains("grade", "a", None));
        // A second redelivery is a crash again.
        assert!(!peeks.explains("grade", "a", None));
    }

    #[test]
    fn a_counted_redelivery_is_explained_only_at_the_count_after_the_peek() {
        let peeks = Peeks::default();
        peeks.note(peek("p1", &[("a", Some(2)), ("b", None)], 1000), 1000);
        assert!(!peeks.explains("grade", "a", Some(2)));
        assert!(peeks.explains("grade", "a", Some(3)));
        // The same return seen by another delivery of it: still the peek's.
        assert!(peeks.explains("grade", "a", Some(3)));
        // A later crash is counted once more: not the peek's.
        assert!(!peeks.explains("grade", "a", Some(4)));
        // A message the peek saw uncounted, first handed back.
        assert!(peeks.explains("grade", "b", Some(1)));
    }

    #[test]
    fn a_peek_read_again_or_too_old_marks_nothing() {
        let peeks = Peeks::default();
        peeks.note(peek("p1", &[("a", None)], 1000), 1000);
        assert!(peeks.explains("grade", "a", None));
        // The stream read again from its start (a reader reconnected).
        peeks.note(peek("p1", &[("a", None)], 1000), 2000);
        assert!(!peeks.explains("grade", "a", None));
        // Older than a day when read.
        peeks.note(peek("p2", &[("c", None)], 1000), 1000 + KEPT_MS);
        assert!(!peeks.explains("grade", "c", None));
        // Marks older than a day are forgotten at the next note.
        peeks.note(peek("p3", &[("d", None)], 5000), 5000);
        peeks.note(peek("p4", &[], 5000 + KEPT_MS), 5000 + KEPT_MS);
        assert!(!peeks.explains("grade", "d", None));
    }

    #[test]
    fn a_peek_survives_its_encoding() {
        let p = peek("p1", &[("a", Some(1)), ("b", None)], 7);
        assert_eq!(Peek::decode(&p.encode()), Some(p));
        assert_eq!(Peek::decode(b"{}"), None);
    }
}
