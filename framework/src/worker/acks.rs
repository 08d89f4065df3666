//! Settling deliveries on a consumer channel with as few frames as possible.
//!
//! Handlers finish in any order. The ledger keeps the lowest delivery tag not
//! yet settled; everything below it is settled, so one `basic.ack` with
//! `multiple` covers the whole prefix. Tags finished above a gap (a slow
//! message) are acked one by one so they stop counting against the prefetch
//! window. Nacks (with requeue) are `basic.nack` one by one. A delivery is never acked
//! before its handler finished: only settled tags are ever covered. The tag
//! of a multiple ack is always one still unacknowledged, as RabbitMQ
//! requires (it closes the channel with "unknown delivery tag" otherwise).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lapin::{
    Channel,
    options::{BasicAckOptions, BasicNackOptions, BasicQosOptions},
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// How long a channel stays open after its last settlement. A quorum queue
/// applies the acks a channel received asynchronously, and drops those not
/// yet applied when the channel closes (rabbitmq/rabbitmq-server#10327):
/// their messages come back flagged redelivered, beside the copies that
/// give-backs published. The channel's own round trip (a flush) does not
/// wait for the queue; this grace does, in practice.
pub(crate) const QUORUM_SETTLE_GRACE: Duration = Duration::from_millis(500);

/// How a finished delivery is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done (handled, retried or dead-lettered with a confirm): ack.
    Ack,
    /// Not handled, give it back to the queue: nack with requeue.
    Nack,
}

/// A frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckOp {
    /// `basic.ack` of one tag, or of every tag up to it with `multiple`.
    Ack { tag: u64, multiple: bool },
    /// `basic.nack` of one tag with requeue.
    Nack { tag: u64 },
}

/// Which tags are settled; pure, so it is tested without a broker.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Every tag below `low` is settled.
    low: u64,
    /// Settled tags at or above `low`; `true` while still owing an ack frame.
    ahead: BTreeMap<u64, bool>,
}

impl Default for Ledger {
    fn default() -> Ledger {
        // Delivery tags start at 1 on every channel.
        Ledger {
            low: 1,
            ahead: BTreeMap::new(),
        }
    }
}

impl Ledger {
    /// Records finished deliveries and returns the frames that settle them.
    pub fn settle(&mut self, finished: &[(u64, Settle)]) -> Vec<AckOp> {
        let mut ops = Vec::new();
        for (tag, settle) in finished {
            if *tag < self.low || self.ahead.contains_key(tag) {
                continue; // settled already
            }
            match settle {
                Settle::Ack => {
                    self.ahead.insert(*tag, true);
                }
                Settle::Nack => {
                    ops.push(AckOp::Nack { tag: *tag });
                    self.ahead.insert(*tag, false);
                }
            }
        }
        // RabbitMQ requires the tag of a multiple ack to be unacknowledged
        // itself: name the highest tag of the prefix that still owes one.
        let mut highest_owed = None;
        while let Some(owes) = self.ahead.remove(&self.low) {
            if owes {
                highest_owed = Some(self.low);
            }
            self.low += 1;
        }
        if let Some(tag) = highest_owed {
            ops.push(AckOp::Ack {
                tag,
                multiple: true,
            });
        }
        for (tag, owes) in self.ahead.iter_mut() {
            if *owes {
                ops.push(AckOp::Ack {
                    tag: *tag,
                    multiple: false,
                });
                *owes = false;
            }
        }
        ops
    }
}

/// What the handlers of a channel report to its acker.
#[derive(Debug)]
pub(crate) enum Report {
    /// Delivery `tag` finished: settle it so.
    Settled(u64, Settle),
    /// Answer once every settlement reported before this one has reached
    /// the broker and been processed by it.
    Flush(oneshot::Sender<()>),
}

/// Sends settlements of one consumer channel; ends when every sender is
/// dropped (the consumer loop and all its handler tasks are done).
///
/// A flush is answered after a round trip on the channel (`basic.qos` with
/// the `prefetch` it has, which changes nothing): the broker handles a
/// channel's frames in order, so its answer means the acks sent before it
/// were processed. A worker that handles a message which may crash it
/// flushes first: an ack still in the socket when the process dies would
/// make the broker deliver that message again, flagged, as if it had been
/// held by the crash, charging an innocent message an attempt (or, for a
/// message moved to isolation, making a second copy of it).
///
/// Returns when it last sent a settlement, if ever (see
/// [`QUORUM_SETTLE_GRACE`]).
pub(crate) async fn run(
    channel: Channel,
    prefetch: u16,
    mut reports: mpsc::UnboundedReceiver<Report>,
) -> Option<Instant> {
    let mut last_sent = None;
    let mut ledger = Ledger::default();
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = reports.recv().await {
        let mut next = Some(first);
        while let Some(report) = next.take() {
            match report {
                Report::Settled(tag, settle) => batch.push((tag, settle)),
                Report::Flush(answer) => flushes.push(answer),
            }
            next = reports.try_recv().ok();
        }
        if !batch.is_empty() {
            last_sent = Some(Instant::now());
        }
        if !send(&channel, &mut ledger, &batch).await {
            return last_sent;
        }
        batch.clear();
        if !flushes.is_empty() {
            if let Err(error) = channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await
            {
                debug!(%error, "flushing settlements on a closed channel");
                return last_sent;
            }
            for answer in flushes.drain(..) {
                let _ = answer.send(());
            }
        }
    }
    last_sent
}

