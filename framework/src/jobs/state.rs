//! What became of a job, folded from its events (pure). A job's record is
//! a set of messages, each keyed by stage and id, and what is known of each:
//! handing the same event in twice, or events of a redelivery or a
//! duplicate handling, never changes the result (sets, not counters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{Event, What};

/// Where one message of a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Message {
    /// Sent or emitted, no handling finished yet.
    Waiting,
    /// Its last handling failed; it waits for another attempt.
    Retrying,
    /// Handled.
    Done,
    /// Dead-lettered, with the reason.
    Dead(String),
}

/// Everything known of one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRecord {
    messages: BTreeMap<(String, String), Message>,
    created_ms: u64,
    started_ms: Option<u64>,
    last_ms: u64,
}

/// A job's state, as `warren job` and `GET /v1/jobs/{id}` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Never seen, or forgotten after `jobs.keep`.
    Unknown,
    /// Sent; no handling finished yet.
    Queued,
    /// Some handlings finished, others wait.
    Running,
    /// A message waits for another attempt.
    Retrying,
    /// Every message handled, none dead-lettered.
    Done,
    /// Every message settled, some dead-lettered.
    Failed,
}

impl JobState {
    /// Done or failed: nothing of the job is left to happen.
    pub fn is_settled(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// Messages of one stage of a job, by where they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StageCounts {
    /// Sent or emitted to the stage, not handled yet.
    pub waiting: u64,
    /// Waiting for another attempt.
    pub retrying: u64,
    /// Handled.
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
}

/// One dead letter of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The message's id.
    pub id: String,
    /// The stage that dead-lettered it.
    pub stage: String,
    /// Why.
    pub reason: String,
}

/// A job as it is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// The job's id (its first message's id).
    pub id: String,
    /// Where it stands.
    pub state: JobState,
    /// Per stage, in name order.
    pub stages: BTreeMap<String, StageCounts>,
    /// Its dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// When it was first seen (ms since the Unix epoch).
    pub created_ms: Option<u64>,
    /// When its first handling finished.
    pub started_ms: Option<u64>,
    /// When it settled.
    pub finished_ms: Option<u64>,
}

