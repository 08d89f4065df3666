//! Schedules (`schedules:`; DESIGN.md, *Schedules*): a cron expression in a
//! time zone, the stage its ticks go to and what each tick sends; and the
//! pure decision of what the job keeper does next for one schedule, given
//! the last tick recorded on the broker and the time now.
//!
//! A tick is an instant (ms since the Unix epoch, always a whole second).
//! The expression walks the wall clock of its time zone (croner): a fixed
//! time that falls in a spring-forward gap fires once, just after the gap;
//! a fixed time in a fall-back overlap fires once, on its first pass; an
//! interval (`0 * * * *`) fires on both passes, an hour of real time apart.
//!
//! The keeper records each tick on the job stream ([`Tick::record_id`]):
//! `firing` before it sends, `fired` after, `armed` for a starting point
//! that fires nothing (a new schedule, or missed ticks passed over). A
//! tick up to [`LATE`] late (a keeper taking over) is fired as usual;
//! older ones were missed, and `missed` says what to do: `once` fires the
//! last of them (unless a tick within [`LATE`] follows it), `skip` none.

use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

/// How late a tick may be and still fire as usual (later, it was missed).
pub const LATE: Duration = Duration::from_secs(60);

/// The id prefix of the job stream messages that record ticks.
pub const TICK_RECORD: &str = "schedule-tick.";

/// The environment variable that lets `cron` take a sixth field, seconds,
/// first (`WARREN_TEST_CRON_SECONDS=1`): for tests that need a tick every
/// second. The contract's expressions have five fields.
pub const SECONDS_FOR_TESTS: &str = "WARREN_TEST_CRON_SECONDS";

/// One schedule of the pipeline file.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Its name (the key under `schedules:`); starts every id it sends.
    pub name: String,
    /// When it ticks.
    pub cron: CronExpr,
    /// The time zone the expression is read in.
    pub timezone: Tz,
    /// The stage its messages go to.
    pub stage: String,
    /// What each tick sends.
    pub input: ScheduleInput,
    /// What to do with ticks missed while no keeper ran.
    pub missed: Missed,
}

/// What each tick sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleInput {
    /// One message with this body, id `{schedule}.{tick}`.
    Body(serde_json::Value),
    /// Every line of this JSON lines file (read at each tick), ids
    /// `{schedule}.{tick}.{line number}`.
    File(PathBuf),
}

/// What to do with ticks missed (more than [`LATE`] late).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// Fire the last missed tick, once.
    Once,
    /// Fire none of them.
    Skip,
}

/// A parsed cron expression and the text it was read from.
#[derive(Clone, Debug)]
pub struct CronExpr {
    text: String,
    cron: Cron,
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &CronExpr) -> bool {
        self.text == other.text
    }
}