/// Sends the frames that settle `finished`; false when the channel is gone
/// (its unsettled deliveries go back to the queue by themselves; nothing is
/// sent elsewhere).
async fn send(channel: &Channel, ledger: &mut Ledger, finished: &[(u64, Settle)]) -> bool {
    for op in ledger.settle(finished) {
        tracing::trace!(?op, channel = channel.id(), "settling");
        let sent = match op {
            AckOp::Ack { tag, multiple } => {
                channel.basic_ack(tag, BasicAckOptions { multiple }).await
            }
            AckOp::Nack { tag } => {
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await
            }
        };
        if let Err(error) = sent {
            debug!(%error, "settling on a closed channel; the broker requeues its deliveries");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use AckOp::*;
    use Settle::Ack as A;

    #[test]
    fn in_order_completions_are_one_multiple_ack() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.settle(&[(1, A), (2, A), (3, A)]),
            vec![Ack {
                tag: 3,
                multiple: true
            }]
        );
        assert_eq!(
            ledger.settle(&[(4, A)]),
            vec![Ack {
                tag: 4,
                multiple: true
            }]
        );
    }

    #[test]
    fn a_gap_holds_the_multiple_ack_and_later_tags_are_acked_singly() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.settle(&[(2, A), (3, A)]),
            vec![
                Ack {
                    tag: 2,
                    multiple: false
                },
                Ack {
                    tag: 3,
                    multiple: false
                }
            ]
        );
        // Nothing is sent twice; the slow tag 1 finishing settles the prefix
        // with an ack of tag 1 itself (2 and 3 are acked already).
        assert_eq!(ledger.settle(&[]), vec![]);
        assert_eq!(
            ledger.settle(&[(1, A)]),
            vec![Ack {
                tag: 1,
                multiple: true
            }]
        );
        assert_eq!(
            ledger.settle(&[(4, A)]),
            vec![Ack {
                tag: 4,
                multiple: true
            }]
        );
    }

    #[test]
    fn a_multiple_ack_never_covers_an_unfinished_tag() {
        let mut ledger = Ledger::default();
        let ops = ledger.settle(&[(1, A), (3, A), (4, A)]);
        assert_eq!(
            ops[0],
            Ack {
                tag: 1,
                multiple: true
            }
        );
        assert!(
            ops.iter()
                .all(|op| !matches!(op, Ack { tag, multiple: true } if *tag >= 2))
        );
    }

    #[test]
    fn a_multiple_ack_always_names_a_tag_that_is_still_unacked() {
        let mut ledger = Ledger::default();
        ledger.settle(&[(3, A), (5, Settle::Nack)]);
        // 1 and 2 finish: the prefix reaches 3 (acked) but must name 2.
        assert_eq!(
            ledger.settle(&[(2, A), (1, A)]),
            vec![Ack {
                tag: 2,
                multiple: true
            }]
        );
        // 4 finishes: the prefix runs to 5 (requeued); 4 is the one owed.
        assert_eq!(
            ledger.settle(&[(4, A)]),
            vec![Ack {
                tag: 4,
                multiple: true
            }]
        );
    }

    #[test]
    fn requeues_are_single_nacks_and_count_as_settled() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.settle(&[(1, Settle::Nack)]), vec![Nack { tag: 1 }]);
        assert_eq!(
            ledger.settle(&[(2, A)]),
            vec![Ack {
                tag: 2,
                multiple: true
            }]
        );
        // A prefix made only of requeued tags owes no ack.
        assert_eq!(ledger.settle(&[(3, Settle::Nack)]), vec![Nack { tag: 3 }]);
    }

    /// RabbitMQ's side: the unacked tags of a channel. An op naming a tag
    /// that is not unacked closes the channel.
    fn apply(unacked: &mut std::collections::BTreeSet<u64>, op: AckOp) {
        match op {
            Ack { tag, .. } | Nack { tag } if !unacked.contains(&tag) => {
                panic!("unknown delivery tag {tag} in {op:?}")
            }
            Ack {
                tag,
                multiple: true,
            } => unacked.retain(|t| *t > tag),
            Ack { tag, .. } | Nack { tag } => {
                unacked.remove(&tag);
            }
        }
    }

    #[test]
    fn random_completion_orders_never_name_an_unknown_tag_and_settle_everything() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..500 {
            let total = 1 + random(60);
            let mut unacked: std::collections::BTreeSet<u64> = (1..=total).collect();
            let mut pending: Vec<u64> = (1..=total).collect();
            let mut ledger = Ledger::default();
            while !pending.is_empty() {
                let mut batch = Vec::new();
                for _ in 0..=random(4) {
                    if pending.is_empty() {
                        break;
                    }
                    let tag = pending.remove(random(pending.len() as u64) as usize);
                    let settle = match random(10) {
                        0 => Settle::Nack,
                        _ => A,
                    };
                    batch.push((tag, settle));
                }
                for op in ledger.settle(&batch) {
                    apply(&mut unacked, op);
                }
                // Nothing still in flight was settled.
                for tag in &pending {
                    assert!(
                        unacked.contains(tag),
                        "tag {tag} settled before it finished"
                    );
                }
            }
            assert!(unacked.is_empty(), "left unsettled: {unacked:?}");
        }
    }

    #[test]
    fn a_tag_settled_twice_is_sent_once() {
        let mut ledger = Ledger::default();
        ledger.settle(&[(1, A)]);
        assert_eq!(ledger.settle(&[(1, A)]), vec![]);
    }
}
