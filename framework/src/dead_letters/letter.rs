//! One dead letter as listed: its id, attempt, reason, the start of its
//! body and its headers as text, each bounded, so that a page of 10,000
//! holds a few megabytes whatever the messages weigh.

use lapin::{BasicProperties, types::AMQPValue};

use crate::message;

/// Bytes of a body kept in a listing; [`super::find`] gives it whole.
pub const BODY_LISTED: usize = 1024;

/// Headers kept in a listing, and characters of each value.
const HEADERS_LISTED: usize = 32;
const HEADER_TEXT: usize = 256;

/// Characters of a reason.
const REASON_TEXT: usize = 1000;

/// One dead letter, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its message id (empty if it has none).
    pub id: String,
    /// The attempt it died at.
    pub attempts: u32,
    /// Why: `x-warren-error`, or the broker's own reason (`delivery_limit`).
    pub reason: String,
    /// Its body: in a listing its first [`BODY_LISTED`] bytes, whole from
    /// [`super::find`].
    pub body: Vec<u8>,
    /// The length of its whole body.
    pub body_len: usize,
    /// Its headers, as text (`x-warren-*` and any the producer set): in a
    /// listing the first 32, each value cut to 256 characters.
    pub headers: Vec<(String, String)>,
}

impl DeadLetter {
    /// Whether [`Self::body`] is only the start of the body.
    pub fn is_cut(&self) -> bool {
        self.body.len() < self.body_len
    }
}

/// The dead letter of a delivery: whole, or with its body and headers cut
/// as in a listing (`cut`).
pub(crate) fn describe(props: &BasicProperties, body: &[u8], cut: bool) -> DeadLetter {
    let reason = message::text_header(props, message::ERROR)
        .or_else(|| {
            message::death_reason(props).map(|r| format!("dead-lettered by the broker: {r}"))
        })
        .unwrap_or_else(|| "(no reason recorded)".into());
    let shown = if cut { HEADERS_LISTED } else { usize::MAX };
    let headers = props
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .take(shown)
                .map(|(name, value)| {
                    let text = header_text(value);
                    let text = if cut {
                        message::one_line(&text, HEADER_TEXT)
                    } else {
                        text
                    };
                    (name.to_string(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    let kept = if cut { start(body, BODY_LISTED) } else { body };
    DeadLetter {
        id: message::id_of(props).unwrap_or_default().to_string(),
        attempts: message::attempt_of(props),
        reason: message::one_line(&reason, REASON_TEXT),
        body: kept.to_vec(),
        body_len: body.len(),
        headers,
    }
}

/// At most `max` bytes of `body`, not ending inside a UTF-8 character.
fn start(body: &[u8], max: usize) -> &[u8] {
    if body.len() <= max {
        return body;
    }
    let mut end = max;
    // Back over continuation bytes (at most 3) to a character's start.
    while end > max.saturating_sub(3) && end > 0 && body[end] & 0b1100_0000 == 0b1000_0000 {
        end -= 1;
    }
    &body[..end]
}

/// A header's value as text (nested tables shown in their debug form).
fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    #[test]
    fn a_listing_keeps_the_start_of_a_body_and_says_how_long_it_is() {
        let body = "é".repeat(BODY_LISTED);
        let letter = describe(&BasicProperties::default(), body.as_bytes(), true);
        assert!(letter.body.len() <= BODY_LISTED);
        assert!(
            std::str::from_utf8(&letter.body).is_ok(),
            "cut between characters"
        );
        assert_eq!(letter.body_len, body.len());
        assert!(letter.is_cut());
        let whole = describe(&BasicProperties::default(), body.as_bytes(), false);
        assert_eq!(whole.body, body.as_bytes());
        assert!(!whole.is_cut());
        let small = describe(&BasicProperties::default(), b"{}", true);
        assert_eq!((small.body.as_slice(), small.body_len), (&b"{}"[..], 2));
    }

    #[test]
    fn a_listing_bounds_headers_and_reasons() {
        let mut headers = FieldTable::default();
        for n in 0..100 {
            headers.insert(format!("h{n:03}").into(), message::text(&"v".repeat(900)));
        }
        headers.insert(
            message::ERROR.into(),
            AMQPValue::LongString("e".repeat(5000).into()),
        );
        let props = BasicProperties::default().with_headers(headers);
        let letter = describe(&props, b"", true);
        assert_eq!(letter.headers.len(), HEADERS_LISTED);
        assert!(
            letter
                .headers
                .iter()
                .all(|(_, v)| v.chars().count() <= HEADER_TEXT)
        );
        assert_eq!(letter.reason.chars().count(), REASON_TEXT);
        assert_eq!(describe(&props, b"", false).headers.len(), 101);
    }
}
