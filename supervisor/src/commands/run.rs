//! `warren run FILE --input INPUT`: declare, send, supervise until drained,
//! summarise.
//!
//! How far a run got is kept in `.warren/{pipeline}-{input}.json` in the
//! working directory (`input` is the start of the input file's SHA-256):
//! the number of input lines the broker confirmed. Run the same command
//! again after a Ctrl-C and it sends only the rest, while the workers pick up
//! what the broker still holds; finished work is not redone. Messages get the
//! id `{input}.{line}` (or `--id-field`), so the sink writes each input's
//! results once even if something is handled again.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use warren::{Pipeline, Producer, dead_letters};

use crate::{
    commands::declare::declare,
    drained::Watcher,
    exit::{Failed, Usage},
    feed,
    input::Input,
    progress::Progress,
    signals,
    supervise::{Options, Supervisor, status::SupervisorStatus},
};

/// Time between looks at the queues while waiting.
const EVERY: Duration = Duration::from_millis(500);

/// What `warren run` was asked.
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// The input file (`-` for stdin).
    pub input: PathBuf,
    /// The stage that receives the input (the pipeline's entry stage).
    pub stage: Option<String>,
    /// Field to use as message id.
    pub id_field: Option<String>,
    /// Send the good lines of an input with bad ones.
    pub skip_bad: bool,
    /// Forget a previous run of the same input and send everything.
    pub fresh: bool,
}

/// How far a run got.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    input: String,
    lines: usize,
    sent: usize,
}

/// Runs the pipeline on the input to the end.
pub async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let pipeline = warren::config::load(&args.file)?;
    let entry = entry_stage(&pipeline, args.stage.as_deref())?;
    let input = Input::read(&args.input, args.id_field.as_deref())?;
    input.refuse_bad_lines(args.skip_bad)?;
    let run_id = input.digest[..12].to_string();
    let state_path = PathBuf::from(".warren").join(format!("{}-{run_id}.json", pipeline.name));
    let mut state = if args.fresh {
        State::default()
    } else {
        load_state(&state_path)
    };
    state.input = input.name.clone();
    state.lines = input.lines.len();
    let already = state.sent.min(input.lines.len());
    if already > 0 {
        err!(
            "resuming: {already} of {} inputs were sent by an earlier run; sending the rest",
            input.lines.len()
        );
    }
    declare(&pipeline).await?;
    let dead_before = dead_counts(&pipeline).await?;

    let (interrupt, _reload) = signals::install()?;
    let options = Options {
        poll: EVERY,
        log_filter: crate::RUN_FILTER,
        ..Options::default()
    };
    let supervisor = Supervisor::new(&args.file, pipeline.clone(), options)?;
    let status = supervisor.status();
    let stop_supervisor = CancellationToken::new();
    let (_never, no_reload) = tokio::sync::mpsc::unbounded_channel();
    let driver = async {
        let outcome = drive(
            &pipeline,
            &entry,
            &input,
            &run_id,
            &mut state,
            &state_path,
            &status,
            &interrupt,
        )
        .await;
        stop_supervisor.cancel();
        outcome
    };
    let (outcome, supervised) =
        tokio::join!(driver, supervisor.run(stop_supervisor.clone(), no_reload));
    supervised?;
    let sent_now = state.sent.saturating_sub(already);
    save_state(&state_path, &state);
    let outcome = outcome?;

    let finals = status.lock().expect("status").clone();
    let dead_after = dead_counts(&pipeline).await?;
    let elapsed = started.elapsed().as_secs_f64();
    summary(&pipeline, &finals, input.lines.len(), sent_now, elapsed);
    let new_dead: Vec<(String, u32)> = pipeline
        .stages
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                dead_after[&s.name].saturating_sub(dead_before[&s.name]),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    match outcome {
        Outcome::Interrupted => Err(Failed(format!(
            "interrupted after sending {} of {} inputs; run the same command again to resume",
            state.sent,
            input.lines.len()
        ))
        .into()),
        Outcome::Drained if !new_dead.is_empty() => {
            let total: u32 = new_dead.iter().map(|(_, n)| n).sum();
            let look: Vec<String> = new_dead
                .iter()
                .map(|(s, n)| format!("  {n} in {s}: warren dlq {} {s} list", args.file.display()))
                .collect();
            Err(Failed(format!(
                "{total} messages were dead-lettered during this run:\n{}",
                look.join("\n")
            ))
            .into())
        }
        Outcome::Drained => Ok(()),
    }
}

enum Outcome {
    Drained,
    Interrupted,
}

