//! The message format (DESIGN.md, "Messages"): properties and `x-warren-*`
//! headers, read from deliveries and written on publish.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

/// Header: 1 on first delivery, counted up by retries.
pub const ATTEMPT: &str = "x-warren-attempt";
/// Header on dead letters: the stage that gave up.
pub const STAGE: &str = "x-warren-stage";
/// Header on dead letters and retries: the one-line reason.
pub const ERROR: &str = "x-warren-error";
/// Header on delayed retries longer than the longest retry queue: epoch
/// milliseconds before which the message must not run.
pub const NOT_BEFORE: &str = "x-warren-not-before";
/// Header: the id of the job a message belongs to (the id of the message
/// that entered the pipeline from outside), carried by everything emitted
/// from it, its retries and its dead letters.
pub const JOB: &str = "x-warren-job";
/// Header a producer may set on a job's first message: where to POST the
/// job's state when it is done or failed.
pub const CALLBACK: &str = "x-warren-callback";

/// Content type of everything warren publishes.
pub const JSON: &str = "application/json";

/// Longest message id the protocol carries.
pub const MAX_ID: usize = 255;

/// Properties of a new message: JSON, persistent, with `id`, attempt 1 and
/// its job (`job` is `id` for a message entering the pipeline).
pub fn new_properties(id: &str, job: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT.into(), AMQPValue::LongLongInt(1));
    headers.insert(JOB.into(), AMQPValue::LongString(job.into()));
    BasicProperties::default()
        .with_content_type(JSON.into())
        .with_delivery_mode(2)
        .with_message_id(short(id))
        .with_timestamp(now_secs())
        .with_headers(headers)
}

/// `properties` with header `name` set to `value`.
pub fn with_header(properties: BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    properties.with_headers(headers)
}

/// The message id of a delivery, if the producer set one.
pub fn id_of(properties: &BasicProperties) -> Option<&str> {
    properties
        .message_id()
        .as_ref()
        .map(ShortString::as_str)
        .filter(|id| !id.is_empty())
}

/// The job of a delivery: its `x-warren-job` header, or its own id (a
/// message from outside is the root of its job).
pub fn job_of(properties: &BasicProperties) -> Option<String> {
    text_header(properties, JOB)
        .filter(|job| !job.is_empty())
        .or_else(|| id_of(properties).map(str::to_string))
}

/// The attempt number of a delivery: its header, or 1.
pub fn attempt_of(properties: &BasicProperties) -> u32 {
    header(properties, ATTEMPT)
        .and_then(as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// How many times a quorum queue has had a delivery handed back to it, as
/// the broker counts it: `x-acquired-count` (RabbitMQ 4, every return) or
/// `x-delivery-count` (RabbitMQ 3); `None` on a classic queue, which
/// counts nothing.
pub fn returns_of(properties: &BasicProperties) -> Option<u64> {
    header(properties, "x-acquired-count")
        .or_else(|| header(properties, "x-delivery-count"))
        .and_then(as_u64)
}

/// The not-before time of a delivery, if it has one.
pub fn not_before_of(properties: &BasicProperties) -> Option<u64> {
    header(properties, NOT_BEFORE).and_then(as_u64)
}

/// A text header (the error reason, the stage), if present.
pub fn text_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_string()),
        _ => None,
    }
}

/// The reason RabbitMQ itself dead-lettered a message (`x-death`), such as
/// `delivery_limit` when a quorum queue's delivery limit was reached.
pub fn death_reason(properties: &BasicProperties) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = header(properties, "x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("reason")? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        _ => None,
    }
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

