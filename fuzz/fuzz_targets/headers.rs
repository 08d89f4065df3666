//! Message properties: arbitrary headers (every AMQP value type, nested
//! tables and arrays) and message ids through every reader and writer of
//! `warren::message`.
//!
//! Invariants: no panic; `one_line` returns one line of at most `max`
//! characters; `short` returns at most 255 bytes on the wire, a prefix of
//! its input; `child_id` is deterministic and at most 255 bytes on the
//! wire; republished properties drop `x-death` (and the broker's other
//! headers), removed headers, `user_id` and `expiration` (kept as
//! `x-warren-original-*`), carry the set ones, and read back as written;
//! a short string's escape (`vendor/amq-protocol-types`) is one-to-one:
//! any bytes read back the same after being written, any text too.

#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use lapin::{
    BasicProperties,
    types::{
        AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString, escape,
    },
};
use libfuzzer_sys::fuzz_target;
use warren::message;

/// Header names the readers look for, and some others.
const NAMES: &[&str] = &[
    message::ATTEMPT,
    message::STAGE,
    message::ERROR,
    message::NOT_BEFORE,
    "x-death",
    "reason",
    "count",
    "queue",
    "",
];

const MAX_DEPTH: u32 = 4;

/// A string of at most 255 bytes, cut at a character boundary.
fn short_text(u: &mut Unstructured<'_>) -> Result<String> {
    let text: String = u.arbitrary()?;
    Ok(message::short(&text).as_str().to_string())
}

fn name(u: &mut Unstructured<'_>) -> Result<ShortString> {
    if u.ratio(3, 4)? {
        Ok(ShortString::from(*u.choose(NAMES)?))
    } else {
        Ok(ShortString::from(short_text(u)?))
    }
}

fn table(u: &mut Unstructured<'_>, depth: u32) -> Result<FieldTable> {
    let mut table = FieldTable::default();
    let len = u.int_in_range(0..=6)?;
    for _ in 0..len {
        let key = name(u)?;
        let value = if key.as_str() == "x-death" && u.ratio(3, 4)? {
            death(u, depth + 1)?
        } else {
            value(u, depth + 1)?
        };
        table.insert(key, value);
    }
    Ok(table)
}

/// An `x-death` header shaped like RabbitMQ's: an array of tables.
fn death(u: &mut Unstructured<'_>, depth: u32) -> Result<AMQPValue> {
    let mut deaths = FieldArray::default();
    for _ in 0..u.int_in_range(0..=3)? {
        deaths.push(if u.ratio(3, 4)? && depth < MAX_DEPTH {
            AMQPValue::FieldTable(table(u, depth + 1)?)
        } else {
            value(u, depth + 1)?
        });
    }
    Ok(AMQPValue::FieldArray(deaths))
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<AMQPValue> {
    let nested = depth < MAX_DEPTH;
    let kinds = if nested { 19 } else { 16 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => AMQPValue::Boolean(u.arbitrary()?),
        1 => AMQPValue::ShortShortInt(u.arbitrary()?),
        2 => AMQPValue::ShortShortUInt(u.arbitrary()?),
        3 => AMQPValue::ShortInt(u.arbitrary()?),
        4 => AMQPValue::ShortUInt(u.arbitrary()?),
        5 => AMQPValue::LongInt(u.arbitrary()?),
        6 => AMQPValue::LongUInt(u.arbitrary()?),
        7 => AMQPValue::LongLongInt(u.arbitrary()?),
        8 => AMQPValue::Float(u.arbitrary()?),
        9 => AMQPValue::Double(u.arbitrary()?),
        10 => AMQPValue::DecimalValue(DecimalValue {
            scale: u.arbitrary()?,
            value: u.arbitrary()?,
        }),
        11 => AMQPValue::ShortString(ShortString::from(short_text(u)?)),
        // Long strings: valid text (often a number) or any bytes.
        12 => AMQPValue::LongString(if u.ratio(1, 3)? {
            LongString::from(u.arbitrary::<u64>()?.to_string())
        } else if u.ratio(1, 2)? {
            LongString::from(u.arbitrary::<String>()?)
        } else {
            LongString::from(u.arbitrary::<Vec<u8>>()?)
        }),
        13 => AMQPValue::Timestamp(u.arbitrary()?),
        14 => AMQPValue::ByteArray(ByteArray::from(u.arbitrary::<Vec<u8>>()?)),
        15 => AMQPValue::Void,
        16 => AMQPValue::FieldTable(table(u, depth)?),
        17 => death(u, depth)?,
        _ => {
            let mut items = FieldArray::default();
            for _ in 0..u.int_in_range(0..=4)? {
                items.push(value(u, depth + 1)?);
            }
            AMQPValue::FieldArray(items)
        }
    })
}

#[derive(Debug)]
struct Input {
    properties: BasicProperties,
    text: String,
    bytes: Vec<u8>,
    max: usize,
    n: u32,
    attempt: u64,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut properties = BasicProperties::default();
        if u.arbitrary()? {
            properties = properties.with_message_id(ShortString::from(short_text(u)?));
        }
        if u.arbitrary()? {
            properties = properties.with_content_type(ShortString::from(short_text(u)?));
        }
        if u.arbitrary()? {
            properties = properties.with_user_id(ShortString::from(short_text(u)?));
        }
        if u.arbitrary()? {
            properties = properties.with_expiration(ShortString::from(short_text(u)?));
        }
        if u.ratio(7, 8)? {
            properties = properties.with_headers(table(u, 0)?);
        }
        let max = if u.arbitrary()? {
            u.int_in_range(0..=8)?
        } else {
            u.int_in_range(0..=2000)?
        };
        Ok(Input {
            properties,
            text: u.arbitrary()?,
            bytes: u.arbitrary()?,
            max,
            n: u.arbitrary()?,
            attempt: u.arbitrary()?,
        })
    }
}

