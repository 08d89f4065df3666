//! The first look at a delivery, before any handler runs. Pure: it reads
//! the broker's `redelivered` flag and the message's properties.
//!
//! - A message the broker delivers again was held by a worker that stopped
//!   before settling it: a crash (abort, out of memory, a stack overflow), a
//!   kill, or a lost connection. warren never gives a message back with a
//!   requeue in normal operation (it re-publishes instead), so the flag
//!   means exactly that. The message may be what killed its worker: it
//!   moves to the stage's isolation queue as its next attempt, and is
//!   handled there alone; when its attempts are used up it goes to the
//!   dead-letter queue with that reason. Innocent messages held by the same
//!   worker pass through isolation once and succeed.
//! - A message that came without a message id (a producer in another
//!   language) gets one: a copy with the id is published and confirmed,
//!   then the original is acknowledged, so every later delivery of it
//!   carries the same id.

/// What to do with a delivery before handling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Handle it.
    Handle,
    /// Give it an id: publish a copy with one (to the queue it came from),
    /// then acknowledge it.
    AssignId,
    /// Move it to the isolation queue as attempt `attempt` (with an id if
    /// it had none).
    Isolate {
        /// The attempt it will carry.
        attempt: u32,
    },
    /// Dead-letter it: its worker stopped on its last attempt.
    Dead {
        /// Why, for `x-warren-error`.
        reason: String,
    },
}

/// The intake of a delivery: `redelivered` by the broker, with or without a
/// message id, at `attempt` of `attempts`.
pub(crate) fn intake(redelivered: bool, has_id: bool, attempt: u32, attempts: u32) -> Intake {
    if redelivered {
        if attempt >= attempts {
            return Intake::Dead {
                reason: format!(
                    "attempt {attempt} of {attempts}: the worker holding it stopped before settling it (a crash such as abort, out of memory or a stack overflow; a kill; or a lost connection)"
                ),
            };
        }
        return Intake::Isolate {
            attempt: attempt + 1,
        };
    }
    if !has_id {
        return Intake::AssignId;
    }
    Intake::Handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_message_with_an_id_is_handled() {
        assert_eq!(intake(false, true, 1, 5), Intake::Handle);
        assert_eq!(intake(false, true, 5, 5), Intake::Handle);
    }

    #[test]
    fn a_message_without_an_id_gets_one_first() {
        assert_eq!(intake(false, false, 1, 5), Intake::AssignId);
    }

    #[test]
    fn a_redelivery_counts_an_attempt_and_is_isolated() {
        assert_eq!(intake(true, true, 1, 5), Intake::Isolate { attempt: 2 });
        assert_eq!(
            intake(true, false, 4, 5),
            Intake::Isolate { attempt: 5 },
            "an id-less message gets its id on the way"
        );
    }

    #[test]
    fn a_redelivery_on_the_last_attempt_is_dead_with_the_reason() {
        match intake(true, true, 5, 5) {
            Intake::Dead { reason } => {
                assert!(reason.starts_with("attempt 5 of 5: the worker holding it stopped"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(intake(true, true, 1, 1), Intake::Dead { .. }));
    }
}
