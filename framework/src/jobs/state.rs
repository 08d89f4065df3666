//! What became of a job, folded from its events (pure). A job's record is
//! a set of messages, each keyed by stage and id, and what is known of each:
//! handing the same event in twice, or events of a redelivery or a
//! duplicate handling, never changes the result (sets, not counters).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::event::{Event, Fraction, What};

/// One dead letter of a job: which message, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobDeadLetter {
    /// The message's id.
    pub id: String,
    /// The stage that dead-lettered it.
    pub stage: String,
    /// Why.
    pub reason: String,
}

/// Where one message of a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Message {
    /// Sent or emitted, no handling finished yet.
    Waiting,
    /// Waiting on the broker until this time (ms since the Unix epoch).
    Scheduled(u64),
    /// Its last handling failed; it waits for another attempt.
    Retrying,
    /// Held by a gather stage (its body), until the stage is released.
    Held(serde_json::Value),
    /// Handled.
    Done,
    /// Dead-lettered, with the reason.
    Dead(String),
    /// Acknowledged without being handled: its job was cancelled.
    Cancelled,
}

impl Message {
    /// Its kind (and a schedule's time), to tell whether an event changed
    /// it.
    fn mark(&self) -> (std::mem::Discriminant<Message>, u64) {
        let until = match self {
            Message::Scheduled(until) => *until,
            _ => 0,
        };
        (std::mem::discriminant(self), until)
    }

    /// Still to be handled (a held message is handled, but not released).
    fn is_open(&self) -> bool {
        matches!(
            self,
            Message::Waiting | Message::Scheduled(_) | Message::Retrying
        )
    }
}

/// What became of the job's completion callback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Call {
    /// A POST got a 2xx.
    pub delivered: bool,
    /// POSTs that failed.
    pub failed: u32,
    /// Why the last failed POST failed.
    pub last_error: Option<String>,
}

/// A handler's last report of how far it got, at one stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// From 0 to 1.
    pub fraction: Fraction,
    /// What it said, if anything.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// The message it was about.
    pub id: String,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// The bodies that reached the stage `jobs.result` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Results {
    /// Each message's body, by id.
    pub items: BTreeMap<String, serde_json::Value>,
    /// Their size as JSON.
    pub bytes: u64,
    /// A body was left out: it would have passed `jobs.result_max`.
    pub truncated: bool,
}

impl Results {
    /// Keeps `item` of message `id`, unless that passes `max` bytes.
    fn keep(&mut self, id: &str, item: &serde_json::Value, max: u64) {
        if self.items.contains_key(id) {
            return;
        }
        let size = item.to_string().len() as u64;
        if self.bytes + size > max {
            self.truncated = true;
        } else {
            self.bytes += size;
            self.items.insert(id.to_string(), item.clone());
        }
    }
}

/// Everything known of one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRecord {
    pub(super) messages: BTreeMap<(String, String), Message>,
    pub(super) created_ms: u64,
    pub(super) started_ms: Option<u64>,
    pub(super) last_ms: u64,
    /// An event of the job's first message (id = job id) was folded in:
    /// until then, what it emitted is not known, so the job is open.
    pub(super) root: bool,
    /// The callback URL its producer gave.
    pub(super) callback: Option<String>,
    /// The W3C traceparent its first message was sent with.
    pub(super) trace: Option<String>,
    pub(super) call: Call,
    /// Gather stages released for the job.
    pub(super) released: BTreeSet<String>,
    /// Its result (`jobs.result`).
    pub(super) results: Results,
    /// The last progress report of each stage.
    pub(super) progress: BTreeMap<String, Progress>,
    /// When it was cancelled (before it settled).
    pub(super) cancelled_ms: Option<u64>,
}