/// Sends what is left of the input, then waits until the pipeline drained.
#[allow(clippy::too_many_arguments)]
async fn drive(
    pipeline: &Pipeline,
    entry: &str,
    input: &Input,
    run_id: &str,
    state: &mut State,
    state_path: &Path,
    status: &Arc<Mutex<SupervisorStatus>>,
    interrupt: &CancellationToken,
) -> Result<Outcome> {
    let skip = state.sent.min(input.lines.len());
    let total = input.lines.len() as u64;
    if skip < input.lines.len() {
        let producer = Producer::connect(pipeline).await?;
        let mut progress = Progress::new("sending", total);
        let mut saved_at = Instant::now();
        let sent = feed::send(
            &producer,
            entry,
            &input.lines[skip..],
            |line| {
                line.id
                    .clone()
                    .unwrap_or_else(|| format!("{run_id}.{}", line.number))
            },
            |n| {
                state.sent = skip + n;
                progress.set(state.sent as u64, "");
                if saved_at.elapsed() > Duration::from_secs(1) {
                    save_state(state_path, state);
                    saved_at = Instant::now();
                }
            },
            || interrupt.is_cancelled(),
        )
        .await;
        producer.close().await;
        save_state(state_path, state);
        sent?;
        progress.finish(&format!("{} inputs sent to {entry}", state.sent));
        if interrupt.is_cancelled() {
            return Ok(Outcome::Interrupted);
        }
    }
    let mut watcher = Watcher::new(pipeline);
    let mut progress = Progress::new("working", total);
    loop {
        tokio::select! {
            _ = interrupt.cancelled() => {
                watcher.close().await;
                return Ok(Outcome::Interrupted);
            }
            _ = tokio::time::sleep(EVERY) => {}
        }
        let (local, done) = {
            let status = status.lock().expect("status");
            let local: HashMap<String, u64> = status
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.counts.in_flight))
                .collect();
            let done: Vec<String> = status
                .stages
                .iter()
                .map(|s| format!("{} {}", s.name, s.counts.done))
                .collect();
            (local, done)
        };
        let Some(left) = watcher.look(&local).await else {
            continue;
        };
        let entry_done = status
            .lock()
            .expect("status")
            .stages
            .iter()
            .find(|s| s.name == entry)
            .map_or(0, |s| s.counts.done);
        progress.set(entry_done, &format!("done: {}", done.join(", ")));
        if watcher.settled(&left) {
            progress.finish("drained");
            watcher.close().await;
            return Ok(Outcome::Drained);
        }
    }
}

/// The stage that receives the input.
fn entry_stage(pipeline: &Pipeline, asked: Option<&str>) -> Result<String> {
    if let Some(stage) = asked {
        if let Err(unknown) = pipeline.require_stage(stage) {
            return Err(Usage(format!("--stage: {unknown}")).into());
        }
        return Ok(stage.to_string());
    }
    match pipeline.entry_stages().as_slice() {
        [one] => Ok(one.name.clone()),
        several => Err(Usage(format!(
            "pipeline `{}` has {} entry stages ({}); say which receives the input with --stage",
            pipeline.name,
            several.len(),
            several
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

async fn dead_counts(pipeline: &Pipeline) -> Result<HashMap<String, u32>> {
    let mut counts = HashMap::new();
    for stage in &pipeline.stages {
        counts.insert(
            stage.name.clone(),
            dead_letters::count(pipeline, &stage.name).await?,
        );
    }
    Ok(counts)
}

fn summary(
    pipeline: &Pipeline,
    status: &SupervisorStatus,
    inputs: usize,
    sent: usize,
    elapsed: f64,
) {
    out!(
        "{}: {inputs} inputs ({sent} sent by this run) in {elapsed:.1}s, {:.1} inputs/s",
        pipeline.name,
        sent as f64 / elapsed.max(0.001)
    );
    out!(
        "{:<16} {:>10} {:>10} {:>14}",
        "stage",
        "done",
        "retried",
        "dead-lettered"
    );
    for stage in &pipeline.stages {
        let counts = status
            .stages
            .iter()
            .find(|s| s.name == stage.name)
            .map(|s| s.counts)
            .unwrap_or_default();
        out!(
            "{:<16} {:>10} {:>10} {:>14}",
            stage.name,
            counts.done,
            counts.retried,
            counts.dead
        );
    }
}

fn load_state(path: &Path) -> State {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Writes the state atomically (a new file renamed over the old one).
fn save_state(path: &Path, state: &State) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension("json.new");
        std::fs::write(
            &temp,
            serde_json::to_vec_pretty(state).expect("state encodes"),
        )?;
        std::fs::rename(temp, path)
    };
    if let Err(error) = write() {
        tracing::warn!(
            "cannot record progress in {}: {error}; a resumed run would send everything again",
            path.display()
        );
    }
}
