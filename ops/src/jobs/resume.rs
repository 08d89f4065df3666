//! Where a store goes on reading the job stream (pure). A store keeps the
//! offset of the next event to fold and a print of the last one folded.
//! The stream it reads may since have been deleted and declared again
//! (warren's mismatch error tells users to, when `jobs.keep` changes): a
//! new stream starts at offset 0, so the saved offset is past its end, or
//! holds another message. Or the store fell behind the stream's retention
//! (`x-max-age`): the events after the saved offset are gone.

use std::ops::Range;

/// What a store saved of the stream it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    /// The offset of the first event not folded in yet.
    pub next: u64,
    /// The print ([`print`]) of the message at `next - 1`; 0 when unknown
    /// (a store written before prints were kept, or just restarted).
    pub print: u64,
}

/// What the stream holds now, as far as the decision needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The stream's first offset; `None` when the stream is empty.
    pub first: Option<u64>,
    /// The print of the message at `next - 1`; `None` when the stream ends
    /// before it (or it was not looked at: see [`needs_last`]).
    pub at_last: Option<u64>,
}

/// Where to read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// The same stream: go on at this offset.
    GoOn(u64),
    /// Another stream than the one the store read: read it from its start.
    Recreated,
    /// The same stream, but the events of these offsets were dropped by its
    /// retention before the store read them: go on at the range's end.
    Gap(Range<u64>),
}

/// Whether the message at `saved.next - 1` must be looked at, once the
/// stream's first offset is known.
pub fn needs_last(saved: Saved, first: Option<u64>) -> bool {
    saved.next > 0 && first.is_some_and(|first| first < saved.next)
}

/// Decides where `saved` goes on in the stream `found` describes.
pub fn resume(saved: Saved, found: Found) -> Resume {
    if saved.next == 0 {
        // Nothing read yet: whatever the stream holds is new.
        return Resume::GoOn(0);
    }
    let Some(first) = found.first else {
        // A stream that held the events the store read never empties (its
        // retention keeps the segment being written): a new one.
        return Resume::Recreated;
    };
    if first > saved.next {
        return Resume::Gap(saved.next..first);
    }
    if first == saved.next {
        // The last message read aged out; the next one is there.
        return Resume::GoOn(saved.next);
    }
    match found.at_last {
        None => Resume::Recreated,
        Some(print) if saved.print != 0 && print != saved.print => Resume::Recreated,
        Some(_) => Resume::GoOn(saved.next),
    }
}

/// A stream message's print: its id and body hashed (never 0).
pub fn print(message_id: &str, body: &[u8]) -> u64 {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    hash.update(message_id.as_bytes());
    hash.update([0]);
    hash.update(body);
    let digest = hash.finalize();
    let print = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    print.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(next: u64, print: u64) -> Saved {
        Saved { next, print }
    }

    fn found(first: Option<u64>, at_last: Option<u64>) -> Found {
        Found { first, at_last }
    }

    #[test]
    fn a_store_that_read_nothing_starts_at_the_start() {
        assert_eq!(resume(saved(0, 0), found(None, None)), Resume::GoOn(0));
        assert_eq!(resume(saved(0, 0), found(Some(7), None)), Resume::GoOn(0));
        assert!(!needs_last(saved(0, 0), Some(0)));
    }

    #[test]
    fn the_same_stream_goes_on() {
        let s = saved(10, 42);
        assert!(needs_last(s, Some(0)));
        assert_eq!(resume(s, found(Some(0), Some(42))), Resume::GoOn(10));
        // The last message read aged out, the next is the first.
        assert!(!needs_last(s, Some(10)));
        assert_eq!(resume(s, found(Some(10), None)), Resume::GoOn(10));
        // No print saved: the message is there, that is all one can say.
        assert_eq!(
            resume(saved(10, 0), found(Some(0), Some(5))),
            Resume::GoOn(10)
        );
    }

    #[test]
    fn a_new_stream_is_read_from_its_start() {
        let s = saved(10, 42);
        // Empty, shorter, or another message at the saved place.
        assert_eq!(resume(s, found(None, None)), Resume::Recreated);
        assert_eq!(resume(s, found(Some(0), None)), Resume::Recreated);
        assert_eq!(resume(s, found(Some(0), Some(43))), Resume::Recreated);
        assert_eq!(
            resume(saved(10, 0), found(Some(0), None)),
            Resume::Recreated
        );
    }

    #[test]
    fn a_store_behind_the_retention_has_a_gap() {
        assert_eq!(
            resume(saved(10, 42), found(Some(25), None)),
            Resume::Gap(10..25)
        );
        assert!(!needs_last(saved(10, 42), Some(25)));
    }

    #[test]
    fn prints_tell_messages_apart() {
        assert_eq!(print("a", b"[]"), print("a", b"[]"));
        assert_ne!(print("a", b"[]"), print("b", b"[]"));
        assert_ne!(print("a", b"[1]"), print("a", b"[]"));
        assert_ne!(print("ab", b""), print("a", b"b"));
        assert_ne!(print("", b""), 0);
    }
}
