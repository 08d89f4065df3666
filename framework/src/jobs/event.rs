//! One record of a tracked pipeline's job stream: a message sent, or the
//! outcome of one handling and the ids it emitted. Workers write it before
//! acknowledging the delivery it is about, so that a settled message always
//! has its record.

use serde::{Deserialize, Serialize};

/// What happened to one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum What {
    /// A producer sent it into the pipeline.
    Sent,
    /// It waits on the broker (the delay cascade) until `until_ms`, its
    /// `x-warren-not-before`.
    Scheduled {
        /// Not before this time (ms since the Unix epoch).
        until_ms: u64,
    },
    /// A handling finished it.
    Done,
    /// A handling failed; it waits for another attempt.
    Retrying {
        /// Why.
        reason: String,
    },
    /// It was dead-lettered.
    Dead {
        /// Why.
        reason: String,
    },
    /// A gather stage holds it until the rest of its job upstream settles.
    Held {
        /// The message's body.
        item: serde_json::Value,
    },
    /// The job keeper released the gather stage `stage` of the job: its held
    /// messages are done, and `emitted` lists the gathered message.
    Released,
    /// The job keeper POSTed the job's callback and got a 2xx.
    Called {
        /// The HTTP status.
        status: u16,
    },
    /// A POST of the job's callback failed; it is tried again later.
    CallFailed {
        /// Why.
        reason: String,
    },
    /// A handling at the stage `jobs.result` names finished it: done, and
    /// its body is part of the job's result.
    Result {
        /// The message's body.
        item: serde_json::Value,
        /// `jobs.result_max` when it was written: the bytes of result the
        /// job keeps at most.
        max: u64,
    },
    /// A handler's report of how far it got (about the job: the last
    /// report per stage is shown with it).
    Progress {
        /// From 0 to 1.
        fraction: Fraction,
        /// What it says, if anything.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
    /// The job was cancelled (`warren job --cancel`, `DELETE /v1/jobs/{id}`).
    Cancelled,
    /// A worker acknowledged the message without handling it: its job was
    /// cancelled.
    Skipped,
}

/// A fraction from 0 to 1, compared by its bits (so that events stay `Eq`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl PartialEq for Fraction {
    fn eq(&self, other: &Fraction) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Fraction {}

impl What {
    /// Whether the event is about the job rather than one of its messages
    /// (it adds no message to the job's record).
    pub fn is_about_the_job(&self) -> bool {
        matches!(
            self,
            What::Released
                | What::Called { .. }
                | What::CallFailed { .. }
                | What::Progress { .. }
                | What::Cancelled
        )
    }
}

/// A message emitted by a handling: its id and the stage it went to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emission {
    /// Stage.
    pub to: String,
    /// Id.
    pub id: String,
}

/// One event of the job stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The job (`x-warren-job`).
    pub job: String,
    /// The message.
    pub id: String,
    /// The stage the message is (or was sent) to.
    pub stage: String,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
    /// What the handling emitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emitted: Vec<Emission>,
    /// The URL its producer asked the job's callback to go to
    /// (`x-warren-callback`), on the events of the job's first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// The W3C `traceparent` the job's first message was sent with, on its
    /// `sent` event: the job's callback continues that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

impl Event {
    /// The event as the stream's message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event is always JSON")
    }

    /// An event from the stream's message body.
    pub fn decode(body: &[u8]) -> Result<Event, String> {
        serde_json::from_slice(body).map_err(|e| format!("not a job event: {e}"))
    }

    /// The events of a stream message: one event, or an array of them
    /// (workers write the events of many handlings in one message).
    pub fn decode_all(body: &[u8]) -> Result<Vec<Event>, String> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice(body).map_err(|e| format!("not job events: {e}")),
            _ => Event::decode(body).map(|event| vec![event]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_as_written() {
        let event = Event {
            job: "c0".into(),
            id: "c0.1".into(),
            stage: "grade".into(),
            what: What::Dead {
                reason: "404".into(),
            },
            emitted: vec![Emission {
                to: "results".into(),
                id: "c0.1.0".into(),
            }],
            callback: Some("http://app/done".into()),
            trace: None,
            at_ms: 7,
        };
        let body = event.encode();
        assert!(
            String::from_utf8_lossy(&body).contains(r#""outcome":"dead","reason":"404""#),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(Event::decode(&body).unwrap(), event);
        assert!(Event::decode(b"{}").is_err());
        assert_eq!(Event::decode_all(&body).unwrap(), vec![event.clone()]);
        let batch = serde_json::to_vec(&[&event, &event]).unwrap();
        assert_eq!(
            Event::decode_all(&batch).unwrap(),
            vec![event.clone(), event]
        );
        assert!(Event::decode_all(b"[{}]").is_err());
    }

    #[test]
    fn results_progress_and_cancels_read_back() {
        for what in [
            What::Result {
                item: serde_json::json!({"total": 3}),
                max: 65536,
            },
            What::Progress {
                fraction: Fraction(0.4),
                note: "page 4 of 10".into(),
            },
            What::Cancelled,
            What::Skipped,
        ] {
            let event = Event {
                job: "c0".into(),
                id: "c0".into(),
                stage: "lookup".into(),
                what,
                emitted: Vec::new(),
                callback: None,
                trace: None,
                at_ms: 1,
            };
            assert_eq!(Event::decode(&event.encode()).unwrap(), event);
        }
        let line = br#"{"job":"c0","id":"c0","stage":"a","outcome":"cancelled","at_ms":1}"#;
        assert_eq!(Event::decode(line).unwrap().what, What::Cancelled);
    }
}
