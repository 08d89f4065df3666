//! What a handler returns, and what then happens to the message.

use std::{fmt, time::Duration};

use crate::retry::RetryPolicy;

/// What a handler returns: `Ok(())` when the message is done.
pub type Outcome = Result<(), Failure>;

/// Why a handler did not finish a message, and what it asks for.
///
/// `?` on any error type gives a retryable failure:
///
/// ```
/// use warren::worker::{Context, Outcome, Failure};
///
/// async fn handle(n: u64, _ctx: Context) -> Outcome {
///     if n == 0 {
///         return Err(Failure::dead("zero cannot be graded"));
///     }
///     let _parsed: u32 = "42".parse()?; // a parse error would be retried
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    action: Action,
    reason: String,
    /// It says whether the calls the stage makes work (false for a crash
    /// of the code handling it, which is a bug met on one message).
    about_calls: bool,
}

/// What a failure asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Retry with the stage's backoff.
    Retry,
    /// Retry after at least this long (counts as an attempt).
    RetryAfter(Duration),
    /// Dead-letter now, without further attempts.
    DeadLetter,
    /// What the stage writes to or calls is down (a database that does not
    /// answer): the message goes back to its queue uncharged and the
    /// stage pauses at once, as when its circuit breaker opens.
    Unavailable,
    /// The code handling it crashed while it held this message with
    /// others (an `exec` program that died or hung): any of them may have
    /// caused it. It goes to the stage's isolation queue uncharged, to be
    /// handled alone; handled alone, the crash is its own (an attempt).
    Suspect,
    /// The code handling it never got the message (an `exec` program that
    /// was starting again, or a worker stopping): it goes back to its
    /// queue uncharged, and says nothing of the message nor of the calls.
    Untouched,
}

impl Failure {
    /// Retry with the stage's backoff.
    pub fn retry(reason: impl fmt::Display) -> Failure {
        Failure {
            action: Action::Retry,
            reason: reason.to_string(),
            about_calls: true,
        }
    }

    /// Retry with the stage's backoff: the code handling it crashed (a
    /// program that died, a panic). Like a panic, it does not feed the
    /// circuit breaker: it is a bug met on this message, not an outage.
    pub fn crashed(reason: impl fmt::Display) -> Failure {
        Failure {
            about_calls: false,
            ..Failure::retry(reason)
        }
    }

    /// Retry after at least `delay` (a rate limit's `Retry-After`, say).
    pub fn retry_after(delay: Duration, reason: impl fmt::Display) -> Failure {
        Failure {
            action: Action::RetryAfter(delay),
            reason: reason.to_string(),
            about_calls: true,
        }
    }

    /// Dead-letter now: the message can never succeed.
    pub fn dead(reason: impl fmt::Display) -> Failure {
        Failure {
            action: Action::DeadLetter,
            reason: reason.to_string(),
            about_calls: false,
        }
    }

    /// What the stage depends on is down or refuses it (a database that
    /// does not answer, refuses connections, or is read-only): nothing to
    /// do with this message. It goes back to its queue without counting an
    /// attempt, and the stage's circuit breaker opens at once: consumption
    /// pauses and one message probes later, given back uncharged too while
    /// the outage lasts. Never dead-letters anything.
    pub fn unavailable(reason: impl fmt::Display) -> Failure {
        Failure {
            action: Action::Unavailable,
            reason: reason.to_string(),
            about_calls: true,
        }
    }

    /// The code handling it crashed while it held this message and others
    /// (an `exec` program that died or missed a deadline with several
    /// messages in hand): this one may be innocent. It moves to the
    /// stage's isolation queue without counting an attempt and is handled
    /// there alone, where a crash is its own: a suspect failure of a
    /// message handled alone counts as [`Failure::crashed`] (see
    /// [`Failure::alone`]), so a message is never isolated for ever.
    pub fn suspect(reason: impl fmt::Display) -> Failure {
        Failure {
            action: Action::Suspect,
            reason: reason.to_string(),
            about_calls: false,
        }
    }

    /// The code handling it never got this message (an `exec` program that
    /// was starting again until the message's deadline, or a worker
    /// stopping): the message goes back to the tail of its queue without
    /// counting an attempt. Unlike [`Failure::unavailable`], the stage
    /// does not pause: it says nothing of the calls the stage makes.
    pub fn untouched(reason: impl fmt::Display) -> Failure {
        Failure {
            action: Action::Untouched,
            reason: reason.to_string(),
            about_calls: false,
        }
    }

    /// The failure of a message that was handled alone (in isolation):
    /// a suspect is the culprit, charged as a crash; others are unchanged.
    pub fn alone(self) -> Failure {
        match self.action {
            Action::Suspect => Failure::crashed(self.reason),
            _ => self,
        }
    }

