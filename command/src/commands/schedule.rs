//! `warren schedule FILE [--json]`: each schedule with its last tick (as
//! recorded on the job stream by the job keeper) and its next one. Reads
//! the stream into the same store as `warren job` (`.warren/`, from where
//! an earlier call left off).

use std::{path::Path, time::Duration};

use anyhow::Result;
use serde_json::{Value, json};
use tokio::time::Instant;
use warren::{
    message::epoch_ms,
    schedule::{Schedule, Tick, local_text, tick_text},
};
use warren_ops::jobs::{store, tracker::Tracker};

use super::job::open_store;
use crate::exit::Usage;

/// Longest time spent reading what the stream holds before answering.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Prints the schedules of the pipeline in `file`.
pub async fn run(file: &Path, json: bool) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if pipeline.schedules.is_empty() {
        return Err(Usage(format!(
            "{}: pipeline `{}` has no schedules",
            file.display(),
            pipeline.name
        ))
        .into());
    }
    let store = open_store(&store::path(&pipeline.name, "jobs")).await?;
    let mut tracker = Tracker::open(&pipeline, store).await?;
    tracker.catch_up(Instant::now() + CATCH_UP).await?;
    let ticks = tracker.store().ticks().map_err(anyhow::Error::msg)?;
    tracker.close().await;
    let now = epoch_ms();
    let rows: Vec<Value> = pipeline
        .schedules
        .iter()
        .map(|schedule| row(schedule, ticks.get(&schedule.name).copied(), now))
        .collect();
    if json {
        out!("{}", Value::Array(rows));
    } else {
        out!(
            "{:<16} {:<16} {:<16} {:<12} {:<36} next tick",
            "schedule",
            "cron",
            "timezone",
            "stage",
            "last tick"
        );
        for row in &rows {
            let last = match &row["last"] {
                Value::Null => "none yet".to_string(),
                last => format!(
                    "{} ({})",
                    last["local"].as_str().unwrap_or("?"),
                    last["phase"].as_str().unwrap_or("?")
                ),
            };
            let next = match (&row["next"], row["due"].as_bool()) {
                (_, Some(true)) => "due now (no keeper has fired it yet)".to_string(),
                (Value::Null, _) => "never".to_string(),
                (next, _) => next["local"].as_str().unwrap_or("?").to_string(),
            };
            out!(
                "{:<16} {:<16} {:<16} {:<12} {:<36} {next}",
                row["schedule"].as_str().unwrap_or("?"),
                row["cron"].as_str().unwrap_or("?"),
                row["timezone"].as_str().unwrap_or("?"),
                row["stage"].as_str().unwrap_or("?"),
                last
            );
        }
    }
    Ok(())
}

/// One schedule: its settings, its last tick and its next.
fn row(schedule: &Schedule, last: Option<Tick>, now: u64) -> Value {
    let tick = |at: u64| {
        json!({
            "tick": tick_text(at),
            "tick_ms": at,
            "local": local_text(at, schedule.timezone),
        })
    };
    let (next, due) = schedule.next_tick(last, now);
    let mut row = json!({
        "schedule": schedule.name,
        "cron": schedule.cron.as_str(),
        "timezone": schedule.timezone.name(),
        "stage": schedule.stage,
        "missed": match schedule.missed {
            warren::schedule::Missed::Once => "once",
            warren::schedule::Missed::Skip => "skip",
        },
        "last": null,
        "next": next.map(tick),
        "due": due,
    });
    if let Some(last) = last {
        let mut shown = tick(last.at_ms);
        shown["phase"] = json!(last.phase.as_str());
        shown["job"] = json!(schedule.job_id(last.at_ms));
        row["last"] = shown;
    }
    row
}
