//! `warren run FILE --input INPUT`: declare, then send the input while the
//! workers already work on it, until the pipeline drained; summarise.
//!
//! How far sending got is kept in `.warren/{pipeline}-{key}.json` in the
//! working directory (`key` stands for the input file's path): the lines
//! the broker confirmed, as a byte offset and a digest of the bytes before
//! it. Run the same command again after a Ctrl-C and it sends only what
//! was not confirmed, while the workers pick up what the broker still
//! holds; if lines were appended to the input since, they are sent too;
//! if the part already sent changed, everything is sent again. Messages get
//! the id `{hash of the line}.{line number}` (or `--id-field`), so the sink
//! writes each input's results once even if something is handled again.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use warren::{Pipeline, Producer, dead_letters};

use warren_ops::{
    drained::{Local, Watcher},
    jobs::{
        settling::Settling,
        store::{self, Store},
    },
    status::{StageState, SupervisorStatus},
};

use crate::{
    commands::declare::declare,
    exit::{Failed, Usage},
    feed::{self, BadLines, Feed},
    input::{self, Source, Start},
    progress::Progress,
    signals,
    supervise::{Options, Supervisor},
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

/// How far sending got, saved as it goes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The input file.
    input: String,
    /// Lines of the input up to the last one confirmed.
    lines: usize,
    /// Bytes of the input up to the end of that line.
    offset: u64,
    /// SHA-256 of those bytes, hex.
    digest: String,
    /// Messages confirmed, by every run of this input.
    sent: usize,
}

/// Where the state of a run of `source` is kept (`None` for stdin).
fn state_path(pipeline: &Pipeline, source: &Source) -> Option<PathBuf> {
    let Source::File(path) = source else {
        return None;
    };
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let hash = Sha256::digest(absolute.to_string_lossy().as_bytes());
    let key = crate::digest::hex(&hash[..6]);
    Some(PathBuf::from(".warren").join(format!("{}-{key}.json", pipeline.name)))
}

/// Where sending starts, from the saved state: after what an earlier run
/// sent if the input still begins with it.
fn resume(source: &Source, state: &State) -> Start {
    let Source::File(path) = source else {
        return Start::default();
    };
    if state.offset == 0 {
        return Start::default();
    }
    match input::prefix(path, state.offset) {
        Ok(Some(start)) if hex(start.digest.clone()) == state.digest => {
            err!(
                "resuming: the first {} lines ({} inputs) were sent by an earlier run; sending the rest",
                start.lines,
                state.sent
            );
            start
        }
        _ => {
            err!(
                "{} changed since an earlier run sent its first {} lines: sending all of it again (the sink writes each result once)",
                source.name(),
                state.lines
            );
            Start::default()
        }
    }
}

fn hex(digest: Sha256) -> String {
    crate::digest::hex(&digest.finalize())
}

