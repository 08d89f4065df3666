//! `warren worker FILE --stage S`: one worker of a built-in stage (the
//! supervisor starts these; they can be run by hand too).

use std::{path::Path, sync::Arc};

use anyhow::{Result, bail};
use serde_json::Value;
use warren::{Context, StageKind, Worker, worker};

use crate::builtin::{
    http::HttpStage,
    sink::{Sink, SinkHandler},
};

/// Serves stage `stage` until SIGTERM or SIGINT.
pub async fn run(file: &Path, stage: &str) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    let settings = pipeline.require_stage(stage)?.clone();
    let worker = match &settings.kind {
        StageKind::Http(spec) => {
            let http = Arc::new(
                HttpStage::new(spec, settings.concurrency, !settings.outputs.is_empty())
                    .map_err(|e| warren::Error::Setup(format!("stage `{stage}`: {e}")))?,
            );
            Worker::new().stage(stage, move |message: Value, ctx: Context| {
                let http = http.clone();
                async move { http.call(message, ctx).await }
            })
        }
        StageKind::Sink(spec) => {
            let sink = Sink::open(&spec.path)
                .map_err(|e| warren::Error::Setup(format!("stage `{stage}`: {e}")))?;
            Worker::new().handler(stage, Arc::new(SinkHandler(Arc::new(sink))))
        }
        StageKind::Command(command) => bail!(crate::exit::Usage(format!(
            "stage `{stage}` runs its own program ({}); `warren worker` runs built-in stages only",
            command.argv[0]
        ))),
    };
    worker
        .pipeline(pipeline)
        .serve_stages([stage])
        .run()
        .await
        .map_err(|error| {
            let code = worker::exit_code(&error);
            anyhow::Error::new(error).context(format!("worker of stage `{stage}` (exit {code})"))
        })
}
