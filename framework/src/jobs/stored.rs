//! A job's record as bytes, for a store: compact JSON, one row per message.

use serde::{Deserialize, Serialize};

use super::{
    event::Fraction,
    state::{Call, JobRecord, Message, Progress, Results},
};

/// The stored form.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// (stage, id, state, detail) with state `w` (waiting), `s`
    /// (scheduled, detail = the time it waits for, ms), `r`
    /// (retrying), `d` (done), `x` (dead, detail = reason) or `h` (held,
    /// detail = the body as JSON).
    m: Vec<(String, String, char, String)>,
    c: u64,
    s: Option<u64>,
    l: u64,
    /// The first message's event was folded in.
    #[serde(default = "yes")]
    r: bool,
    /// The producer's callback URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cb: Option<String>,
    /// The W3C traceparent of the first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tp: Option<String>,
    /// The callback: delivered, or failed attempts and the last reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call: Option<(u32, String)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    called: bool,
    /// Released gather stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    g: Vec<String>,
    /// The result's bodies: (id, body as JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    res: Vec<(String, String)>,
    /// The result was truncated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rt: bool,
    /// Progress: (stage, fraction, note, id, at).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    p: Vec<(String, f64, String, String, u64)>,
    /// When it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<u64>,
}

fn yes() -> bool {
    true
}

impl JobRecord {
    /// The record as bytes, for a store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            m: self
                .messages
                .iter()
                .map(|((stage, id), message)| {
                    let (state, detail) = match message {
                        Message::Waiting => ('w', String::new()),
                        Message::Scheduled(until) => ('s', until.to_string()),
                        Message::Retrying => ('r', String::new()),
                        Message::Held(item) => ('h', item.to_string()),
                        Message::Done => ('d', String::new()),
                        Message::Dead(reason) => ('x', reason.clone()),
                        Message::Cancelled => ('k', String::new()),
                    };
                    (stage.clone(), id.clone(), state, detail)
                })
                .collect(),
            c: self.created_ms,
            s: self.started_ms,
            l: self.last_ms,
            r: self.root,
            cb: self.callback.clone(),
            tp: self.trace.clone(),
            call: (self.call.failed > 0).then(|| {
                (
                    self.call.failed,
                    self.call.last_error.clone().unwrap_or_default(),
                )
            }),
            called: self.call.delivered,
            g: self.released.iter().cloned().collect(),
            res: self
                .results
                .items
                .iter()
                .map(|(id, item)| (id.clone(), item.to_string()))
                .collect(),
            rt: self.results.truncated,
            p: self
                .progress
                .iter()
                .map(|(stage, p)| {
                    (
                        stage.clone(),
                        p.fraction.0,
                        p.note.clone(),
                        p.id.clone(),
                        p.at_ms,
                    )
                })
                .collect(),
            x: self.cancelled_ms,
        };
        serde_json::to_vec(&stored).expect("a record is always JSON")
    }

    /// A record from [`JobRecord::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<JobRecord, String> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| format!("not a job record: {e}"))?;
        let mut messages = std::collections::BTreeMap::new();
        for (stage, id, state, detail) in stored.m {
            let message = match state {
                'r' => Message::Retrying,
                's' => Message::Scheduled(detail.parse().unwrap_or_default()),
                'd' => Message::Done,
                'x' => Message::Dead(detail),
                'k' => Message::Cancelled,
                'h' => Message::Held(
                    serde_json::from_str(&detail)
                        .map_err(|e| format!("a held message of the record: {e}"))?,
                ),
                _ => Message::Waiting,
            };
            messages.insert((stage, id), message);
        }
        let mut results = Results {
            truncated: stored.rt,
            ..Results::default()
        };
        for (id, item) in stored.res {
            results.bytes += item.len() as u64;
            let item =
                serde_json::from_str(&item).map_err(|e| format!("a result of the record: {e}"))?;
            results.items.insert(id, item);
        }
        let progress = stored
            .p
            .into_iter()
            .map(|(stage, fraction, note, id, at_ms)| {
                let report = Progress {
                    fraction: Fraction(fraction),
                    note,
                    id,
                    at_ms,
                };
                (stage, report)
            })
            .collect();
        Ok(JobRecord {
            messages,
            created_ms: stored.c,
            started_ms: stored.s,
            last_ms: stored.l,
            root: stored.r,
            callback: stored.cb,
            trace: stored.tp,
            call: Call {
                delivered: stored.called,
                failed: stored.call.as_ref().map_or(0, |(failed, _)| *failed),
                last_error: stored.call.map(|(_, reason)| reason),
            },
            released: stored.g.into_iter().collect(),
            results,
            progress,
            cancelled_ms: stored.x,
        })
    }
}
