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
//!   language) gets one: a copy with the id is published on the publishing
//!   connection and confirmed, then the original is acknowledged, so every
//!   later delivery of it carries the same id. The id is derived from the
//!   message ([`assigned_id`]): a worker that stops between the copy's
//!   confirm and the ack leaves the original to be delivered again, and it
//!   gets the same id, so the two copies are one message downstream.

use lapin::BasicProperties;
use sha2::{Digest, Sha256};

/// A header the broker adds to a quorum queue's redeliveries: not part of
/// what the producer sent.
const DELIVERY_COUNT: &str = "x-delivery-count";

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

/// The id of a message that came without one: 32 hex digits of the
/// SHA-256 of what its producer sent (the exchange and routing key it was
/// published with, its properties and its body), the same for every
/// delivery of it, whichever worker takes it. Two messages alike in all of
/// that get one id, and count as one downstream: a producer that sends the
/// same thing twice and means two jobs sets a message id (or anything that
/// differs, such as a timestamp or a header).
pub(crate) fn assigned_id(
    exchange: &str,
    routing_key: &str,
    properties: &BasicProperties,
    body: &[u8],
) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(b"warren assigned id 1");
    field(exchange.as_bytes());
    field(routing_key.as_bytes());
    let p = properties;
    for value in [
        format!("{:?}", p.content_type()),
        format!("{:?}", p.content_encoding()),
        format!("{:?}", p.delivery_mode()),
        format!("{:?}", p.priority()),
        format!("{:?}", p.correlation_id()),
        format!("{:?}", p.reply_to()),
        format!("{:?}", p.expiration()),
        format!("{:?}", p.timestamp()),
        format!("{:?}", p.kind()),
        format!("{:?}", p.user_id()),
        format!("{:?}", p.app_id()),
        format!("{:?}", p.cluster_id()),
    ] {
        field(value.as_bytes());
    }
    // In key order (a field table is sorted by key).
    for (key, value) in p.headers().iter().flat_map(|headers| headers.inner()) {
        if key.as_str() != DELIVERY_COUNT {
            field(key.as_str().as_bytes());
            field(format!("{value:?}").as_bytes());
        }
    }
    field(body);
    let digest = hash.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};

    use super::*;

    fn sent(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (key, value) in headers {
            table.insert((*key).into(), value.clone());
        }
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table)
    }

    #[test]
    fn an_assigned_id_is_the_same_on_every_delivery() {
        let first = assigned_id("app", "grade", &sent(&[]), br#"{"n": 1}"#);
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            first,
            assigned_id("app", "grade", &sent(&[]), br#"{"n": 1}"#)
        );
        // A quorum queue counts its redeliveries in a header of its own.
        let again = sent(&[(DELIVERY_COUNT, AMQPValue::LongLongInt(1))]);
        assert_eq!(first, assigned_id("app", "grade", &again, br#"{"n": 1}"#));
    }

    #[test]
    fn an_assigned_id_differs_with_anything_the_producer_sent() {
        let base = assigned_id("app", "grade", &sent(&[]), br#"{"n": 1}"#);
        let others = [
            assigned_id("app", "grade", &sent(&[]), br#"{"n": 2}"#),
            assigned_id("app2", "grade", &sent(&[]), br#"{"n": 1}"#),
            assigned_id("app", "grade2", &sent(&[]), br#"{"n": 1}"#),
            assigned_id(
                "app",
                "grade",
                &sent(&[]).with_timestamp(1_700_000_000),
                br#"{"n": 1}"#,
            ),
            assigned_id(
                "app",
                "grade",
                &sent(&[("request", AMQPValue::LongString("r1".into()))]),
                br#"{"n": 1}"#,
            ),
            // Fields do not run into each other.
            assigned_id("ap", "pgrade", &sent(&[]), br#"{"n": 1}"#),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

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
