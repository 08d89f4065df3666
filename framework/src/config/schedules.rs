//! `schedules:`: each schedule's cron expression, time zone, stage, what it
//! sends (`body` or `input`, exactly one) and `missed`, every problem at
//! the path of its field.

use std::path::Path;

use super::{
    check::Checker,
    raw::{RawFile, RawSchedule},
};
use crate::schedule::{CronExpr, Missed, Schedule, ScheduleInput, input_lines};

/// Largest `input` file a schedule sends at each tick.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// 2000-01-01T00:00:00Z, where the check that an expression ticks at all
/// starts.
const NEVER_FROM_MS: u64 = 946_684_800_000;

/// Checks every schedule; returns those that passed.
pub(super) fn check(
    v: &mut Checker,
    raw: &RawFile,
    stages: &[&str],
    track: bool,
    seconds: bool,
) -> Vec<Schedule> {
    let Some(schedules) = &raw.schedules else {
        return Vec::new();
    };
    if !schedules.is_empty() && !track {
        v.problem(
            "schedules",
            "needs `jobs.track: true`: the job keeper fires the schedules and records their ticks on the job stream",
        );
    }
    let empty = RawSchedule::default();
    schedules
        .iter()
        .filter_map(|(name, schedule)| {
            one(
                v,
                name,
                schedule.as_ref().unwrap_or(&empty),
                stages,
                seconds,
            )
        })
        .collect()
}

fn one(
    v: &mut Checker,
    name: &str,
    raw: &RawSchedule,
    stages: &[&str],
    seconds: bool,
) -> Option<Schedule> {
    let path = format!("schedules.{name}");
    let before = v.count();
    v.name(&path, name);
    let cron = match raw.cron.as_deref() {
        Some(text) => CronExpr::parse(text, seconds)
            .map_err(|error| v.problem(format!("{path}.cron"), format!("`{text}` {error}")))
            .ok(),
        None => {
            v.problem(
                format!("{path}.cron"),
                "missing; say when it ticks, like `cron: \"0 3 * * *\"` or `cron: \"@daily\"`",
            );
            None
        }
    };
    let timezone = match raw.timezone.as_deref() {
        None => Some(chrono_tz::Tz::UTC),
        Some(text) => text
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                v.problem(
                    format!("{path}.timezone"),
                    format!("`{text}` is not a known time zone; give an IANA name like Europe/Berlin, America/New_York or UTC"),
                )
            })
            .ok(),
    };
    let stage = match raw.stage.as_deref() {
        Some(stage) if stages.contains(&stage) => Some(stage.to_string()),
        Some(stage) => {
            v.problem(
                format!("{path}.stage"),
                format!(
                    "`{stage}` is not a stage of this pipeline; its stages are: {}",
                    stages.join(", ")
                ),
            );
            None
        }
        None => {
            v.problem(
                format!("{path}.stage"),
                "missing; name the stage each tick sends to",
            );
            None
        }
    };
    let input = match (&raw.body, raw.input.as_deref()) {
        (Some(_), Some(_)) => {
            v.problem(
                path.clone(),
                "gives both `body` and `input`; give one: `body` (one message) or `input` (a JSON lines file, a message per line)",
            );
            None
        }
        (None, None) => {
            v.problem(
                path.clone(),
                "sends nothing; give `body` (one message) or `input` (a JSON lines file, a message per line)",
            );
            None
        }
        (Some(body), None) => Some(ScheduleInput::Body(body.clone())),
        (None, Some(file)) => {
            let resolved = v.resolve(file);
            match check_input(&resolved) {
                Ok(()) => Some(ScheduleInput::File(resolved)),
                Err(error) => {
                    v.problem(format!("{path}.input"), format!("`{file}` {error}"));
                    None
                }
            }
        }
    };
    let missed = match raw.missed.as_deref() {
        None | Some("once") => Some(Missed::Once),
        Some("skip") => Some(Missed::Skip),
        Some(other) => {
            v.problem(
                format!("{path}.missed"),
                format!("`{other}` is neither `once` (fire the last missed tick) nor `skip`"),
            );
            None
        }
    };
    if v.count() > before {
        return None;
    }
    let schedule = Schedule {
        name: name.to_string(),
        cron: cron?,
        timezone: timezone?,
        stage: stage?,
        input: input?,
        missed: missed?,
    };
    // Without years an expression ticks forever or never: asked from a
    // fixed moment, the answer does not depend on the day of the check.
    if schedule.next_after(NEVER_FROM_MS).is_none() {
        v.problem(
            format!("{path}.cron"),
            format!(
                "`{}` never ticks (a day that does not exist, like 30 February)",
                schedule.cron.as_str()
            ),
        );
        return None;
    }
    Some(schedule)
}

/// An `input` file: readable, at most [`MAX_INPUT_BYTES`], each line that
/// is not blank a JSON document.
fn check_input(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!("does not exist ({})", path.display()),
        _ => format!("cannot be read: {error}"),
    })?;
    if meta.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "is {} bytes; a schedule's input is at most {MAX_INPUT_BYTES} bytes",
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(|error| format!("cannot be read: {error}"))?;
    input_lines(&text).map(|_| ())
}
