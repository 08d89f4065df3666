//! A job as `warren job` and `GET /v1/jobs/{id}` show it, made from its
//! record (pure).

use std::collections::BTreeMap;

use serde::Serialize;

use super::state::{JobDeadLetter, JobRecord, JobState, Message, Progress};

/// Messages of one stage of a job, by where they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobStageCounts {
    /// Sent or emitted to the stage, not handled yet.
    pub waiting: u64,
    /// Waiting for another attempt.
    pub retrying: u64,
    /// Waiting on the broker for their `x-warren-not-before`.
    #[serde(skip_serializing_if = "is_zero")]
    pub scheduled: u64,
    /// Held by a gather stage until the rest of the job upstream settles.
    #[serde(skip_serializing_if = "is_zero")]
    pub held: u64,
    /// Handled.
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Acknowledged without being handled: the job was cancelled.
    #[serde(skip_serializing_if = "is_zero")]
    pub cancelled: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What became of a job's completion callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallbackView {
    /// `pending` (the job is not settled, or not POSTed yet), `delivered`
    /// (a 2xx came back) or `failing` (tried again later).
    pub state: &'static str,
    /// Failed POSTs so far.
    pub failed_attempts: u32,
    /// What the last failed POST got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job as it is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// The job's id (its first message's id).
    pub id: String,
    /// Where it stands.
    pub state: JobState,
    /// Per stage, in name order.
    pub stages: BTreeMap<String, JobStageCounts>,
    /// Its dead letters.
    pub dead_letters: Vec<JobDeadLetter>,
    /// When it was first seen (ms since the Unix epoch).
    pub created_ms: Option<u64>,
    /// When its first handling finished (or a handler first reported
    /// progress).
    pub started_ms: Option<u64>,
    /// When it settled.
    pub finished_ms: Option<u64>,
    /// The latest time a message of it waits for (`x-warren-not-before`),
    /// while one still waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// Its completion callback, when it has one (its producer gave a URL;
    /// `jobs.callback` shows once a POST was made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackView>,
    /// The bodies that reached the stage `jobs.result` names, in id order
    /// (once one did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Vec<serde_json::Value>>,
    /// Bodies were left out of `result`: they would have passed
    /// `jobs.result_max`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub result_truncated: bool,
    /// The last progress report of each stage that sent one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub progress: BTreeMap<String, Progress>,
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
            not_before_ms: None,
            callback: None,
            result: None,
            result_truncated: false,
            progress: BTreeMap::new(),
        }
    }
}

impl JobRecord {
    /// The job `id` as it is shown.
    pub fn view(&self, id: &str, now_ms: u64, keep_ms: u64) -> JobView {
        let state = self.state(now_ms, keep_ms);
        if state == JobState::Unknown {
            return JobView::unknown(id);
        }
        let mut stages: BTreeMap<String, JobStageCounts> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        let mut not_before_ms: Option<u64> = None;
        for ((stage, message_id), message) in &self.messages {
            let counts = stages.entry(stage.clone()).or_default();
            match message {
                Message::Waiting => counts.waiting += 1,
                Message::Scheduled(until) if *until > now_ms => {
                    counts.scheduled += 1;
                    not_before_ms = Some(not_before_ms.unwrap_or(0).max(*until));
                }
                Message::Scheduled(_) => counts.waiting += 1,
                Message::Retrying => counts.retrying += 1,
                Message::Held(_) => counts.held += 1,
                Message::Done => counts.done += 1,
                Message::Cancelled => counts.cancelled += 1,
                Message::Dead(reason) => {
                    counts.dead += 1;
                    dead_letters.push(JobDeadLetter {
                        id: message_id.clone(),
                        stage: stage.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let call = &self.call;
        let callback =
            (self.callback.is_some() || call.delivered || call.failed > 0).then(|| CallbackView {
                state: if call.delivered {
                    "delivered"
                } else if call.failed > 0 {
                    "failing"
                } else {
                    "pending"
                },
                failed_attempts: call.failed,
                last_error: call.last_error.clone(),
            });
        JobView {
            id: id.to_string(),
            state,
            stages,
            dead_letters,
            created_ms: Some(self.created_ms),
            started_ms: self.started_ms,
            finished_ms: match state {
                JobState::Cancelled => self.cancelled_ms,
                _ => state.is_settled().then_some(self.last_ms),
            },
            not_before_ms,
            callback,
            result: (!self.results.items.is_empty() || self.results.truncated)
                .then(|| self.results.items.values().cloned().collect()),
            result_truncated: self.results.truncated,
            progress: self.progress.clone(),
        }
    }
}