/// A job's state, as `warren job` and `GET /v1/jobs/{id}` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Never seen, or forgotten after `jobs.keep`.
    Unknown,
    /// Sent; no handling finished yet.
    Queued,
    /// Nothing of it is to be handled before a time still ahead (its
    /// `x-warren-not-before`).
    Scheduled,
    /// Some handlings finished, others wait.
    Running,
    /// A message waits for another attempt.
    Retrying,
    /// Every message handled, none dead-lettered.
    Done,
    /// Every message settled, some dead-lettered.
    Failed,
    /// Cancelled before it settled: what was still queued is dropped.
    Cancelled,
}

impl JobState {
    /// Done, failed or cancelled: nothing of the job is left to happen.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What a gather stage emits for a job once it is released.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gathered {
    /// The job.
    pub job: String,
    /// The bodies of the messages the stage holds, in id order.
    pub items: Vec<serde_json::Value>,
    /// The job's dead letters upstream of the stage (and at it).
    pub dead_letters: Vec<JobDeadLetter>,
}

impl JobRecord {
    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        if self.callback.is_none() {
            self.callback.clone_from(&event.callback);
        }
        if self.trace.is_none() {
            self.trace.clone_from(&event.trace);
        }
        match &event.what {
            What::Called { .. } => {
                self.call.delivered = true;
                return;
            }
            What::CallFailed { reason } => {
                self.call.failed += 1;
                self.call.last_error = Some(reason.clone());
                return;
            }
            What::Progress { fraction, note } => {
                let newer = self
                    .progress
                    .get(&event.stage)
                    .is_none_or(|last| last.at_ms <= event.at_ms);
                if newer {
                    let report = Progress {
                        fraction: *fraction,
                        note: note.clone(),
                        id: event.id.clone(),
                        at_ms: event.at_ms,
                    };
                    self.progress.insert(event.stage.clone(), report);
                }
                // A handler at work: the job is running.
                self.started_ms = Some(self.started_ms.map_or(event.at_ms, |s| s.min(event.at_ms)));
                return;
            }
            What::Cancelled => {
                // A job that settled before keeps what it became.
                if self.cancelled_ms.is_none() && !self.settled() {
                    self.cancelled_ms = Some(event.at_ms);
                    self.last_ms = self.last_ms.max(event.at_ms);
                }
                return;
            }
            _ => {}
        }
        // The record's time moves only with an event that changes it: a
        // copy handled again after the job settled (a message sent twice)
        // must not move its finish, or two boxes that folded the stream at
        // different moments would disagree.
        let before = self.footprint();
        let mut changed = false;
        if self.messages.is_empty() || event.at_ms < self.created_ms {
            self.created_ms = event.at_ms;
            changed = true;
        }
        if event.what == What::Released {
            self.released.insert(event.stage.clone());
            for ((stage, _), message) in self.messages.iter_mut() {
                if *stage == event.stage && matches!(message, Message::Held(_)) {
                    *message = Message::Done;
                    changed = true;
                }
            }
        } else {
            self.root |= event.id == event.job;
            // Only a worker that knows of the cancel skips a message: its
            // event may be read before the cancel's own.
            if event.what == What::Skipped && self.cancelled_ms.is_none() && !self.settled() {
                self.cancelled_ms = Some(event.at_ms);
            }
            let key = (event.stage.clone(), event.id.clone());
            let was = self.messages.get(&key).map(Message::mark);
            let now = self.messages.entry(key).or_insert(Message::Waiting);
            match &event.what {
                What::Done => *now = Message::Done,
                What::Result { item, max } => {
                    *now = Message::Done;
                    self.results.keep(&event.id, item, *max);
                }
                What::Skipped if matches!(now, Message::Waiting | Message::Retrying) => {
                    *now = Message::Cancelled;
                }
                What::Retrying { .. } if *now == Message::Waiting => *now = Message::Retrying,
                What::Scheduled { until_ms } => match now {
                    Message::Waiting => *now = Message::Scheduled(*until_ms),
                    Message::Scheduled(until) => *until = (*until).max(*until_ms),
                    _ => {}
                },
                What::Dead { reason } if *now != Message::Done => {
                    *now = Message::Dead(reason.clone());
                }
                // Held again after its stage was released (a dead letter
                // replayed, say): it is too late to gather, so it is done.
                What::Held { .. } if self.released.contains(&event.stage) => {
                    *now = Message::Done;
                }
                What::Held { item } if *now != Message::Done => {
                    *now = Message::Held(item.clone());
                    changed = true;
                }
                _ => {}
            }
            changed |= was != Some(now.mark());
            if !matches!(
                event.what,
                What::Sent | What::Skipped | What::Scheduled { .. }
            ) {
                self.started_ms = Some(self.started_ms.map_or(event.at_ms, |s| s.min(event.at_ms)));
            }
        }
        for emitted in &event.emitted {
            self.messages
                .entry((emitted.to.clone(), emitted.id.clone()))
                .or_insert(Message::Waiting);
        }
        if changed || self.footprint() != before {
            self.last_ms = self.last_ms.max(event.at_ms);
        }
    }

    /// What an event can change besides one message's state, cheaply
    /// compared.
    fn footprint(&self) -> (bool, usize, Option<u64>, usize, usize, bool, Option<u64>) {
        (
            self.root,
            self.messages.len(),
            self.started_ms,
            self.released.len(),
            self.results.items.len(),
            self.results.truncated,
            self.cancelled_ms,
        )
    }

    /// When the record last changed (ms since the Unix epoch).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// Whether the job was done or failed, whatever the time.
    fn settled(&self) -> bool {
        !self.messages.is_empty()
            && self.root
            && self
                .messages
                .values()
                .all(|m| !m.is_open() && !matches!(m, Message::Held(_)))
    }

    /// Whether the job was cancelled (before it settled).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled_ms.is_some()
    }

    /// The record's state now; `keep_ms` after its last change a record is
    /// forgotten (`unknown`).
    pub fn state(&self, now_ms: u64, keep_ms: u64) -> JobState {
        if self.messages.is_empty() || now_ms.saturating_sub(self.last_ms) > keep_ms {
            return JobState::Unknown;
        }
        if self.cancelled_ms.is_some() {
            return JobState::Cancelled;
        }
        let mut dead = false;
        let mut retrying = false;
        let mut open = !self.root;
        let mut scheduled = false;
        for message in self.messages.values() {
            match message {
                Message::Done | Message::Cancelled => {}
                Message::Dead(_) => dead = true,
                Message::Retrying => retrying = true,
                Message::Scheduled(until) if *until > now_ms => scheduled = true,
                Message::Waiting | Message::Scheduled(_) | Message::Held(_) => open = true,
            }
        }
        if scheduled && !open && !retrying {
            return JobState::Scheduled;
        }
        match (open || scheduled || retrying, retrying, dead) {
            (false, _, false) => JobState::Done,
            (false, _, true) => JobState::Failed,
            (true, true, _) => JobState::Retrying,
            (true, false, _) if self.started_ms.is_some() => JobState::Running,
            _ => JobState::Queued,
        }
    }

    /// The URL to POST the settled job to (its producer's, else
    /// `default`), while that is still to do: the job is settled, not
    /// forgotten, and no POST got a 2xx yet.
    pub fn callback_due<'a>(
        &'a self,
        default: Option<&'a str>,
        now_ms: u64,
        keep_ms: u64,
    ) -> Option<&'a str> {
        if self.call.delivered || !self.state(now_ms, keep_ms).is_settled() {
            return None;
        }
        self.callback.as_deref().or(default)
    }

    /// Whether gather stage `stage` was released for this job.
    pub fn released(&self, stage: &str) -> bool {
        self.released.contains(stage)
    }

    /// The messages gather stage `stage` holds for the job: each id with
    /// its body.
    pub fn held(&self, stage: &str) -> Vec<(String, serde_json::Value)> {
        self.messages
            .iter()
            .filter_map(|((at, id), message)| match message {
                Message::Held(body) if at == stage => Some((id.clone(), body.clone())),
                _ => None,
            })
            .collect()
    }

    /// The W3C traceparent the job's first message was sent with: its
    /// callback continues that trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.trace.as_deref()
    }

    /// Failed POSTs of the callback so far.
    pub fn callback_attempts(&self) -> u32 {
        self.call.failed
    }

    /// What gather stage `stage` emits for job `job`, once it is due: the
    /// job reached the stage or the stages `upstream` of it, nothing of it
    /// there is still to be handled, and the stage was not released yet. A
    /// job that failed upstream is released too, with its dead letters.
    pub fn gather_due(
        &self,
        job: &str,
        stage: &str,
        upstream: &BTreeSet<String>,
    ) -> Option<Gathered> {
        if !self.root || self.released.contains(stage) || self.cancelled_ms.is_some() {
            return None;
        }
        let mut reached = false;
        let mut items = Vec::new();
        let mut dead_letters = Vec::new();
        for ((at, id), message) in &self.messages {
            if at != stage && !upstream.contains(at) {
                continue;
            }
            reached = true;
            match message {
                open if open.is_open() => return None,
                Message::Held(item) if at == stage => items.push(item.clone()),
                // An upstream gather not released yet: more is to come.
                Message::Held(_) => return None,
                Message::Dead(reason) => dead_letters.push(JobDeadLetter {
                    id: id.clone(),
                    stage: at.clone(),
                    reason: reason.clone(),
                }),
                _ => {}
            }
        }
        reached.then(|| Gathered {
            job: job.to_string(),
            items,
            dead_letters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{event::Emission, view::JobView};

    const KEEP: u64 = 7 * 24 * 3600 * 1000;

    fn event(stage: &str, id: &str, what: What, emitted: &[(&str, &str)], at_ms: u64) -> Event {
        Event {
            job: "j".into(),
            id: id.into(),
            stage: stage.into(),
            what,
            emitted: emitted
                .iter()
                .map(|(to, id)| Emission {
                    to: to.to_string(),
                    id: id.to_string(),
                })
                .collect(),
            callback: None,
            trace: None,
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
    fn a_delayed_job_is_scheduled_until_its_time() {
        let scheduled = What::Scheduled { until_ms: 1000 };
        let mut record = fold(&[
            event("split", "j", What::Sent, &[], 10),
            event("split", "j", scheduled.clone(), &[], 10),
        ]);
        assert_eq!(record.state(10, KEEP), JobState::Scheduled);
        let view = record.view("j", 10, KEEP);
        assert_eq!(view.not_before_ms, Some(1000));
        assert_eq!(view.stages["split"].scheduled, 1);
        assert_eq!(view.started_ms, None);
        // Its time came: queued again until a worker handles it.
        assert_eq!(record.state(1000, KEEP), JobState::Queued);
        assert_eq!(record.view("j", 1000, KEEP).not_before_ms, None);
        // Folding the same event again changes nothing; a handling ends it.
        record.apply(&event("split", "j", scheduled, &[], 10));
        assert_eq!(record.state(10, KEEP), JobState::Scheduled);
        let stored = JobRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(stored, record);
        record.apply(&event("split", "j", What::Done, &[], 1001));
        assert_eq!(record.state(1001, KEEP), JobState::Done);
        // Scheduled in part while another message runs: running.
        let mixed = fold(&[
            event("split", "j", What::Done, &[("a", "j.0"), ("a", "j.1")], 20),
            event("a", "j.0", What::Scheduled { until_ms: 900 }, &[], 30),
        ]);
        assert_eq!(mixed.state(40, KEEP), JobState::Running);
    }

    /// A copy handled again after the job settled (the same message sent
    /// twice) changes nothing, so its finish stays where it was: a box
    /// that folded the stream before that copy's events agrees with one
    /// that folded it after.
    #[test]
    fn a_copy_handled_after_the_job_settled_does_not_move_its_finish() {
        let settled = [
            event("split", "j", What::Sent, &[], 10),
            event("split", "j", What::Done, &[("query", "j.0")], 20),
            event("query", "j.0", What::Done, &[], 30),
        ];
        let early = fold(&settled);
        assert_eq!(early.state(30, KEEP), JobState::Done);
        let mut late = fold(&settled);
        late.apply(&event("split", "j", What::Done, &[("query", "j.0")], 55));
        late.apply(&event("query", "j.0", What::Done, &[], 60));
        assert_eq!(late.view("j", 60, KEEP), early.view("j", 60, KEEP));
        assert_eq!(late.view("j", 60, KEEP).finished_ms, Some(30));
        // An event that does change it moves it.
        late.apply(&event(
            "query",
            "j.0",
            dead("gone"),
            &[("query", "j.1")],
            70,
        ));
        assert_eq!(late.last_ms(), 70);
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
            vec![JobDeadLetter {
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

    #[test]
    fn a_child_reported_before_the_first_message_keeps_the_job_open() {
        // Sent by a producer that wrote no `sent` event: until the first
        // message's own event, what it emitted is not known.
        let mut record = fold(&[event("query", "j.0", What::Done, &[], 1)]);
        assert_eq!(record.state(1, KEEP), JobState::Running);
        record.apply(&event("split", "j", What::Done, &[("query", "j.0")], 2));
        assert_eq!(record.state(2, KEEP), JobState::Done);
    }

    fn held(n: u64) -> What {
        What::Held {
            item: serde_json::json!({ "total": n }),
        }
    }

    fn upstream() -> BTreeSet<String> {
        ["split".to_string(), "query".to_string()].into()
    }

    #[test]
    fn a_gather_is_due_once_nothing_upstream_is_open_and_only_once() {
        let mut record = fold(&[
            event("split", "j", What::Sent, &[], 1),
            event(
                "split",
                "j",
                What::Done,
                &[("query", "j.0"), ("query", "j.1")],
                2,
            ),
            event("query", "j.0", What::Done, &[("sum", "j.0.0")], 3),
            event("sum", "j.0.0", held(5), &[], 4),
        ]);
        assert_eq!(
            record.gather_due("j", "sum", &upstream()),
            None,
            "j.1 is open"
        );
        assert_eq!(record.state(4, KEEP), JobState::Running);
        record.apply(&event("query", "j.1", retrying(), &[], 5));
        assert_eq!(
            record.gather_due("j", "sum", &upstream()),
            None,
            "j.1 retries"
        );
        record.apply(&event("query", "j.1", What::Done, &[("sum", "j.1.0")], 6));
        assert_eq!(
            record.gather_due("j", "sum", &upstream()),
            None,
            "j.1.0 on its way"
        );
        record.apply(&event("sum", "j.1.0", held(7), &[], 7));
        let due = record.gather_due("j", "sum", &upstream()).unwrap();
        assert_eq!(
            due.items,
            vec![
                serde_json::json!({"total": 5}),
                serde_json::json!({"total": 7})
            ]
        );
        assert!(due.dead_letters.is_empty());
        // Held messages keep the job open until the release.
        assert_eq!(record.state(7, KEEP), JobState::Running);
        assert!(!record.released("sum"));
        let mut released = event("sum", "j.gather", What::Released, &[("add", "j.gather")], 8);
        record.apply(&released);
        assert_eq!(
            record.gather_due("j", "sum", &upstream()),
            None,
            "released once"
        );
        assert!(record.released("sum"));
        assert_eq!(record.view("j", 8, KEEP).stages["sum"].done, 2);
        assert_eq!(record.state(8, KEEP), JobState::Running, "add is open");
        // A duplicate release and a redelivered item change nothing.
        released.at_ms = 9;
        record.apply(&released);
        record.apply(&event("sum", "j.0.0", held(5), &[], 9));
        assert_eq!(record.view("j", 9, KEEP).stages["sum"].done, 2);
        record.apply(&event("add", "j.gather", What::Done, &[], 10));
        assert_eq!(record.state(10, KEEP), JobState::Done);
        // A late item (a replayed dead letter) does not reopen the job.
        record.apply(&event("sum", "j.2.0", held(9), &[], 11));
        assert_eq!(record.state(11, KEEP), JobState::Done);
        assert_eq!(record.gather_due("j", "sum", &upstream()), None);
    }

    #[test]
    fn a_gather_whose_branches_failed_is_released_with_the_dead_letters() {
        let record = fold(&[
            event(
                "split",
                "j",
                What::Done,
                &[("query", "j.0"), ("query", "j.1")],
                1,
            ),
            event("query", "j.0", dead("no such database"), &[], 2),
            event("query", "j.1", dead("timeout"), &[], 3),
        ]);
        let due = record.gather_due("j", "sum", &upstream()).unwrap();
        assert!(due.items.is_empty());
        assert_eq!(
            due.dead_letters
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>(),
            ["j.0", "j.1"]
        );
        // Not before the first message is known, nor for a job that never
        // came near the stage.
        let orphan = fold(&[event("query", "j.0", dead("x"), &[], 1)]);
        assert_eq!(orphan.gather_due("j", "sum", &upstream()), None);
        let elsewhere = fold(&[event("other", "j", What::Done, &[], 1)]);
        assert_eq!(elsewhere.gather_due("j", "sum", &upstream()), None);
    }

    #[test]
    fn a_callback_is_due_when_settled_until_delivered() {
        let mut first = event("split", "j", What::Sent, &[], 1);
        first.callback = Some("http://app/done".into());
        let mut record = fold(&[first]);
        assert_eq!(record.callback_due(None, 1, KEEP), None, "not settled");
        record.apply(&event("split", "j", What::Done, &[], 2));
        assert_eq!(
            record.callback_due(Some("http://default"), 2, KEEP),
            Some("http://app/done")
        );
        let failed = |reason: &str| What::CallFailed {
            reason: reason.into(),
        };
        record.apply(&event("split", "j", failed("503"), &[], 3));
        record.apply(&event("split", "j", failed("refused"), &[], 4));
        assert_eq!(record.callback_attempts(), 2);
        let view = record.view("j", 4, KEEP);
        assert_eq!(
            view.finished_ms,
            Some(2),
            "callback events are not the job's changes"
        );
        let callback = view.callback.unwrap();
        assert_eq!(
            (callback.state, callback.last_error.as_deref()),
            ("failing", Some("refused"))
        );
        assert_eq!(record.callback_due(None, 4, KEEP), Some("http://app/done"));
        record.apply(&event("split", "j", What::Called { status: 200 }, &[], 5));
        assert_eq!(record.callback_due(None, 5, KEEP), None);
        assert_eq!(
            record.view("j", 5, KEEP).callback.unwrap().state,
            "delivered"
        );
        assert_eq!(
            record.view("j", 5, KEEP).callback.unwrap().failed_attempts,
            2
        );
        // Without the producer's URL, the pipeline's; none once forgotten.
        let plain = fold(&[event("split", "j", What::Done, &[], 1)]);
        assert_eq!(
            plain.callback_due(Some("http://default"), 1, KEEP),
            Some("http://default")
        );
        assert_eq!(plain.callback_due(None, 1, KEEP), None);
        assert_eq!(
            plain.callback_due(Some("http://default"), 2 + KEEP, KEEP),
            None
        );
        assert_eq!(plain.view("j", 1, KEEP).callback, None);
        assert_eq!(JobView::unknown("j").callback, None);
    }

    #[test]
    fn held_items_and_callbacks_read_back_from_bytes() {
        let mut first = event("split", "j", What::Done, &[("sum", "j.0")], 1);
        first.callback = Some("http://app/done".into());
        let record = fold(&[
            first,
            event("sum", "j.0", held(3), &[], 2),
            event("sum", "j.gather", What::Released, &[("add", "j.gather")], 3),
            event(
                "split",
                "j",
                What::CallFailed {
                    reason: "503".into(),
                },
                &[],
                4,
            ),
        ]);
        assert_eq!(JobRecord::from_bytes(&record.to_bytes()).unwrap(), record);
        let still = fold(&[
            event("split", "j", What::Done, &[("sum", "j.0")], 1),
            event("sum", "j.0", held(3), &[], 2),
        ]);
        assert_eq!(JobRecord::from_bytes(&still.to_bytes()).unwrap(), still);
    }

    #[test]
    fn the_messages_a_gather_holds_are_listed_with_their_bodies() {
        let record = fold(&[
            event("a", "j", What::Done, &[("g", "j.0"), ("g", "j.1")], 1),
            event(
                "g",
                "j.0",
                What::Held {
                    item: serde_json::json!(0),
                },
                &[],
                2,
            ),
            event("g", "j.1", What::Done, &[], 3),
        ]);
        assert_eq!(
            record.held("g"),
            [("j.0".to_string(), serde_json::json!(0))]
        );
        assert!(record.held("a").is_empty());
    }

    fn result(n: u64, max: u64) -> What {
        What::Result {
            item: serde_json::json!({ "n": n }),
            max,
        }
    }

    #[test]
    fn the_bodies_at_the_result_stage_are_the_result_up_to_its_bound() {
        let mut record = fold(&[
            event(
                "split",
                "j",
                What::Done,
                &[("out", "j.0"), ("out", "j.1"), ("out", "j.2")],
                1,
            ),
            event("out", "j.1", result(1, 20), &[], 2),
            event("out", "j.0", result(0, 20), &[], 3),
            // A redelivery keeps one copy.
            event("out", "j.0", result(0, 20), &[], 4),
        ]);
        let view = record.view("j", 4, KEEP);
        assert_eq!(view.state, JobState::Running);
        assert_eq!(
            view.result,
            Some(vec![
                serde_json::json!({"n": 0}),
                serde_json::json!({"n": 1})
            ])
        );
        assert!(!view.result_truncated);
        // {"n":2} (7 bytes) passes 20 with the 14 kept: left out, flagged.
        record.apply(&event("out", "j.2", result(2, 20), &[], 5));
        let view = record.view("j", 5, KEEP);
        assert_eq!(view.state, JobState::Done);
        assert_eq!(view.result.as_ref().map(Vec::len), Some(2));
        assert!(view.result_truncated);
        assert_eq!(view.stages["out"].done, 3);
        assert_eq!(JobRecord::from_bytes(&record.to_bytes()).unwrap(), record);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["result"][1]["n"], 1);
        assert_eq!(json["result_truncated"], true);
        // A job without a result stage shows none.
        let plain = fold(&[event("a", "j", What::Done, &[], 1)]);
        let json = serde_json::to_value(plain.view("j", 1, KEEP)).unwrap();
        assert!(json.get("result").is_none() && json.get("result_truncated").is_none());
    }

    fn progress(fraction: f64, note: &str) -> What {
        What::Progress {
            fraction: Fraction(fraction),
            note: note.into(),
        }
    }

    #[test]
    fn the_last_progress_report_of_each_stage_is_shown() {
        let mut record = fold(&[
            event("split", "j", What::Sent, &[], 1),
            event("split", "j", progress(0.5, "half"), &[], 3),
            // Read after a later one: older, so not shown.
            event("split", "j", progress(0.2, "early"), &[], 2),
            event("query", "j.0", progress(0.1, ""), &[], 4),
        ]);
        let view = record.view("j", 4, KEEP);
        assert_eq!(view.state, JobState::Running, "a handler reports progress");
        assert_eq!(view.started_ms, Some(2));
        assert_eq!(view.progress["split"].fraction, Fraction(0.5));
        assert_eq!(view.progress["split"].note, "half");
        assert_eq!(view.progress["query"].id, "j.0");
        assert_eq!(view.stages.len(), 1, "progress adds no message");
        record.apply(&event("split", "j", progress(0.9, "almost"), &[], 5));
        assert_eq!(record.view("j", 5, KEEP).progress["split"].note, "almost");
        assert_eq!(JobRecord::from_bytes(&record.to_bytes()).unwrap(), record);
    }

    #[test]
    fn a_cancelled_job_settles_as_cancelled_and_its_callback_is_due() {
        let mut first = event("split", "j", What::Sent, &[], 1);
        first.callback = Some("http://app/done".into());
        let mut record = fold(&[
            first,
            event(
                "split",
                "j",
                What::Done,
                &[("query", "j.0"), ("query", "j.1"), ("sum", "j.2")],
                2,
            ),
            event("sum", "j.2", held(1), &[], 3),
        ]);
        assert_eq!(record.callback_due(None, 3, KEEP), None);
        record.apply(&event("split", "j", What::Cancelled, &[], 4));
        assert!(record.is_cancelled());
        assert_eq!(record.state(4, KEEP), JobState::Cancelled);
        assert!(JobState::Cancelled.is_settled());
        assert_eq!(record.callback_due(None, 4, KEEP), Some("http://app/done"));
        assert_eq!(
            record.gather_due("j", "sum", &upstream()),
            None,
            "a gather releases nothing for a cancelled job"
        );
        // Its queued messages are skipped, a running one still finishes:
        // it stays cancelled, finished when it was cancelled.
        record.apply(&event("query", "j.0", What::Skipped, &[], 5));
        record.apply(&event("query", "j.1", What::Done, &[], 6));
        let view = record.view("j", 6, KEEP);
        assert_eq!(view.state, JobState::Cancelled);
        assert_eq!(view.finished_ms, Some(4));
        assert_eq!(view.stages["query"].cancelled, 1);
        assert_eq!(view.stages["query"].done, 1);
        assert_eq!(JobRecord::from_bytes(&record.to_bytes()).unwrap(), record);
        // A second cancel changes nothing.
        record.apply(&event("split", "j", What::Cancelled, &[], 7));
        assert_eq!(record.view("j", 7, KEEP).finished_ms, Some(4));
    }

    #[test]
    fn a_cancel_after_the_job_settled_changes_nothing() {
        let mut record = fold(&[event("a", "j", What::Done, &[], 1)]);
        record.apply(&event("a", "j", What::Cancelled, &[], 2));
        assert_eq!(record.state(2, KEEP), JobState::Done);
        assert!(!record.is_cancelled());
        // A cancel read before anything else of its job still holds.
        let mut early = fold(&[event("a", "j", What::Cancelled, &[], 1)]);
        assert_eq!(early.state(1, KEEP), JobState::Unknown);
        early.apply(&event("a", "j", What::Sent, &[], 2));
        assert_eq!(early.state(2, KEEP), JobState::Cancelled);
        // A skipped message is not a start.
        assert_eq!(early.view("j", 2, KEEP).started_ms, None);
        // A message skipped for a cancel read later: cancelled all the same.
        let mut skipped = fold(&[
            event("a", "j", What::Sent, &[], 1),
            event("a", "j", What::Skipped, &[], 2),
        ]);
        assert_eq!(skipped.state(2, KEEP), JobState::Cancelled);
        skipped.apply(&event("a", "j", What::Cancelled, &[], 3));
        assert_eq!(skipped.view("j", 3, KEEP).finished_ms, Some(2));
    }
}