fn as_u64(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok(),
        AMQPValue::ShortString(text) => text.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// Header on warren's copies of a message whose producer set `user_id`:
/// that user. The copies (retries, dead letters, replays) are published by
/// warren's own broker user, and RabbitMQ refuses a publish whose
/// `user_id` is not the publishing connection's user.
pub const ORIGINAL_USER_ID: &str = "x-warren-original-user-id";
/// Header on warren's copies of a message whose producer set `expiration`
/// (a time to live): that value. A copy does not expire: a retry waits for
/// its delay, and a dead letter stays until replayed or purged.
pub const ORIGINAL_EXPIRATION: &str = "x-warren-original-expiration";

/// Headers the broker writes about one delivery or one death of a
/// message; a copy is a new message and carries none of them (a stale
/// `x-first-death-reason` would misreport the copy's own death).
pub const BROKER_HEADERS: [&str; 9] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    "x-acquired-count",
];

/// A copy of `properties` for re-publishing the same message (a retry, a
/// dead letter, a replay, an isolation or give-back copy) with headers
/// changed: `set` replaces or adds, `remove` drops. The copy carries what
/// the producer set except `user_id` and `expiration` (kept as
/// [`ORIGINAL_USER_ID`] and [`ORIGINAL_EXPIRATION`]) and the broker's own
/// headers of the original's deliveries and deaths; it is persistent, and
/// JSON unless the producer said otherwise.
pub fn republish_properties(
    properties: &BasicProperties,
    set: &[(&str, AMQPValue)],
    remove: &[&str],
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = properties.headers() {
        for (key, value) in old.inner() {
            let key_text = key.as_str();
            if !BROKER_HEADERS.contains(&key_text) && !remove.contains(&key_text) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    let originals = [
        (ORIGINAL_USER_ID, properties.user_id()),
        (ORIGINAL_EXPIRATION, properties.expiration()),
    ];
    for (name, value) in originals {
        if let Some(value) = value {
            headers.insert(name.into(), AMQPValue::LongString(value.as_str().into()));
        }
    }
    for (key, value) in set {
        headers.insert((*key).into(), value.clone());
    }
    let mut out = properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    // `BasicProperties` has no way to unset one property: rebuilt without
    // the two, every other one copied.
    out = without_user_id_and_expiration(&out);
    if properties.content_type().is_none() {
        out = out.with_content_type(JSON.into());
    }
    out
}

/// `properties` without `user_id` and `expiration`.
fn without_user_id_and_expiration(properties: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = properties.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = properties.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = properties.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = properties.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = properties.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = properties.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = properties.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = properties.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = properties.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = properties.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = properties.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = properties.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// An integer header value.
pub fn int(n: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A text header value, on one line and at most 1,000 characters.
pub fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(one_line(value, 1000).as_str()))
}

/// `text` on one line, cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() > max {
        let dots = max.min(3);
        let cut: String = flat.chars().take(max - dots).collect();
        format!("{cut}{}", &"..."[..dots])
    } else {
        flat.to_string()
    }
}

/// The id of the `n`th message emitted while handling message `parent`:
/// `{parent}.{n}`. Ids that would outgrow the protocol's 255 bytes keep
/// their start and a hash of the rest, so they stay deterministic. The
/// length that counts is the id's on the wire ([`wire_len`]): an id that
/// is not UTF-8 is held escaped, up to four times longer than its bytes.
pub fn child_id(parent: &str, n: u32) -> String {
    let id = format!("{parent}.{n}");
    if wire_len(&id) <= MAX_ID {
        return id;
    }
    let mut cut = 160.min(parent.len());
    while !parent.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:016x}.{n}", &parent[..cut], fnv1a(parent.as_bytes()))
}

/// A fresh id for a message that arrived without one.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The bytes `text` takes on the wire as a short string (a message id):
/// its length, or for a string that was not UTF-8 and is held escaped
/// (`\xNN`, see `vendor/amq-protocol-types`), the length of its bytes.
pub fn wire_len(text: &str) -> usize {
    amq_protocol_types::escape::wire(text).len()
}

