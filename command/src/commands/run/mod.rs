//! `warren run FILE --input INPUT`: declare, then send the input while the
//! workers already work on it (`driver.rs`), until the pipeline drained;
//! summarise (`summary.rs`).
//!
//! How far sending got is kept as it goes (`resume.rs`). Run the same command again after a Ctrl-C and it sends only what
//! was not confirmed, while the workers pick up what the broker still
//! holds; if lines were appended to the input since, they are sent too;
//! if the part already sent changed, everything is sent again. Messages get
//! the id `{hash of the line}.{line number}` (or `--id-field`), so the sink
//! writes each input's results once even if something is handled again.

mod driver;
mod resume;
mod summary;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use warren::Pipeline;
use warren_ops::jobs::{
    settling::Settling,
    store::{self, Store},
};

use self::{
    driver::Driver,
    resume::{State, load_state, resume, save_state, state_path},
    summary::{Ended, summary},
};
use crate::{
    commands::declare::declare,
    exit::Usage,
    feed::BadLines,
    input::{self, Source},
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
    let dead_before = warren::dead_letters::counts(&pipeline).await?;

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
    let dead_after = warren::dead_letters::counts(&pipeline).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let sent_now = state.sent.saturating_sub(sent_before);
    let inputs = total.unwrap_or(state.sent);
    summary(&pipeline, &finals, inputs, sent_now, elapsed);
    Ended {
        file: &args.file,
        pipeline: &pipeline,
        outcome,
        state: &state,
        total,
        failed_jobs,
        dead_before,
        dead_after,
    }
    .result()
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