    /// What the failure asks for.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The reason, as given.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// True when the failure says the calls the stage makes fail (an
    /// error, a timeout): what the circuit breaker counts. A dead letter or
    /// a crash says nothing about them.
    pub fn is_about_calls(&self) -> bool {
        self.about_calls
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(error: E) -> Failure {
        let mut reason = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure::retry(reason)
    }
}

/// What happens to a message after its handler ran: the one decision of
/// the path from delivery to acknowledgement (see ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done: acknowledged.
    Done,
    /// Published to a retry queue; it comes back as `attempt` after `delay`.
    Retry {
        /// The attempt it will carry.
        attempt: u32,
        /// How long it waits on the broker.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Published to the stage's dead-letter queue with `reason`.
    Dead {
        /// The one-line reason in `x-warren-error`.
        reason: String,
    },
    /// Given back to the stage queue unchanged, its attempt not counted:
    /// the calls it makes fail for every message (the circuit breaker
    /// opened, [`Failure::unavailable`]), or the code handling it never got
    /// it ([`Failure::untouched`]); neither says anything about this
    /// message.
    GiveBack {
        /// Why.
        reason: String,
    },
    /// Moved to the stage's isolation queue unchanged, its attempt not
    /// counted, to be handled alone: the code handling it crashed while it
    /// held others too ([`Failure::suspect`]).
    Isolate {
        /// Why.
        reason: String,
    },
}

impl Disposition {
    /// What became of the handling, in one word (`done`, `retried`, `dead`,
    /// `given back`, `isolated`), and why when it was not done.
    pub fn outcome(&self) -> (&'static str, Option<&str>) {
        match self {
            Disposition::Done => ("done", None),
            Disposition::Retry { reason, .. } => ("retried", Some(reason)),
            Disposition::Dead { reason } => ("dead", Some(reason)),
            Disposition::GiveBack { reason } => ("given back", Some(reason)),
            Disposition::Isolate { reason } => ("isolated", Some(reason)),
        }
    }
}

/// The disposition of a message after attempt `attempt` ended with
/// `outcome`, under `policy`.
pub fn decide(outcome: Outcome, attempt: u32, policy: &RetryPolicy) -> Disposition {
    let failure = match outcome {
        Ok(()) => return Disposition::Done,
        Err(failure) => failure,
    };
    let requested = match failure.action {
        Action::DeadLetter => {
            return Disposition::Dead {
                reason: failure.reason,
            };
        }
        Action::Unavailable | Action::Untouched => {
            return Disposition::GiveBack {
                reason: failure.reason,
            };
        }
        Action::Suspect => {
            return Disposition::Isolate {
                reason: failure.reason,
            };
        }
        Action::Retry => None,
        Action::RetryAfter(delay) => Some(delay),
    };
    match policy.delay_after(attempt, requested) {
        Some(delay) => Disposition::Retry {
            attempt: attempt + 1,
            delay,
            reason: failure.reason,
        },
        None => Disposition::Dead {
            reason: format!(
                "attempt {attempt} of {} failed: {}",
                policy.attempts, failure.reason
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(10)],
        }
    }

    #[test]
    fn success_is_done() {
        assert_eq!(decide(Ok(()), 1, &policy()), Disposition::Done);
    }

    #[test]
    fn failures_retry_with_backoff_then_die_with_the_last_reason() {
        let retry = decide(Err(Failure::retry("boom")), 1, &policy());
        assert_eq!(
            retry,
            Disposition::Retry {
                attempt: 2,
                delay: Duration::from_secs(1),
                reason: "boom".into()
            }
        );
        let retry = decide(Err(Failure::retry("boom")), 2, &policy());
        assert!(
            matches!(retry, Disposition::Retry { attempt: 3, delay, .. } if delay == Duration::from_secs(10))
        );
        let dead = decide(Err(Failure::retry("boom")), 3, &policy());
        assert_eq!(
            dead,
            Disposition::Dead {
                reason: "attempt 3 of 3 failed: boom".into()
            }
        );
    }

    #[test]
    fn explicit_requests_are_honoured() {
        let dead = decide(Err(Failure::dead("poison")), 1, &policy());
        assert_eq!(
            dead,
            Disposition::Dead {
                reason: "poison".into()
            }
        );
        let later = decide(
            Err(Failure::retry_after(Duration::from_secs(7), "429")),
            1,
            &policy(),
        );
        assert!(
            matches!(later, Disposition::Retry { delay, .. } if delay == Duration::from_secs(7))
        );
    }

    #[test]
    fn an_unavailable_dependency_gives_the_message_back_on_any_attempt() {
        for attempt in [1, 3, 7] {
            assert_eq!(
                decide(Err(Failure::unavailable("db down")), attempt, &policy()),
                Disposition::GiveBack {
                    reason: "db down".into()
                }
            );
        }
    }

    #[test]
    fn an_untouched_message_goes_back_uncharged_on_any_attempt() {
        for attempt in [1, 3, 7] {
            assert_eq!(
                decide(
                    Err(Failure::untouched("program starting")),
                    attempt,
                    &policy()
                ),
                Disposition::GiveBack {
                    reason: "program starting".into()
                }
            );
        }
        // Neither the breaker nor isolation hears of it.
        assert!(!Failure::untouched("x").is_about_calls());
        assert_eq!(Failure::untouched("x").alone(), Failure::untouched("x"));
    }

    #[test]
    fn a_suspect_is_isolated_uncharged_on_any_attempt() {
        for attempt in [1, 3, 7] {
            assert_eq!(
                decide(Err(Failure::suspect("child died")), attempt, &policy()),
                Disposition::Isolate {
                    reason: "child died".into()
                }
            );
        }
        assert!(!Failure::suspect("x").is_about_calls());
    }

    #[test]
    fn a_suspect_handled_alone_is_the_culprit_and_charged() {
        let alone = Failure::suspect("child died").alone();
        assert_eq!(alone, Failure::crashed("child died"));
        assert!(matches!(
            decide(Err(alone.clone()), 1, &policy()),
            Disposition::Retry { attempt: 2, .. }
        ));
        assert_eq!(
            decide(Err(alone), 3, &policy()),
            Disposition::Dead {
                reason: "attempt 3 of 3 failed: child died".into()
            }
        );
        // Other failures are what they are, alone or not.
        assert_eq!(Failure::dead("poison").alone(), Failure::dead("poison"));
        assert_eq!(Failure::retry("boom").alone(), Failure::retry("boom"));
    }

    #[test]
    fn errors_convert_with_their_causes() {
        let failure: Failure = "x".parse::<u32>().unwrap_err().into();
        assert_eq!(failure.action(), Action::Retry);
        assert!(failure.reason().contains("invalid digit"));
    }
}
