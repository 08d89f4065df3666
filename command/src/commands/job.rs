//! `warren job FILE ID [--json] [--wait D] [--cancel]`: what became of a
//! job. Reads the pipeline's job stream into this box's store (`.warren/`,
//! from where an earlier call left off), then answers; `--wait` goes on
//! reading until the job is done, failed or cancelled. `--cancel` cancels
//! it first (`Producer::cancel`) and shows it as it is then.
//!
//! Exit codes: 0 for a job that is done, or still going without `--wait`,
//! or cancelled by this call; 1 for a failed job, a cancelled one, an
//! unknown one, and one still going when `--wait` ran out.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use tokio::time::Instant;
use warren::jobs::{JobState, JobView};

use warren_ops::jobs::{
    store::{self, Store},
    tracker::Tracker,
};

use crate::exit::{Failed, Usage};

/// Longest time spent reading what the stream holds before answering.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Tries to open the store while another `warren job` holds it.
const STORE_BUSY: Duration = Duration::from_secs(10);

/// Prints the state of job `id`.
pub async fn run(
    file: &Path,
    id: &str,
    json: bool,
    wait: Option<Duration>,
    cancel: bool,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if !pipeline.jobs.track {
        return Err(Usage(format!(
            "{}: pipeline `{}` does not track jobs (jobs.track is off), so no job has a record; set `jobs: {{ track: true }}`",
            file.display(),
            pipeline.name
        ))
        .into());
    }
    if cancel {
        let producer = warren::Producer::connect(&pipeline).await?;
        let cancelled = producer.cancel(id).await;
        producer.close().await;
        cancelled.with_context(|| format!("cancel job {id}"))?;
    }
    let store = open_store(&store::path(&pipeline.name, "jobs")).await?;
    let mut tracker = Tracker::open(&pipeline, store).await?;
    tracker.catch_up(Instant::now() + CATCH_UP).await?;
    tracker.prune().await?;
    let mut view = tracker.view(id)?;
    if let Some(wait) = wait
        && view.state != JobState::Unknown
    {
        view = tracker.wait(id, Instant::now() + wait).await?;
    }
    tracker.close().await;
    if json {
        out!("{}", serde_json::to_string(&view).expect("a view is JSON"));
    } else {
        out!("{}", describe(&view));
    }
    match view.state {
        JobState::Done => Ok(()),
        JobState::Failed => Err(Failed(format!("job {id} failed")).into()),
        JobState::Cancelled if cancel => Ok(()),
        JobState::Cancelled => Err(Failed(format!("job {id} was cancelled")).into()),
        JobState::Unknown => Err(Failed(format!(
            "job {id} is unknown: never seen by this pipeline, or older than jobs.keep"
        ))
        .into()),
        _ if wait.is_some() => Err(Failed(format!("job {id} is still running")).into()),
        _ => Ok(()),
    }
}

/// Opens the store, waiting while another `warren job` holds it.
pub(crate) async fn open_store(path: &Path) -> Result<Store> {
    let started = Instant::now();
    loop {
        match Store::open(path) {
            Ok(Some(store)) => return Ok(store),
            Ok(None) if started.elapsed() < STORE_BUSY => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(None) => {
                return Err(Failed(format!(
                    "{} is held by another `warren job` for more than {}s; try again when it is done",
                    path.display(),
                    STORE_BUSY.as_secs()
                ))
                .into());
            }
            Err(why) => return Err(anyhow::anyhow!(why)).context("the job store"),
        }
    }
}

/// The view as text: the state, then one line per stage and per dead letter.
fn describe(view: &JobView) -> String {
    let state = serde_json::to_value(view.state).expect("a state is JSON");
    let mut text = format!("job {}: {}", view.id, state.as_str().unwrap_or("?"));
    if let (Some(created), Some(finished)) = (view.created_ms, view.finished_ms) {
        text.push_str(&format!(
            " in {:.1}s",
            finished.saturating_sub(created) as f64 / 1000.0
        ));
    }
    for (stage, counts) in &view.stages {
        text.push_str(&format!(
            "\n  {stage:<20} done {:>6}  waiting {:>6}  retrying {:>6}  dead {:>6}",
            counts.done, counts.waiting, counts.retrying, counts.dead
        ));
        if counts.held > 0 {
            text.push_str(&format!("  held {:>6}", counts.held));
        }
        if counts.cancelled > 0 {
            text.push_str(&format!("  cancelled {:>6}", counts.cancelled));
        }
    }
    for (stage, progress) in &view.progress {
        text.push_str(&format!(
            "\n  progress at {stage}: {:.0}%",
            progress.fraction.0 * 100.0
        ));
        if !progress.note.is_empty() {
            text.push_str(&format!(" ({})", progress.note));
        }
    }
    if let Some(result) = &view.result {
        let shown = serde_json::to_string(result).expect("a result is JSON");
        text.push_str(&format!(
            "\n  result: {}{}",
            warren::message::one_line(&shown, 2000),
            if view.result_truncated {
                " (truncated: over jobs.result_max)"
            } else {
                ""
            }
        ));
    }
    if let Some(callback) = &view.callback {
        text.push_str(&format!("\n  callback: {}", callback.state));
        if callback.failed_attempts > 0 {
            text.push_str(&format!(
                " after {} failed attempts (last: {})",
                callback.failed_attempts,
                callback.last_error.as_deref().unwrap_or("?")
            ));
        }
    }
    for dead in &view.dead_letters {
        text.push_str(&format!(
            "\n  dead letter {} at {}: {}",
            dead.id, dead.stage, dead.reason
        ));
    }
    text
}
