//! `warren supervise FILE [--stages a,b]`.

use std::{path::Path, time::Duration};

use anyhow::Result;

use crate::{
    exit::Usage,
    signals,
    supervise::{Options, Supervisor},
};

/// Supervises the pipeline's workers until SIGTERM or SIGINT.
pub async fn run(
    file: &Path,
    stages: Option<Vec<String>>,
    poll: Duration,
    json_logs: bool,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if let Some(stages) = &stages {
        for stage in stages {
            if let Err(unknown) = pipeline.require_stage(stage) {
                return Err(Usage(format!("--stages: {unknown}")).into());
            }
        }
    }
    let (stop, reload) = signals::install()?;
    let options = Options {
        stages,
        poll,
        json_logs,
        ..Options::default()
    };
    Supervisor::new(file, pipeline, options)?
        .run(stop, reload)
        .await
}