impl JobRecord {
    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        if self.messages.is_empty() || event.at_ms < self.created_ms {
            self.created_ms = event.at_ms;
        }
        self.last_ms = self.last_ms.max(event.at_ms);
        let key = (event.stage.clone(), event.id.clone());
        let now = self.messages.entry(key).or_insert(Message::Waiting);
        match &event.what {
            What::Sent => {}
            What::Done => *now = Message::Done,
            What::Retrying { .. } => {
                if *now == Message::Waiting {
                    *now = Message::Retrying;
                }
            }
            What::Dead { reason } => {
                if *now != Message::Done {
                    *now = Message::Dead(reason.clone());
                }
            }
        }
        if !matches!(event.what, What::Sent) {
            self.started_ms = Some(self.started_ms.map_or(event.at_ms, |s| s.min(event.at_ms)));
        }
        for emitted in &event.emitted {
            self.messages
                .entry((emitted.to.clone(), emitted.id.clone()))
                .or_insert(Message::Waiting);
        }
    }

    /// When the record last changed (ms since the Unix epoch).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// The record's state now; `keep_ms` after its last change a record is
    /// forgotten (`unknown`).
    pub fn state(&self, now_ms: u64, keep_ms: u64) -> JobState {
        if self.messages.is_empty() || now_ms.saturating_sub(self.last_ms) > keep_ms {
            return JobState::Unknown;
        }
        let mut dead = false;
        let mut retrying = false;
        let mut open = false;
        for message in self.messages.values() {
            match message {
                Message::Done => {}
                Message::Dead(_) => dead = true,
                Message::Retrying => retrying = true,
                Message::Waiting => open = true,
            }
        }
        match (open || retrying, retrying, dead) {
            (false, _, false) => JobState::Done,
            (false, _, true) => JobState::Failed,
            (true, true, _) => JobState::Retrying,
            (true, false, _) if self.started_ms.is_some() => JobState::Running,
            _ => JobState::Queued,
        }
    }

    /// The job `id` as it is shown.
    pub fn view(&self, id: &str, now_ms: u64, keep_ms: u64) -> JobView {
        let state = self.state(now_ms, keep_ms);
        if state == JobState::Unknown {
            return JobView::unknown(id);
        }
        let mut stages: BTreeMap<String, StageCounts> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        for ((stage, message_id), message) in &self.messages {
            let counts = stages.entry(stage.clone()).or_default();
            match message {
                Message::Waiting => counts.waiting += 1,
                Message::Retrying => counts.retrying += 1,
                Message::Done => counts.done += 1,
                Message::Dead(reason) => {
                    counts.dead += 1;
                    dead_letters.push(DeadLetter {
                        id: message_id.clone(),
                        stage: stage.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        JobView {
            id: id.to_string(),
            state,
            stages,
            dead_letters,
            created_ms: Some(self.created_ms),
            started_ms: self.started_ms,
            finished_ms: state.is_settled().then_some(self.last_ms),
        }
    }
}

/// A record as it is stored: one row per message.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// (stage, id, state, reason) with state `w`, `r`, `d` (done) or `x`
    /// (dead).
    m: Vec<(String, String, char, String)>,
    c: u64,
    s: Option<u64>,
    l: u64,
}

impl JobRecord {
    /// The record as bytes, for a store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            m: self
                .messages
                .iter()
                .map(|((stage, id), message)| {
                    let (state, reason) = match message {
                        Message::Waiting => ('w', ""),
                        Message::Retrying => ('r', ""),
                        Message::Done => ('d', ""),
                        Message::Dead(reason) => ('x', reason.as_str()),
                    };
                    (stage.clone(), id.clone(), state, reason.to_string())
                })
                .collect(),
            c: self.created_ms,
            s: self.started_ms,
            l: self.last_ms,
        };
        serde_json::to_vec(&stored).expect("a record is always JSON")
    }

    /// A record from [`JobRecord::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<JobRecord, String> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| format!("not a job record: {e}"))?;
        let messages = stored
            .m
            .into_iter()
            .map(|(stage, id, state, reason)| {
                let message = match state {
                    'r' => Message::Retrying,
                    'd' => Message::Done,
                    'x' => Message::Dead(reason),
                    _ => Message::Waiting,
                };
                ((stage, id), message)
            })
            .collect();
        Ok(JobRecord {
            messages,
            created_ms: stored.c,
            started_ms: stored.s,
            last_ms: stored.l,
        })
    }
}