/// Runs the pipeline on the input to the end.
pub async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let pipeline = warren::config::load(&args.file)?;
    let entry = entry_stage(&pipeline, args.stage.as_deref())?;
    let source = Source::new(&args.input)?;
    let (bad, total) = match &source {
        Source::File(path) => {
            let checked = input::check(path, args.id_field.as_deref())?;
            checked.refuse_bad_lines(&source.name(), args.skip_bad)?;
            (BadLines::Ignore, Some(checked.good))
        }
        Source::Stdin if args.skip_bad => (BadLines::Skip, None),
        Source::Stdin => (BadLines::Stop, None),
    };
    let state_path = state_path(&pipeline, &source);
    let mut state = match &state_path {
        Some(path) if !args.fresh => load_state(path),
        _ => State::default(),
    };
    state.input = source.name();
    let start = resume(&source, &state);
    if start.offset == 0 {
        state.sent = 0;
    }
    let sent_before = state.sent;
    declare(&pipeline).await?;
    let dead_before = dead_counts(&pipeline).await?;

    let settling = settling(&pipeline).await?;
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
    let mut driver = Driver {
        pipeline: &pipeline,
        entry: &entry,
        source: &source,
        bad,
        id_field: args.id_field.clone(),
        state: &mut state,
        state_path: state_path.as_deref(),
        status: &status,
        interrupt: &interrupt,
        total,
        settling,
    };
    let driven = async {
        let outcome = driver.drive(start).await;
        stop_supervisor.cancel();
        outcome
    };
    let (outcome, supervised) =
        tokio::join!(driven, supervisor.run(stop_supervisor.clone(), no_reload));
    supervised?;
    let failed_jobs = match driver.settling.take() {
        Some(settling) => {
            let failed = settling.failed().to_vec();
            settling.close().await;
            failed
        }
        None => Vec::new(),
    };
    if let Some(path) = &state_path {
        save_state(path, &state);
    }
    let outcome = outcome?;

    let finals = status.lock().expect("status").clone();
    let dead_after = dead_counts(&pipeline).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let sent_now = state.sent.saturating_sub(sent_before);
    let inputs = total.unwrap_or(state.sent);
    summary(&pipeline, &finals, inputs, sent_now, elapsed);
    if !failed_jobs.is_empty() {
        const SHOWN: usize = 20;
        let more = failed_jobs.len().saturating_sub(SHOWN);
        out!(
            "failed jobs: {}{} (`warren job {} ID` says why)",
            failed_jobs[..failed_jobs.len().min(SHOWN)].join(" "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            args.file.display()
        );
    }
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
            total.map_or("the".into(), |t| t.to_string())
        ))
        .into()),
        Outcome::Failing(reason) => Err(Failed(format!(
            "{reason}; {} inputs were sent. Fix it and run the same command again to resume",
            state.sent
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
    /// A stage's workers keep exiting: waiting would be for ever.
    Failing(String),
}

/// Sends the input and watches the pipeline until it drained.
struct Driver<'a> {
    pipeline: &'a Pipeline,
    entry: &'a str,
    source: &'a Source,
    bad: BadLines,
    id_field: Option<String>,
    state: &'a mut State,
    state_path: Option<&'a Path>,
    status: &'a Arc<Mutex<SupervisorStatus>>,
    interrupt: &'a CancellationToken,
    /// Good lines of a file (unknown for a pipe).
    total: Option<usize>,
    /// The jobs sent and not settled yet, on a tracked pipeline.
    settling: Option<Settling>,
}

impl Driver<'_> {
    async fn drive(&mut self, start: Start) -> Result<Outcome> {
        if let Some(outcome) = self.send(start).await? {
            return Ok(outcome);
        }
        self.wait().await
    }

    /// Sends what is left of the input while the workers work.
    async fn send(&mut self, start: Start) -> Result<Option<Outcome>> {
        let producer = Producer::connect(self.pipeline).await?;
        let total = self.total.map_or(0, |t| t as u64);
        let mut progress = Progress::new("sending", total);
        let mut saved_at = Instant::now();
        let lines = input::stream(self.source, start, self.id_field.clone());
        let name = self.source.name();
        let feed = Feed {
            producer: &producer,
            stage: self.entry,
            input: &name,
            bad: self.bad,
        };
        let (state, state_path) = (&mut *self.state, self.state_path);
        let settling = &mut self.settling;
        let (interrupt, status) = (self.interrupt, self.status);
        let failed = Mutex::new(None);
        let mut last: Option<Sha256> = None;
        let fed = feed::send(
            &feed,
            lines,
            |line| line.id.clone().unwrap_or_else(|| line.derived_id()),
            |line| {
                if let Some(settling) = settling.as_mut() {
                    settling.sent(line.id.clone().unwrap_or_else(|| line.derived_id()));
                }
                state.sent += 1;
                state.lines = line.number;
                state.offset = line.end;
                last = Some(line.digest.clone());
                if let Some(path) = state_path
                    && saved_at.elapsed() > Duration::from_secs(1)
                {
                    state.digest = hex(line.digest.clone());
                    save_state(path, state);
                    saved_at = Instant::now();
                }
                progress.set(state.sent as u64, "");
            },
            || {
                if interrupt.is_cancelled() {
                    return true;
                }
                let reason = failing(status);
                let stop = reason.is_some();
                *failed.lock().expect("failed") = reason;
                stop
            },
        )
        .await;
        producer.close().await;
        if let Some(digest) = last {
            self.state.digest = hex(digest);
        }
        if let Some(path) = self.state_path {
            save_state(path, self.state);
        }
        let fed = fed?;
        progress.finish(&format!(
            "{} inputs sent to {}",
            self.state.sent, self.entry
        ));
        if let Some(reason) = failed.into_inner().expect("failed") {
            return Ok(Some(Outcome::Failing(reason)));
        }
        if fed.interrupted {
            return Ok(Some(Outcome::Interrupted));
        }
        Ok(None)
    }

    /// Waits until the pipeline drained (and, on a tracked pipeline, every
    /// job this run sent settled), a stage fails, or Ctrl-C.
    async fn wait(&mut self) -> Result<Outcome> {
        let mut watcher = Watcher::new(self.pipeline);
        let total = self.total.unwrap_or(self.state.sent) as u64;
        let mut progress = Progress::new("working", total);
        let mut first = true;
        loop {
            match self.settling.as_mut() {
                // Folding is not cut short: it stops by itself within EVERY.
                Some(settling) => {
                    settling
                        .follow(tokio::time::Instant::now() + EVERY, first)
                        .await?;
                    first = false;
                }
                None => {
                    tokio::select! {
                        _ = self.interrupt.cancelled() => {}
                        _ = tokio::time::sleep(EVERY) => {}
                    }
                }
            }
            if self.interrupt.is_cancelled() {
                watcher.close().await;
                return Ok(Outcome::Interrupted);
            }
            if let Some(reason) = failing(self.status) {
                watcher.close().await;
                return Ok(Outcome::Failing(reason));
            }
            let (local, done, entry_done) = {
                let status = self.status.lock().expect("status");
                let mut local = HashMap::new();
                Local::add_all(&mut local, &status.stages);
                let done: Vec<String> = status
                    .stages
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.counts.done))
                    .collect();
                let entry_done = status
                    .stages
                    .iter()
                    .find(|s| s.name == self.entry)
                    .map_or(0, |s| s.counts.done);
                (local, done, entry_done)
            };
            let Some(left) = watcher.look(&local).await else {
                continue;
            };
            let jobs_open = self.settling.as_ref().map_or(0, Settling::going);
            let jobs = match &self.settling {
                Some(settling) => format!(
                    "; jobs: {} done, {} failed, {jobs_open} open",
                    settling.done(),
                    settling.failed().len()
                ),
                None => String::new(),
            };
            progress.set(entry_done, &format!("done: {}{jobs}", done.join(", ")));
            if jobs_open == 0 && watcher.settled(&left) {
                progress.finish("drained");
                watcher.close().await;
                return Ok(Outcome::Drained);
            }
        }
    }
}

/// On a tracked pipeline, what follows the jobs of the run (`None` when
/// untracked, or when another `warren run` of the pipeline in this
/// directory holds the store: then the queues alone say when it is over).
async fn settling(pipeline: &Pipeline) -> Result<Option<Settling>> {
    if !pipeline.jobs.track {
        return Ok(None);
    }
    let path = store::path(&pipeline.name, "run");
    match Store::open(&path).map_err(anyhow::Error::msg)? {
        Some(store) => Ok(Some(Settling::open(pipeline, store).await?)),
        None => {
            tracing::warn!(
                "{} is held by another process; this run watches the queues only",
                path.display()
            );
            Ok(None)
        }
    }
}

/// The first stage whose workers keep exiting, and why.
fn failing(status: &Mutex<SupervisorStatus>) -> Option<String> {
    let status = status.lock().expect("status");
    status
        .stages
        .iter()
        .find(|s| s.state == StageState::Failing)
        .map(|s| {
            format!(
                "stage `{}` is failing: its workers keep exiting ({})",
                s.name,
                s.last_exit.as_deref().unwrap_or("no output")
            )
        })
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
