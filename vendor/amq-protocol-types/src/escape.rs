//! warren's patch: short strings that are not UTF-8.
//!
//! On the wire a short string is up to 255 octets, and brokers do not check
//! that they are UTF-8 (a `message_id` or a header name set by a producer in
//! another language may be any octets). [`ShortString`](crate::ShortString)
//! holds a Rust `String`, so such octets are held as text and turned back
//! into the same octets when written:
//!
//! - [`read`]: octets that are UTF-8 are held as they are, unless they spell
//!   the escape of other octets (see below); any other string is held with
//!   each `\` doubled and each octet that is not part of UTF-8 written
//!   `\xNN` (two lowercase hex digits).
//! - [`wire`]: the inverse, used when writing.
//!
//! The pair is one-to-one both ways: every octet string reads as its own
//! text, and every text writes as the octets it reads back from. So the
//! octet `0xff` and the four characters `\xff` stay two different ids (the
//! text `\xff` is held as `\\xff`), and a string read, re-published and
//! read again is the same string, whatever its length: the text may be up
//! to four times longer than its 255 octets, but what is written never is.
//!
//! Text that is held escaped ("needs escaping") is: octets that are not
//! UTF-8, and UTF-8 text that is, exactly, the escape of such a string (or
//! of such an escaped text, and so on). Plain text, and text with
//! backslashes that spell no escape (`C:\dir`, `a\\b`), is held as it is.

use std::borrow::Cow;

/// The text held for the octets `bytes` of a short string.
#[must_use]
pub fn read(bytes: &[u8]) -> Cow<'_, str> {
    if needs_escape(bytes) {
        Cow::Owned(escape(bytes))
    } else {
        // `needs_escape` is false only for UTF-8.
        Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
    }
}

/// The octets written for the text `text` of a short string: the inverse
/// of [`read`].
#[must_use]
pub fn wire(text: &str) -> Cow<'_, [u8]> {
    match unescape(text) {
        Some(inner) if needs_escape(&inner) => Cow::Owned(inner),
        _ => Cow::Borrowed(text.as_bytes()),
    }
}

/// Whether [`read`] holds `bytes` escaped: they are not UTF-8, or they are
/// the exact escape of octets that need escaping.
fn needs_escape(bytes: &[u8]) -> bool {
    let mut bytes = Cow::Borrowed(bytes);
    loop {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return true;
        };
        // Each turn shortens the text (an escape is 2 or 4 characters for
        // one octet), so this ends.
        match unescape(text) {
            Some(inner) => bytes = Cow::Owned(inner),
            None => return false,
        }
    }
}

/// Each `\` doubled, each octet that is not part of UTF-8 as `\xNN`.
fn escape(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    while !bytes.is_empty() {
        let (valid, bad) = match std::str::from_utf8(bytes) {
            Ok(valid) => (valid, 0),
            Err(error) => {
                let valid = std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default();
                let rest = bytes.len() - error.valid_up_to();
                (valid, error.error_len().unwrap_or(rest).max(1))
            }
        };
        out.push_str(&valid.replace('\\', "\\\\"));
        let rest = &bytes[valid.len()..];
        for byte in &rest[..bad] {
            out.push_str(&format!("\\x{byte:02x}"));
        }
        bytes = &rest[bad..];
    }
    out
}

/// The octets whose [`escape`] is exactly `text`, if `text` holds a
/// backslash and is such an escape.
fn unescape(text: &str) -> Option<Vec<u8>> {
    if !text.contains('\\') {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first != b'\\' {
            out.push(first);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', high, low, tail @ ..] => {
                out.push(hex(*high)? << 4 | hex(*low)?);
                rest = tail;
            }
            _ => return None,
        }
    }
    // `\xNN` of an octet that is part of UTF-8 (`\x41`) is not an escape
    // `escape` writes: only what it writes comes back.
    (escape(&out) == text).then_some(out)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn plain_text_is_held_as_it_is() {
        for text in [
            "",
            "id-1",
            "C:\\dir\\file",
            "a\\\\b",
            "\\x41",
            "\\xFF",
            "été",
            "\\",
        ] {
            assert_eq!(read(text.as_bytes()), text);
            assert_eq!(wire(text), text.as_bytes());
        }
    }

    #[test]
    fn octets_that_are_not_utf8_are_escaped_and_come_back() {
        assert_eq!(read(&[b'a', 0xff, b'\\', b'b']), "a\\xff\\\\b");
        assert_eq!(wire("a\\xff\\\\b"), &[b'a', 0xff, b'\\', b'b'][..]);
        // A cut character: each of its octets.
        assert_eq!(read(&[0xe2, 0x82]), "\\xe2\\x82");
    }

    #[test]
    fn text_that_spells_an_escape_is_escaped_too() {
        assert_eq!(read(b"\\xff"), "\\\\xff");
        assert_eq!(read(b"\\\\xff"), "\\\\\\\\xff");
        assert_eq!(wire("\\\\xff"), &b"\\xff"[..]);
        assert_ne!(read(&[0xff]), read(b"\\xff"));
    }

    /// Every octet string of up to 3 octets drawn from a set that meets
    /// every case: `read` is one-to-one and `wire` undoes it.
    #[test]
    fn read_is_one_to_one_and_wire_undoes_it() {
        let alphabet = [b'\\', b'x', b'f', b'a', 0xff, 0xc3, 0xa9, b'0'];
        let mut seen = std::collections::HashMap::new();
        let mut strings = vec![Vec::new()];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for s in &strings {
                for b in alphabet {
                    let mut t: Vec<u8> = s.clone();
                    t.push(b);
                    longer.push(t);
                }
            }
            strings.extend(longer.into_iter().filter(|s| s.len() <= 4));
            strings.sort();
            strings.dedup();
        }
        for bytes in &strings {
            let text = read(bytes).into_owned();
            assert_eq!(wire(&text), &bytes[..], "{text:?}");
            if let Some(other) = seen.insert(text.clone(), bytes.clone()) {
                panic!("{other:?} and {bytes:?} both read as {text:?}");
            }
            // Any text is read back as itself once written.
            assert_eq!(read(&wire(&text)), text);
            if let Ok(text) = std::str::from_utf8(bytes) {
                assert_eq!(read(&wire(text)), text, "{text:?}");
            }
        }
    }
}
