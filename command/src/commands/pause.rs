//! `warren pause FILE STAGE` and `warren resume FILE STAGE` (DESIGN.md,
//! *Stage control*): one change written to the pipeline's pause stream,
//! which every worker of the stage, on every box, follows.

use std::path::Path;

use anyhow::{Context, Result};
use warren::Producer;

use crate::commands::declare::declare;

/// Pauses (`paused`) or resumes `stage` of the pipeline in `file`.
pub async fn run(file: &Path, stage: &str, paused: bool) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    pipeline
        .require_stage(stage)
        .with_context(|| format!("{}: cannot pause or resume", file.display()))?;
    declare(&pipeline).await?;
    let producer = Producer::connect(&pipeline).await?;
    let verb = if paused { "pause" } else { "resume" };
    let host = hostname();
    producer
        .set_paused(stage, paused, &format!("warren {verb} on {host}"))
        .await?;
    out!(
        "stage {stage} of pipeline {}: {}",
        pipeline.name,
        if paused {
            "paused on every box (its workers finish what they handle and take nothing new; `warren resume` starts it again)"
        } else {
            "resumed on every box"
        }
    );
    Ok(())
}

/// This box's name, for the record of who paused.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "this box".into())
}