fn check_one_line(text: &str, max: usize) {
    let line = message::one_line(text, max);
    assert!(
        !line.chars().any(char::is_control),
        "one_line({text:?}, {max}) is not one line: {line:?}"
    );
    assert!(
        line.chars().count() <= max,
        "one_line({text:?}, {max}) has {} characters: {line:?}",
        line.chars().count()
    );
}

fn check_short(text: &str) {
    let cut = message::short(text);
    assert!(
        message::wire_len(cut.as_str()) <= message::MAX_ID,
        "short() is too long"
    );
    assert!(text.starts_with(cut.as_str()), "short() is not a prefix");
    if message::wire_len(text) <= message::MAX_ID {
        assert_eq!(cut.as_str(), text, "short() cut a short text");
    }
}

fn check_child_id(parent: &str, n: u32) {
    let child = message::child_id(parent, n);
    assert!(
        message::wire_len(&child) <= message::MAX_ID,
        "child_id is {} bytes on the wire",
        message::wire_len(&child)
    );
    assert_eq!(
        child,
        message::child_id(parent, n),
        "child_id is not deterministic"
    );
    assert!(
        child.ends_with(&format!(".{n}")),
        "child_id lost its number"
    );
    // It fits a short string as is.
    assert_eq!(message::short(&child).as_str(), child);
}

/// A short string's escape: bytes read and written back are the same
/// bytes; text written and read back is the same text.
fn check_escape(bytes: &[u8], text: &str) {
    let bytes = &bytes[..bytes.len().min(255)];
    let read = escape::read(bytes);
    assert_eq!(
        &*escape::wire(&read),
        bytes,
        "{read:?} is not written back as read"
    );
    assert_eq!(
        escape::read(&escape::wire(text)),
        text,
        "{text:?} does not read back"
    );
    // One-to-one: the text of an escape, sent as bytes, reads differently.
    if read.as_bytes() != bytes {
        assert_ne!(
            escape::read(read.as_bytes()),
            read,
            "two strings read as {read:?}"
        );
    }
}

fuzz_target!(|input: Input| {
    let props = &input.properties;
    check_escape(&input.bytes, &input.text);

    // Readers.
    let id = message::id_of(props);
    if let Some(id) = id {
        assert!(!id.is_empty());
        check_child_id(id, input.n);
    }
    let attempt = message::attempt_of(props);
    assert!(attempt >= 1, "attempt 0");
    let _ = message::not_before_of(props);
    for name in [message::ERROR, message::STAGE, message::ATTEMPT, "x-death"] {
        if let Some(text) = message::text_header(props, name) {
            check_one_line(&text, input.max);
            check_short(&text);
        }
    }
    if let Some(reason) = message::death_reason(props) {
        check_one_line(&reason, input.max);
    }

    // Text helpers on arbitrary text.
    check_one_line(&input.text, input.max);
    check_short(&input.text);
    check_child_id(&input.text, input.n);

    // Writers: republish with a new attempt and error, removing not-before.
    let error = message::text(&input.text);
    let out = message::republish_properties(
        props,
        &[
            (message::ATTEMPT, message::int(input.attempt)),
            (message::ERROR, error),
        ],
        &[message::NOT_BEFORE],
    );
    let headers = out.headers().as_ref().expect("republished headers");
    assert!(!headers.contains_key("x-death"), "x-death kept");
    assert!(
        !headers.contains_key(message::NOT_BEFORE),
        "removed header kept"
    );
    assert_eq!(message::not_before_of(&out), None);
    assert_eq!(message::death_reason(&out), None);
    let expected_attempt = u32::try_from(input.attempt)
        .ok()
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    assert_eq!(message::attempt_of(&out), expected_attempt);
    let written = message::text_header(&out, message::ERROR).expect("error header");
    assert_eq!(written, message::one_line(&input.text, 1000));
    check_one_line(&written, 1000);
    assert_eq!(message::id_of(&out), id, "message id changed");
    assert_eq!(out.user_id(), &None, "user_id kept");
    assert_eq!(out.expiration(), &None, "expiration kept");
    for (kept, original) in [
        (message::ORIGINAL_USER_ID, props.user_id()),
        (message::ORIGINAL_EXPIRATION, props.expiration()),
    ] {
        if let Some(original) = original {
            assert_eq!(
                message::text_header(&out, kept).as_deref(),
                Some(original.as_str()),
                "{kept}"
            );
        }
    }
    assert_eq!(out.delivery_mode(), &Some(2));
    assert!(out.content_type().is_some());
    if props.content_type().is_some() {
        assert_eq!(out.content_type(), props.content_type());
    }
    // Every other header is carried over unchanged.
    if let Some(old) = props.headers() {
        for (key, value) in old.inner() {
            let key = key.as_str();
            if ![
                message::ATTEMPT,
                message::ERROR,
                message::NOT_BEFORE,
                message::ORIGINAL_USER_ID,
                message::ORIGINAL_EXPIRATION,
            ]
            .contains(&key)
                && !message::BROKER_HEADERS.contains(&key)
            {
                // Compared as text: a NaN float is not equal to itself.
                assert_eq!(
                    format!("{:?}", headers.inner().get(key)),
                    format!("{:?}", Some(value)),
                    "header {key} changed"
                );
            }
        }
    }

    // New messages.
    let fresh = message::new_properties(&input.text, &input.text);
    assert_eq!(message::attempt_of(&fresh), 1);
    assert_eq!(
        fresh.message_id().as_ref().map(ShortString::as_str),
        Some(message::short(&input.text).as_str())
    );
});