impl JobView {
    /// A job nothing is known of.
    pub fn unknown(id: &str) -> JobView {
        JobView {
            id: id.to_string(),
            state: JobState::Unknown,
            stages: BTreeMap::new(),
            dead_letters: Vec::new(),
            created_ms: None,
            started_ms: None,
            finished_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::event::Emitted;

    const KEEP: u64 = 7 * 24 * 3600 * 1000;

    fn event(stage: &str, id: &str, what: What, emitted: &[(&str, &str)], at_ms: u64) -> Event {
        Event {
            job: "j".into(),
            id: id.into(),
            stage: stage.into(),
            what,
            emitted: emitted
                .iter()
                .map(|(to, id)| Emitted {
                    to: to.to_string(),
                    id: id.to_string(),
                })
                .collect(),
            at_ms,
        }
    }

    fn dead(reason: &str) -> What {
        What::Dead {
            reason: reason.into(),
        }
    }

    fn retrying() -> What {
        What::Retrying {
            reason: "503".into(),
        }
    }

    fn fold(events: &[Event]) -> JobRecord {
        let mut record = JobRecord::default();
        for e in events {
            record.apply(e);
        }
        record
    }

    #[test]
    fn a_job_goes_through_every_state() {
        let mut record = JobRecord::default();
        assert_eq!(record.state(0, KEEP), JobState::Unknown);
        record.apply(&event("split", "j", What::Sent, &[], 10));
        assert_eq!(record.state(10, KEEP), JobState::Queued);
        record.apply(&event(
            "split",
            "j",
            What::Done,
            &[("query", "j.0"), ("query", "j.1")],
            20,
        ));
        assert_eq!(record.state(20, KEEP), JobState::Running);
        record.apply(&event("query", "j.0", retrying(), &[], 30));
        assert_eq!(record.state(30, KEEP), JobState::Retrying);
        record.apply(&event("query", "j.1", What::Done, &[], 40));
        record.apply(&event("query", "j.0", What::Done, &[], 50));
        assert_eq!(record.state(50, KEEP), JobState::Done);
        let view = record.view("j", 50, KEEP);
        assert_eq!(view.created_ms, Some(10));
        assert_eq!(view.started_ms, Some(20));
        assert_eq!(view.finished_ms, Some(50));
        assert_eq!(view.stages["query"].done, 2);
    }

    #[test]
    fn a_dead_letter_fails_the_job_once_the_rest_settled() {
        let record = fold(&[
            event(
                "split",
                "j",
                What::Done,
                &[("query", "j.0"), ("query", "j.1")],
                1,
            ),
            event("query", "j.0", dead("no such database"), &[], 2),
        ]);
        assert_eq!(
            record.state(2, KEEP),
            JobState::Running,
            "j.1 is still open"
        );
        let mut record = record;
        record.apply(&event("query", "j.1", What::Done, &[], 3));
        let view = record.view("j", 3, KEEP);
        assert_eq!(view.state, JobState::Failed);
        assert_eq!(
            view.dead_letters,
            vec![DeadLetter {
                id: "j.0".into(),
                stage: "query".into(),
                reason: "no such database".into()
            }]
        );
    }

    #[test]
    fn duplicates_and_redeliveries_change_nothing() {
        let events = [
            event("split", "j", What::Done, &[("query", "j.0")], 1),
            event("query", "j.0", What::Done, &[], 2),
        ];
        let once = fold(&events);
        // Everything twice, and a late failure of a duplicate handling.
        let mut twice = fold(&[events.clone(), events].concat());
        twice.apply(&event("query", "j.0", retrying(), &[], 3));
        twice.apply(&event("query", "j.0", dead("late"), &[], 4));
        assert_eq!(once.state(4, KEEP), JobState::Done);
        assert_eq!(twice.state(4, KEEP), JobState::Done);
        assert_eq!(
            once.view("j", 4, KEEP).stages,
            twice.view("j", 4, KEEP).stages
        );
    }

    #[test]
    fn a_child_settled_before_its_parent_reported_keeps_the_job_open() {
        // The child's event can arrive first: the parent is not settled yet.
        let record = fold(&[
            event("split", "j", What::Sent, &[], 1),
            event("query", "j.0", What::Done, &[], 2),
        ]);
        assert_eq!(record.state(2, KEEP), JobState::Running);
    }

    #[test]
    fn a_replayed_dead_letter_that_succeeds_makes_the_job_done() {
        let record = fold(&[
            event("query", "j", dead("outage"), &[], 1),
            event("query", "j", What::Done, &[], 2),
        ]);
        assert_eq!(record.state(2, KEEP), JobState::Done);
    }

    #[test]
    fn a_record_reads_back_from_its_bytes() {
        let record = fold(&[
            event(
                "split",
                "j",
                What::Done,
                &[("query", "j.0"), ("query", "j.1")],
                1,
            ),
            event("query", "j.0", retrying(), &[], 2),
            event("query", "j.1", dead("a \"quoted\" reason"), &[], 3),
        ]);
        assert_eq!(JobRecord::from_bytes(&record.to_bytes()).unwrap(), record);
        assert!(JobRecord::from_bytes(b"[]").is_err());
    }

    #[test]
    fn a_record_is_forgotten_after_keep() {
        let record = fold(&[event("a", "j", What::Done, &[], 1000)]);
        assert_eq!(record.state(1000 + KEEP, KEEP), JobState::Done);
        assert_eq!(record.state(1001 + KEEP, KEEP), JobState::Unknown);
        assert_eq!(record.view("j", 1001 + KEEP, KEEP), JobView::unknown("j"));
    }
}
