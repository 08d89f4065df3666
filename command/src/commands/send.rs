//! `warren send FILE STAGE [INPUT|-] [--delay D|--at T]`: one message per
//! JSON line, streamed; delayed ones wait on the broker.
//!
//! A file is checked whole first (a bad line refuses it, unless
//! `--skip-bad`); a pipe is sent as its lines arrive, and a bad line stops
//! it there (or is skipped with `--skip-bad`). On Ctrl-C it stops and says
//! exactly how many messages the broker confirmed.

use std::path::Path;

use anyhow::Result;
use warren::{Producer, delay::When};

use crate::{
    commands::declare::declare,
    exit::Failed,
    feed::{self, BadLines, Feed},
    input::{self, Source, Start},
    progress::Progress,
    signals,
};

/// Sends every line of `input` to `stage`, each confirmed by the broker.
pub async fn run(
    file: &Path,
    stage: &str,
    input: &Path,
    id_field: Option<&str>,
    skip_bad: bool,
    when: Option<When>,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    pipeline.require_stage(stage)?;
    let source = Source::new(input)?;
    let name = source.name();
    let (bad, total) = match &source {
        Source::File(path) => {
            let checked = input::check(path, id_field)?;
            checked.refuse_bad_lines(&name, skip_bad)?;
            (BadLines::Ignore, checked.good as u64)
        }
        Source::Stdin if skip_bad => (BadLines::Skip, 0),
        Source::Stdin => (BadLines::Stop, 0),
    };
    declare(&pipeline).await?;
    let producer = Producer::connect(&pipeline).await?;
    let (interrupt, _reload) = signals::install()?;
    let mut progress = Progress::new("sending", total);
    let lines = input::stream(&source, Start::default(), id_field.map(str::to_string));
    let target = Feed {
        producer: &producer,
        stage,
        input: &name,
        bad,
        when,
    };
    let mut count = 0u64;
    let fed = feed::send(
        &target,
        lines,
        |line| line.id.clone().unwrap_or_else(warren::message::new_id),
        |_| {
            count += 1;
            progress.set(count, "");
        },
        || interrupt.is_cancelled(),
    )
    .await;
    producer.close().await;
    let fed = fed?;
    progress.finish(&format!("{} sent", fed.sent));
    let queue = warren::names::stage_queue(&pipeline.name, stage);
    if fed.interrupted {
        return Err(Failed(format!(
            "interrupted: {} messages were sent to {queue}, each confirmed by the broker; no later line was",
            fed.sent
        ))
        .into());
    }
    let delayed = match when {
        Some(When::After(delay)) => {
            format!(", to be handled in {}", warren::duration::format(delay))
        }
        Some(When::At(_)) => ", to be handled at the time given".to_string(),
        None => String::new(),
    };
    out!(
        "sent {} messages to {queue}{delayed}, each confirmed by the broker",
        fed.sent
    );
    Ok(())
}
