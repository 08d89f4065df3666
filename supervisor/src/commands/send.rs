//! `warren send FILE STAGE [INPUT|-]`: one message per JSON line.

use std::path::Path;

use anyhow::Result;
use warren::Producer;

use crate::{commands::declare::declare, feed, input::Input, progress::Progress};

/// Sends every line of `input` to `stage`, each confirmed by the broker.
pub async fn run(
    file: &Path,
    stage: &str,
    input: &Path,
    id_field: Option<&str>,
    skip_bad: bool,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    pipeline.require_stage(stage)?;
    let input = Input::read(input, id_field)?;
    input.refuse_bad_lines(skip_bad)?;
    declare(&pipeline).await?;
    let producer = Producer::connect(&pipeline).await?;
    let total = input.lines.len();
    let mut progress = Progress::new("sending", total as u64);
    let sent = feed::send(
        &producer,
        stage,
        &input.lines,
        |line| line.id.clone().unwrap_or_else(warren::message::new_id),
        |n| progress.set(n as u64, ""),
        || false,
    )
    .await;
    producer.close().await;
    let sent = sent?;
    progress.finish(&format!("{sent} sent"));
    out!(
        "sent {sent} messages to {}.{stage}, each confirmed by the broker",
        pipeline.name
    );
    Ok(())
}