impl CronExpr {
    /// Reads five fields (minute hour day-of-month month day-of-week) or
    /// `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly`
    /// (`@annually`); with `seconds`, also six fields, seconds first.
    pub fn parse(text: &str, seconds: bool) -> Result<CronExpr, String> {
        let trimmed = text.trim();
        let wanted = "write five fields (minute hour day-of-month month day-of-week, like `0 3 * * *`) or one of @hourly, @daily, @weekly, @monthly, @yearly";
        let read = match trimmed.to_ascii_lowercase().as_str() {
            "@midnight" => "@daily".to_string(),
            "@reboot" => return Err(format!("`@reboot` has no tick; {wanted}")),
            other => other.to_string(),
        };
        let fields = read.split_whitespace().count();
        let counted = read.starts_with('@') || fields == 5 || (seconds && fields == 6);
        if !counted {
            return Err(format!("has {fields} fields; {wanted}"));
        }
        let parser = CronParser::builder()
            .seconds(if seconds {
                Seconds::Optional
            } else {
                Seconds::Disallowed
            })
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(&read)
            .map_err(|error| format!("is not a cron expression ({error}); {wanted}"))?;
        Ok(CronExpr {
            text: trimmed.to_string(),
            cron,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Schedule {
    /// The first tick strictly after `after_ms`, if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let from = self.at(after_ms)?;
        let next = self.cron.cron.find_next_occurrence(&from, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last tick strictly before `before_ms`, if any.
    pub fn last_before(&self, before_ms: u64) -> Option<u64> {
        // Ticks are whole seconds; croner steps off the origin's second.
        let second = before_ms / 1000 * 1000;
        let from = self.at(second)?;
        let inclusive = second < before_ms;
        let last = self
            .cron
            .cron
            .find_previous_occurrence(&from, inclusive)
            .ok()?;
        u64::try_from(last.timestamp_millis()).ok()
    }

    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        let utc = Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
        Some(utc.with_timezone(&self.timezone))
    }

    /// What the keeper does next, given the last tick recorded (`None`:
    /// none yet) and the time now. Applying each step and asking again
    /// ends in [`Step::Wait`].
    pub fn step(&self, last: Option<Tick>, now_ms: u64) -> Step {
        let Some(last) = last else {
            return Step::Arm(now_ms);
        };
        if last.phase == Phase::Firing {
            return Step::Finish(last.at_ms);
        }
        let since = last.at_ms;
        let edge = now_ms.saturating_sub(LATE.as_millis() as u64);
        let missed = self.last_before(edge).filter(|&tick| tick > since);
        let late = self
            .next_after(since.max(edge.saturating_sub(1)))
            .filter(|&tick| tick <= now_ms);
        match (missed, late) {
            (Some(tick), None) if self.missed == Missed::Once => Step::Fire(tick),
            (Some(tick), _) => Step::Skip(tick),
            (None, Some(tick)) => Step::Fire(tick),
            (None, None) => Step::Wait(self.next_after(since.max(now_ms))),
        }
    }

    /// The next tick, for people: the tick a keeper waits for, and
    /// whether it is due already (no keeper fired it yet: none runs, or
    /// one is taking over).
    pub fn next_tick(&self, last: Option<Tick>, now_ms: u64) -> (Option<u64>, bool) {
        match self.step(last, now_ms) {
            Step::Wait(next) => (next, false),
            Step::Arm(_) => (self.next_after(now_ms), false),
            Step::Fire(at) | Step::Finish(at) | Step::Skip(at) => (Some(at), true),
        }
    }

    /// The job of tick `tick_ms`, and the id of its message when it sends
    /// a body: `{schedule}.{tick}`, the tick in UTC like
    /// `2026-03-29T01:00:00Z`.
    pub fn job_id(&self, tick_ms: u64) -> String {
        format!("{}.{}", self.name, tick_text(tick_ms))
    }
}

/// A tick as text: UTC, to the second (`2026-03-29T01:00:00Z`).
pub fn tick_text(tick_ms: u64) -> String {
    match Utc.timestamp_millis_opt(tick_ms as i64).single() {
        Some(at) => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => tick_ms.to_string(),
    }
}

/// A tick in the schedule's time zone, for people
/// (`2026-03-29 03:00:00 CEST`).
pub fn local_text(tick_ms: u64, timezone: Tz) -> String {
    match Utc.timestamp_millis_opt(tick_ms as i64).single() {
        Some(at) => at
            .with_timezone(&timezone)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        None => tick_ms.to_string(),
    }
}

/// The messages of an `input` file: (line number from 1, the line), blank
/// lines left out; the first line that is not JSON is an error naming it.
pub fn input_lines(text: &[u8]) -> Result<Vec<(usize, &[u8])>, String> {
    let mut lines = Vec::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(line)
            .map_err(|error| format!("line {}: not JSON ({error})", index + 1))?;
        lines.push((index + 1, line));
    }
    Ok(lines)
}

/// What the keeper does next for a schedule ([`Schedule::step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Record `armed` at this time: ticks after it are due, none before.
    Arm(u64),
    /// Record `firing`, send the tick, record `fired`.
    Fire(u64),
    /// A tick recorded `firing` and not `fired` (its keeper stopped): send
    /// it again (the same ids) and record `fired`.
    Finish(u64),
    /// Missed ticks up to this one are passed over: record `armed` here.
    Skip(u64),
    /// Nothing to do before this tick (none: the expression never ticks
    /// again).
    Wait(Option<u64>),
}

/// Where a tick is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// A starting point: nothing was sent for it, ticks after it are due.
    Armed,
    /// Its messages are being sent.
    Firing,
    /// Its messages were all confirmed by the broker.
    Fired,
}

impl Phase {
    /// Its name in records and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Armed => "armed",
            Phase::Firing => "firing",
            Phase::Fired => "fired",
        }
    }

    fn parse(text: &str) -> Option<Phase> {
        match text {
            "armed" => Some(Phase::Armed),
            "firing" => Some(Phase::Firing),
            "fired" => Some(Phase::Fired),
            _ => None,
        }
    }
}

/// The last tick recorded for a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick {
    /// The tick (ms since the Unix epoch).
    pub at_ms: u64,
    /// Where it is.
    pub phase: Phase,
}

impl Tick {
    /// The id of the job stream message that records this tick of
    /// `schedule`: `schedule-tick.{phase}.{tick ms}.{schedule}`.
    pub fn record_id(&self, schedule: &str) -> String {
        format!(
            "{TICK_RECORD}{}.{}.{schedule}",
            self.phase.as_str(),
            self.at_ms
        )
    }

    /// The schedule and tick a job stream message's id records, if it
    /// records one.
    pub fn from_record_id(id: &str) -> Option<(String, Tick)> {
        let mut parts = id.strip_prefix(TICK_RECORD)?.splitn(3, '.');
        let phase = Phase::parse(parts.next()?)?;
        let at_ms = parts.next()?.parse().ok()?;
        let schedule = parts.next().filter(|s| !s.is_empty())?;
        Some((schedule.to_string(), Tick { at_ms, phase }))
    }

    /// The later of two records of one schedule (records only move
    /// forward: a later tick, or the same tick further on), so reading a
    /// record twice or out of turn changes nothing.
    pub fn latest(a: Option<Tick>, b: Tick) -> Tick {
        a.map_or(b, |a| a.max(b))
    }
}

#[cfg(test)]
mod tests;
