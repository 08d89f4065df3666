//! Delays on the broker (pure): a message with an `x-warren-not-before`
//! still ahead waits in a cascade of delay levels, never in a worker.
//!
//! Level `n` is a queue whose messages all live [`level_wait`]`(n)` =
//! [`UNIT`] × 2^n and a topic exchange in front of it. A delayed message's
//! routing key spells its remaining delay in units, one word per level from
//! the top level down (`0` or `1`), then its stage:
//! `0.0. ... .1.0.1.grade`. Level `n`'s exchange sends a key whose word for
//! `n` is `1` into its queue and any other to level `n - 1`'s exchange;
//! the queue, when its time is up, dead-letters the message (same key) to
//! level `n - 1`'s exchange too; level 0 hands on to the *due* exchange,
//! which routes `#.{stage}` to the stage queue. So a message waits in
//! exactly the levels of its set bits, and their waits add up to its
//! delay. Each level queue holds messages of one wait only, so its head
//! always expires first: a long delay never holds up a short one (a
//! per-message TTL expires only at a queue's head). This is the design
//! of NServiceBus's delayed delivery on RabbitMQ, with a unit of 125 ms
//! instead of a second, so that a message is handled within the contract's
//! second of its time and never before it.

use std::time::Duration;

/// The wait of level 0; every delay is rounded up to a whole number of
/// units, so a message is never early.
pub const UNIT: Duration = Duration::from_millis(125);

/// Levels in the cascade: level 24 waits 2^24 units (about 24 days), and
/// all of them together 48.5 days, more than [`LONGEST`].
pub const LEVELS: u8 = 25;

/// The longest delay a producer may ask for (DESIGN.md: 1 s to 30 days).
/// A not-before further ahead (set by hand) goes round the cascade again.
pub const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most units the cascade holds a message for in one pass.
const CAPACITY: u64 = (1 << LEVELS) - 1;

/// How long a message waits in level `level`'s queue.
pub fn level_wait(level: u8) -> Duration {
    UNIT * (1u32 << level)
}

/// The remaining delay in units, rounded up, at most one pass of the
/// cascade.
pub fn units(remaining: Duration) -> u64 {
    let unit = UNIT.as_nanos();
    let units = remaining.as_nanos().div_ceil(unit);
    u64::try_from(units).unwrap_or(u64::MAX).min(CAPACITY)
}

/// The level a message with `remaining` delay enters first (the highest
/// set bit of its units), or `None` when it is due now and goes straight
/// to its stage.
pub fn next_level(remaining: Duration) -> Option<u8> {
    let units = units(remaining);
    (units > 0).then(|| (63 - units.leading_zeros()) as u8)
}

/// The routing key of a message for `stage` with `remaining` delay: the
/// bits of its units from the top level down, then the stage.
pub fn routing_key(remaining: Duration, stage: &str) -> String {
    let units = units(remaining);
    let mut key = String::with_capacity(2 * usize::from(LEVELS) + stage.len());
    for level in (0..LEVELS).rev() {
        key.push(if units & (1 << level) != 0 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(stage);
    key
}

/// The stage a delayed message's routing key ([`routing_key`]) is for.
pub fn stage_of(key: &str) -> Option<&str> {
    key.get(2 * usize::from(LEVELS)..)
        .filter(|stage| !stage.is_empty())
}

/// The binding pattern of level `level`'s exchange that matches keys whose
/// word for that level is `bit` (`1`: into the level's queue; `0`: on to
/// the level below).
pub fn pattern(level: u8, bit: bool) -> String {
    let mut pattern = "*.".repeat(usize::from(LEVELS - 1 - level));
    pattern.push(if bit { '1' } else { '0' });
    pattern.push_str(".#");
    pattern
}

/// The due exchange's binding pattern for `stage`'s queue.
pub fn due_pattern(stage: &str) -> String {
    format!("#.{stage}")
}

/// How long is left until `not_before_ms` at `now_ms` (both ms since the
/// Unix epoch); `None` when it is due.
pub fn remaining(not_before_ms: u64, now_ms: u64) -> Option<Duration> {
    (not_before_ms > now_ms).then(|| Duration::from_millis(not_before_ms - now_ms))
}

/// When a producer wants its messages handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// This long after each is sent.
    After(Duration),
    /// Not before this time (ms since the Unix epoch).
    At(u64),
}

impl When {
    /// The `x-warren-not-before` of a message sent at `now_ms`.
    pub fn not_before_ms(self, now_ms: u64) -> u64 {
        match self {
            When::After(delay) => now_ms.saturating_add(delay.as_millis() as u64),
            When::At(at) => at,
        }
    }
}

/// A delay as written (`30s`, `2h`), at most [`LONGEST`].
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let delay = crate::duration::parse(text)?;
    if delay > LONGEST {
        return Err(format!(
            "`{}` is longer than the 30 days a message can be delayed by",
            text.trim()
        ));
    }
    Ok(delay)
}

