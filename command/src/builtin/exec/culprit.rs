//! Who pays when the program stops (DESIGN.md, *exec stages*): a program
//! that exits, writes something that is not the protocol, or lets a
//! message pass its deadline is stopped with every message it held. Only
//! the message that caused it is charged an attempt. When it held several,
//! any of them may be that one: each is a suspect, handed back uncharged
//! to the stage's isolation queue ([`Failure::suspect`]), where messages
//! are handled one at a time, alone. A program that stops holding one
//! message stopped because of it: it is the culprit, charged as a crash
//! (retried, then dead-lettered with the program's last stderr lines). A
//! suspect never loops: alone, it is the culprit of the next stop.
//!
//! Pure: [`verdict`] reads what the program held when it stopped.

use std::collections::HashSet;

use warren::Failure;

/// Why the program was stopped, and what it held unfinished then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Why, with its last stderr lines.
    pub reason: String,
    /// The ids of the messages it held unfinished.
    pub held: HashSet<String>,
}

/// What the stop of the program means for one message it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It finished this message before it stopped: its last answer is on
    /// its way, and counts.
    Answered,
    /// It held this message alone: the message caused the stop. Charged.
    Culprit(String),
    /// It held this message with others: one of them caused the stop.
    /// Isolated, uncharged.
    Suspect(String),
}

impl Verdict {
    /// The handling's failure, unless the message was answered.
    pub fn failure(self) -> Option<Failure> {
        match self {
            Verdict::Answered => None,
            Verdict::Culprit(reason) => Some(Failure::crashed(reason)),
            Verdict::Suspect(reason) => Some(Failure::suspect(reason)),
        }
    }
}

/// The verdict on message `id` when the program stopped (`None`: it went
/// without saying why, as when the worker ends).
pub fn verdict(stopped: Option<&Stopped>, id: &str) -> Verdict {
    let Some(stopped) = stopped else {
        return Verdict::Culprit("the program stopped".into());
    };
    if !stopped.held.contains(id) {
        return Verdict::Answered;
    }
    match stopped.held.len() {
        1 => Verdict::Culprit(stopped.reason.clone()),
        held => Verdict::Suspect(format!(
            "{} (it held {held} messages: each is handled alone, its attempt not counted, to find the one that caused it)",
            stopped.reason
        )),
    }
}

#[cfg(test)]
mod tests {
    use warren::worker::Action;

    use super::*;

    fn stopped(held: &[&str]) -> Stopped {
        Stopped {
            reason: "the program exited with code 3; its last lines: boom".into(),
            held: held.iter().map(|id| id.to_string()).collect(),
        }
    }

    #[test]
    fn a_message_held_alone_is_the_culprit_with_the_last_lines() {
        let verdict = verdict(Some(&stopped(&["a"])), "a");
        assert_eq!(
            verdict,
            Verdict::Culprit("the program exited with code 3; its last lines: boom".into())
        );
        let failure = verdict.failure().expect("a failure");
        assert_eq!(failure.action(), Action::Retry);
        assert!(!failure.is_about_calls());
    }

    #[test]
    fn messages_held_with_others_are_suspects_isolated_uncharged() {
        let held = stopped(&["a", "b", "c"]);
        for id in ["a", "b", "c"] {
            let verdict = verdict(Some(&held), id);
            let Verdict::Suspect(reason) = &verdict else {
                panic!("{verdict:?}");
            };
            assert!(reason.starts_with("the program exited with code 3; its last lines: boom"));
            assert!(reason.contains("it held 3 messages"), "{reason}");
            assert_eq!(
                verdict.failure().expect("a failure").action(),
                Action::Suspect
            );
        }
    }

    #[test]
    fn a_message_answered_before_the_stop_is_not_failed() {
        assert_eq!(verdict(Some(&stopped(&["a", "b"])), "z"), Verdict::Answered);
        assert_eq!(verdict(Some(&stopped(&[])), "z"), Verdict::Answered);
        assert_eq!(Verdict::Answered.failure(), None);
    }

    #[test]
    fn a_stop_without_a_reason_charges_the_message() {
        assert_eq!(
            verdict(None, "a"),
            Verdict::Culprit("the program stopped".into())
        );
    }
}
