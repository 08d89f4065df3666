//! `warren dlq FILE STAGE list|replay|purge [--limit N]`.

use std::path::Path;

use anyhow::Result;
use clap::ValueEnum;
use warren::dead_letters;

/// What to do with the dead letters.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DlqAction {
    /// Show id, attempts and reason (the messages stay).
    List,
    /// Send them back to the stage as new first attempts.
    Replay,
    /// Drop them.
    Purge,
}

/// Lists, replays or purges the dead letters of `stage`.
pub async fn run(file: &Path, stage: &str, action: DlqAction, limit: Option<usize>) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    match action {
        DlqAction::List => {
            let total = dead_letters::count(&pipeline, stage).await?;
            let letters = dead_letters::list(&pipeline, stage, limit.unwrap_or(50)).await?;
            out!("{total} dead letters in {}.{stage}.dead", pipeline.name);
            if !letters.is_empty() {
                out!("{:<40} {:>8}  reason", "id", "attempts");
            }
            for letter in &letters {
                out!(
                    "{:<40} {:>8}  {}",
                    letter.id,
                    letter.attempts,
                    letter.reason
                );
            }
            if (letters.len() as u32) < total {
                out!(
                    "(showing {} of {total}; --limit N shows more)",
                    letters.len()
                );
            }
        }
        DlqAction::Replay => {
            let sent = dead_letters::replay(&pipeline, stage, limit.unwrap_or(usize::MAX)).await?;
            out!(
                "replayed {sent} dead letters to {}.{stage} (attempts start again at 1)",
                pipeline.name
            );
        }
        DlqAction::Purge => {
            let purged = dead_letters::purge(&pipeline, stage, limit).await?;
            out!("dropped {purged} dead letters of {}.{stage}", pipeline.name);
        }
    }
    Ok(())
}