/// Whether a producer may ask for `not_before_ms` at `now_ms`: at most
/// [`LONGEST`] ahead (a time past means now).
pub fn check(not_before_ms: u64, now_ms: u64) -> Result<(), String> {
    match remaining(not_before_ms, now_ms) {
        Some(left) if left > LONGEST + Duration::from_secs(1) => Err(format!(
            "a message can be delayed by 30 days at most, not {} days",
            left.as_secs() / 86_400
        )),
        _ => Ok(()),
    }
}

/// A time written in RFC 3339 (`2026-12-24T18:00:00Z`,
/// `2026-12-24T19:00:00.5+01:00`) as ms since the Unix epoch.
pub fn parse_at(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = |why: &str| {
        format!(
            "`{text}` is not a time: {why}; write it in RFC 3339, like 2026-12-24T18:00:00Z or 2026-12-24T19:00:00+01:00"
        )
    };
    let (base, offset_s): (&str, i64) = if let Some(base) = text.strip_suffix(['Z', 'z']) {
        (base, 0)
    } else {
        let split = text.len().checked_sub(6).ok_or_else(|| bad("too short"))?;
        let (base, zone) = text
            .split_at_checked(split)
            .ok_or_else(|| bad("no time zone"))?;
        let bytes = zone.as_bytes();
        let sign = match bytes[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return Err(bad("it ends in neither Z nor an offset like +01:00")),
        };
        let digits = |at: std::ops::Range<usize>| {
            zone.get(at)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok())
        };
        match (digits(1..3), &zone[3..4], digits(4..6)) {
            (Some(h), ":", Some(m)) if h < 24 && m < 60 => (base, sign * (h * 3600 + m * 60)),
            _ => return Err(bad("its offset is not like +01:00")),
        }
    };
    let local = humantime::parse_rfc3339(&format!("{base}Z")).map_err(|e| bad(&e.to_string()))?;
    let ms = local
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad("it is before 1970"))?
        .as_millis() as i64;
    u64::try_from(ms - offset_s * 1000).map_err(|_| bad("it is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic pattern of `*`, `#` and words against a key (as RabbitMQ
    /// matches them).
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.first(), key.first()) {
            (None, None) => true,
            (Some(&"#"), _) => {
                matches(&pattern[1..], key) || (!key.is_empty() && matches(pattern, &key[1..]))
            }
            (Some(&"*"), Some(_)) => matches(&pattern[1..], &key[1..]),
            (Some(word), Some(k)) if word == k => matches(&pattern[1..], &key[1..]),
            _ => false,
        }
    }

    fn routes(pattern: &str, key: &str) -> bool {
        let p: Vec<&str> = pattern.split('.').collect();
        let k: Vec<&str> = key.split('.').collect();
        matches(&p, &k)
    }

    /// Follows a message through the cascade as the broker would route it
    /// from level `from`'s exchange: the levels whose queues it waits in,
    /// and whether the due exchange takes it to `stage`.
    fn walk(from: u8, key: &str, stage: &str) -> (Vec<u8>, bool) {
        let mut waited = Vec::new();
        let mut level = Some(from);
        while let Some(n) = level {
            let into_queue = routes(&pattern(n, true), key);
            let on = routes(&pattern(n, false), key);
            assert!(into_queue != on, "level {n} routes {key} exactly one way");
            if into_queue {
                waited.push(n);
            }
            level = n.checked_sub(1);
        }
        (waited, routes(&due_pattern(stage), key))
    }

    #[test]
    fn a_delay_waits_in_the_levels_of_its_bits_and_adds_up() {
        for ms in [
            1, 124, 125, 126, 999, 1000, 1001, 60_000, 600_000, 86_400_000,
        ] {
            let remaining = Duration::from_millis(ms);
            let key = routing_key(remaining, "grade");
            let first = next_level(remaining).unwrap();
            let (waited, delivered) = walk(first, &key, "grade");
            assert!(delivered, "{key} reaches grade");
            assert_eq!(waited.first(), Some(&first), "{ms} ms enters its top level");
            let total: Duration = waited.iter().map(|n| level_wait(*n)).sum();
            assert!(total >= remaining, "{ms} ms never early: {total:?}");
            assert!(total < remaining + UNIT, "{ms} ms late by less than a unit");
            // Entered from the top, the same levels.
            assert_eq!(walk(LEVELS - 1, &key, "grade").0, waited);
        }
    }

    #[test]
    fn the_stage_is_read_back_from_the_key() {
        for stage in ["grade", "a", "load-rows"] {
            let key = routing_key(Duration::from_secs(90), stage);
            assert_eq!(stage_of(&key), Some(stage));
        }
        assert_eq!(stage_of("1.0.grade"), None);
        assert_eq!(stage_of(&routing_key(Duration::ZERO, "")), None);
    }

    #[test]
    fn a_due_message_goes_straight_through() {
        assert_eq!(next_level(Duration::ZERO), None);
        assert_eq!(units(Duration::ZERO), 0);
        assert_eq!(remaining(1000, 1000), None);
        assert_eq!(remaining(999, 1000), None);
        assert_eq!(remaining(1500, 1000), Some(Duration::from_millis(500)));
    }

    #[test]
    fn the_next_level_is_the_highest_bit_of_the_units() {
        assert_eq!(next_level(Duration::from_nanos(1)), Some(0));
        assert_eq!(next_level(UNIT), Some(0));
        assert_eq!(next_level(UNIT + Duration::from_nanos(1)), Some(1));
        assert_eq!(next_level(Duration::from_secs(1)), Some(3));
        assert_eq!(next_level(Duration::from_secs(10 * 60)), Some(12));
        assert_eq!(next_level(LONGEST), Some(LEVELS - 1));
        // Beyond one pass: the whole cascade, then round again.
        let far = Duration::from_secs(400 * 24 * 3600);
        assert_eq!(units(far), CAPACITY);
        assert_eq!(next_level(far), Some(LEVELS - 1));
    }

    #[test]
    fn the_levels_hold_thirty_days() {
        let all: Duration = (0..LEVELS).map(level_wait).sum();
        assert!(all >= LONGEST, "{all:?}");
        assert_eq!(level_wait(0), UNIT);
        assert_eq!(level_wait(3), Duration::from_secs(1));
    }

    #[test]
    fn times_are_read_in_rfc3339_with_their_offset() {
        assert_eq!(parse_at("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_at("1970-01-01T01:00:01.5+01:00"), Ok(1500));
        assert_eq!(parse_at("1970-01-01T00:00:01-00:30"), Ok(1_801_000));
        assert_eq!(
            parse_at("2026-12-24T18:00:00Z"),
            parse_at("2026-12-24T19:00:00+01:00")
        );
        for bad in [
            "",
            "tomorrow",
            "2026-12-24T18:00:00",
            "2026-12-24T18:00:00+1:00",
            "2026-12-24T18:00:00+25:00",
            "2026-13-24T18:00:00Z",
        ] {
            let error = parse_at(bad).unwrap_err();
            assert!(error.contains("RFC 3339"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_producer_may_delay_by_thirty_days_at_most() {
        let day = 86_400_000;
        let now = 100 * day;
        assert!(check(now + 30 * day, now).is_ok());
        assert!(check(now - day, now).is_ok());
        let error = check(now + 31 * day, now).unwrap_err();
        assert!(error.contains("30 days at most, not 31 days"), "{error}");
    }

    #[test]
    fn only_its_stage_takes_a_due_message() {
        let key = routing_key(Duration::from_secs(1), "a");
        assert!(routes(&due_pattern("a"), &key));
        assert!(!routes(&due_pattern("b"), &key));
        assert!(!routes(&due_pattern("xa"), &key));
        assert_eq!(key.split('.').count(), usize::from(LEVELS) + 1);
    }
}