/// A protocol short string: `text` whole when its bytes on the wire fit in
/// 255, else cut to 255 bytes at a character boundary.
pub fn short(text: &str) -> ShortString {
    if wire_len(text) <= MAX_ID {
        return ShortString::from(text);
    }
    let mut end = text.len().min(MAX_ID);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&text[..end])
}

/// FNV-1a, 64 bits: the hash that keeps a cut child id distinct
/// ([`child_id`]); also the checksum of the sink's first log format. Its
/// values never change: ids made with it must stay the same across
/// versions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Milliseconds since the epoch, `delay` from now.
pub fn epoch_ms_in(delay: Duration) -> u64 {
    (SystemTime::now() + delay)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the epoch, now.
pub fn epoch_ms() -> u64 {
    epoch_ms_in(Duration::ZERO)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_messages_are_json_persistent_attempt_one() {
        let props = new_properties("m1.0", "m1");
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(id_of(&props), Some("m1.0"));
        assert_eq!(job_of(&props).as_deref(), Some("m1"));
        let root = BasicProperties::default().with_message_id("r".into());
        assert_eq!(job_of(&root).as_deref(), Some("r"), "a root is its own job");
        assert_eq!(attempt_of(&props), 1);
        assert_eq!(props.content_type().as_ref().unwrap().as_str(), JSON);
    }

    #[test]
    fn attempts_are_read_from_any_integer_or_text() {
        for value in [
            AMQPValue::LongInt(3),
            AMQPValue::ShortShortUInt(3),
            AMQPValue::LongString("3".into()),
        ] {
            let props = republish_properties(&BasicProperties::default(), &[(ATTEMPT, value)], &[]);
            assert_eq!(attempt_of(&props), 3);
        }
        let bad = republish_properties(
            &BasicProperties::default(),
            &[(ATTEMPT, AMQPValue::LongInt(-2))],
            &[],
        );
        assert_eq!(attempt_of(&bad), 1);
    }

    #[test]
    fn republishing_sets_removes_and_drops_x_death() {
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        headers.insert(NOT_BEFORE.into(), int(5));
        headers.insert("custom".into(), text("kept"));
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_message_id("m".into());
        let out = republish_properties(&props, &[(ATTEMPT, int(2))], &[NOT_BEFORE]);
        let keys: Vec<&str> = out
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, vec!["custom", ATTEMPT]);
        assert_eq!(id_of(&out), Some("m"));
        assert_eq!(out.delivery_mode(), &Some(2));
    }

    /// A producer's `user_id` made the broker refuse every copy published
    /// by warren's own user, and its `expiration` made dead letters expire:
    /// copies keep both as headers only, and every other property.
    #[test]
    fn copies_drop_user_id_and_expiration_and_keep_the_rest() {
        let mut headers = FieldTable::default();
        headers.insert("custom".into(), text("kept"));
        for broker_header in BROKER_HEADERS {
            headers.insert(broker_header.into(), int(1));
        }
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers)
            .with_delivery_mode(1)
            .with_priority(5)
            .with_correlation_id("corr".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("order".into())
            .with_user_id("webapp".into())
            .with_app_id("shop".into())
            .with_cluster_id("c1".into());
        let out = republish_properties(&props, &[(ATTEMPT, int(2))], &[]);
        assert_eq!(out.user_id(), &None);
        assert_eq!(out.expiration(), &None);
        assert_eq!(
            text_header(&out, ORIGINAL_USER_ID).as_deref(),
            Some("webapp")
        );
        assert_eq!(
            text_header(&out, ORIGINAL_EXPIRATION).as_deref(),
            Some("60000")
        );
        let expected = props
            .with_headers(out.headers().clone().unwrap())
            .with_delivery_mode(2);
        let strip = |p: &BasicProperties| {
            format!("{p:?}")
                .replace("Some(ShortString(\"webapp\"))", "None")
                .replace("Some(ShortString(\"60000\"))", "None")
        };
        assert_eq!(format!("{out:?}"), strip(&expected));
        let keys: Vec<&str> = out
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            ["custom", ATTEMPT, ORIGINAL_EXPIRATION, ORIGINAL_USER_ID]
        );
        // A copy of a copy keeps the originals.
        let again = republish_properties(&out, &[], &[]);
        assert_eq!(
            text_header(&again, ORIGINAL_USER_ID).as_deref(),
            Some("webapp")
        );
    }

    #[test]
    fn child_ids_are_deterministic_and_fit_the_protocol() {
        assert_eq!(child_id("abc", 0), "abc.0");
        assert_eq!(child_id("abc.3", 12), "abc.3.12");
        let long = "x".repeat(254);
        let child = child_id(&long, 7);
        assert!(child.len() <= MAX_ID, "{}", child.len());
        assert_eq!(child, child_id(&long, 7));
        assert_ne!(child_id(&long, 7), child_id(&format!("{long}y"), 7));
        assert!(child.ends_with(".7"));
    }

    /// A producer in another language may set any bytes as `message_id`;
    /// the AMQP client used to refuse such a frame and close the
    /// connection, so the worker never got past that message (the fix is in
    /// `vendor/amq-protocol-types`).
    #[test]
    fn ids_that_are_not_utf8_are_read_not_refused() {
        use amq_protocol_types::parsing::parse_short_string;
        let frame: &[u8] = &[6, b'i', b'd', 0xff, b'\n', b'"', 0xfe];
        let (_, id) = parse_short_string(frame).expect("a short string that is not UTF-8");
        assert_eq!(id.as_str(), "id\\xff\n\"\\xfe");
        assert_eq!(child_id(id.as_str(), 0), "id\\xff\n\"\\xfe.0");
    }

    /// An id of 100 bytes that are not UTF-8 is held as 400 characters
    /// (`\\xff` each); its length on the wire is still 100, so its children
    /// are `{id}.{n}` whole and it is never cut when re-published.
    #[test]
    fn long_ids_that_are_not_utf8_keep_their_children_whole() {
        use amq_protocol_types::parsing::parse_short_string;
        let mut frame = vec![100u8];
        frame.extend([0xffu8; 100]);
        let (_, id) = parse_short_string(&frame[..]).expect("100 bytes that are not UTF-8");
        let id = id.as_str();
        assert_eq!(id, "\\xff".repeat(100));
        assert_eq!(wire_len(id), 100);
        assert_eq!(child_id(id, 3), format!("{id}.3"));
        assert_eq!(short(id).as_str(), id, "not cut");
        // 250 such bytes: the child would take 252 bytes, still whole; 254
        // would take 256: its start and a hash, as for any long id.
        let id = "\\xff".repeat(250);
        assert_eq!(child_id(&id, 7), format!("{id}.7"));
        let id = "\\xff".repeat(254);
        let child = child_id(&id, 7);
        assert!(wire_len(&child) <= MAX_ID, "{child}");
        assert_eq!(child, child_id(&id, 7));
        assert_ne!(child, child_id(&"\\xff".repeat(253), 7));
        assert!(child.ends_with(".7"));
    }

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(one_line("a\nb\tc", 100), "a b c");
        assert_eq!(
            one_line(&"é".repeat(20), 10),
            format!("{}...", "é".repeat(7))
        );
    }

    /// Found by `fuzz/` (target `headers`): below 3 characters the
    /// ellipsis alone was longer than `max`.
    #[test]
    fn one_line_fits_max_even_when_the_ellipsis_does_not() {
        assert_eq!(one_line("Aa", 0), "");
        assert_eq!(one_line("abcdef", 1), ".");
        assert_eq!(one_line("abcdef", 2), "..");
        assert_eq!(one_line("abcdef", 3), "...");
        assert_eq!(one_line("abcdef", 4), "a...");
        for max in 0..8 {
            assert!(one_line("abcdefgh", max).chars().count() <= max);
        }
    }
}
