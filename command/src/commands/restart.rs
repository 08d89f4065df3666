//! `warren restart FILE [STAGE]` (DESIGN.md, *Stage control*): one
//! restart request written to the pipeline's pause stream; every
//! supervisor of the pipeline, on every box, rolls the stage's workers
//! once (`supervise/roll.rs`).

use std::path::Path;

use anyhow::{Context, Result};
use warren::Producer;

use crate::commands::{declare::declare, pause::hostname};

/// Asks every supervisor to roll `stage` (every stage when `None`) of the
/// pipeline in `file`.
pub async fn run(file: &Path, stage: Option<&str>) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if let Some(stage) = stage {
        pipeline
            .require_stage(stage)
            .with_context(|| format!("{}: cannot restart", file.display()))?;
    }
    declare(&pipeline).await?;
    let producer = Producer::connect(&pipeline).await?;
    let host = hostname();
    let id = producer
        .request_restart(stage, &format!("warren restart on {host}"))
        .await?;
    let what = match stage {
        Some(stage) => format!("stage {stage}"),
        None => "every stage".into(),
    };
    out!(
        "{what} of pipeline {}: restart asked ({id}); every supervisor running now replaces its workers one at a time (see `warren status`)",
        pipeline.name
    );
    Ok(())
}
