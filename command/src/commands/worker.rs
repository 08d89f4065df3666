//! `warren worker FILE --stage S`: one worker of a built-in stage (the
//! supervisor starts these; they can be run by hand too).

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Result, bail};
use serde_json::Value;
use warren::{Context, StageKind, Worker, worker};

use crate::{
    builtin::{
        exec::{ExecStage, program::Identity},
        http::HttpStage,
        postgres::{PgHandler, PgSink},
        sink::{Sink, SinkHandler},
    },
    signals,
};

/// Time an exec stage's program gets to exit once the worker drained.
const PROGRAM_GRACE: Duration = Duration::from_secs(5);

/// Serves stage `stage` until SIGTERM or SIGINT, answering health probes
/// on `health` and draining within `grace` when given.
pub async fn run(
    file: &Path,
    stage: &str,
    health: Option<SocketAddr>,
    grace: Option<Duration>,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    let settings = pipeline.require_stage(stage)?.clone();
    let setup = |e: String| warren::Error::Setup(format!("stage `{stage}`: {e}"));
    let mut program = None;
    let worker = match &settings.kind {
        StageKind::Http(spec) => {
            let http = Arc::new(
                HttpStage::new(spec, settings.concurrency, !settings.outputs.is_empty())
                    .map_err(setup)?,
            );
            Worker::new().stage(stage, move |message: Value, ctx: Context| {
                let http = http.clone();
                async move { http.call(message, ctx).await }
            })
        }
        StageKind::Sink(spec) => {
            let sink = Sink::open(&spec.path).map_err(setup)?;
            Worker::new().handler(stage, Arc::new(SinkHandler(Arc::new(sink))))
        }
        StageKind::Postgres(spec) => {
            let application = format!("warren {}.{stage}", pipeline.name);
            let sink = PgSink::start(spec, &application, settings.timeout).map_err(setup)?;
            Worker::new().handler(stage, Arc::new(PgHandler(Arc::new(sink))))
        }
        StageKind::Exec(spec) => {
            let who = Identity {
                pipeline_file: std::fs::canonicalize(file)?,
                stage: stage.to_string(),
                worker: std::env::var("WARREN_WORKER").unwrap_or_else(|_| "0".into()),
                concurrency: settings.concurrency,
            };
            let exec =
                Arc::new(ExecStage::start(spec.clone(), who, settings.timeout).map_err(setup)?);
            program = Some(exec.clone());
            Worker::new().handler(stage, exec)
        }
        // A gather stage's handling only checks that the body is JSON: the
        // worker records it as held, and the job keeper releases it.
        StageKind::Gather => Worker::new().stage(stage, |_: Value, _: Context| async { Ok(()) }),
        StageKind::Command(command) => bail!(crate::exit::Usage(format!(
            "stage `{stage}` runs its own program ({}); `warren worker` runs built-in stages only",
            command.argv[0]
        ))),
    };
    let mut worker = worker.pipeline(pipeline).serve_stages([stage]);
    if let Some(addr) = health {
        worker = worker.health(addr);
    }
    if let Some(grace) = grace {
        worker = worker.grace(grace);
    }
    let served = match &program {
        // The program's stdin closes as the worker starts draining: it
        // finishes what it holds and exits.
        Some(exec) => {
            let (stop, _reload) = signals::install()?;
            let closing = exec.clone();
            let ran = worker
                .run_until(async move {
                    stop.cancelled().await;
                    closing.close();
                })
                .await;
            exec.stop(PROGRAM_GRACE).await;
            ran
        }
        None => worker.run().await,
    };
    served.map_err(|error| {
        let code = worker::exit_code(&error);
        anyhow::Error::new(error).context(format!("worker of stage `{stage}` (exit {code})"))
    })
}
