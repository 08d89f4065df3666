//! `warren dlq FILE STAGE list|show|replay|purge [--limit N] [--id ID]`.

use std::{io::Write as _, path::Path};

use anyhow::Result;
use clap::ValueEnum;
use warren::dead_letters;

use crate::exit::{Failed, Usage};

/// What to do with the dead letters.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DlqAction {
    /// Show id, attempts and reason (the messages stay).
    List,
    /// Show one message (`--id`) whole: headers, then its body (it stays).
    Show,
    /// Send them back to the stage as new first attempts.
    Replay,
    /// Drop them.
    Purge,
}

/// Lists, shows, replays or purges the dead letters of `stage`.
pub async fn run(
    file: &Path,
    stage: &str,
    action: DlqAction,
    limit: Option<usize>,
    id: Option<&str>,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if id.is_some() != matches!(action, DlqAction::Show) {
        return Err(Usage("`--id ID` goes with `show`, and only with it".into()).into());
    }
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
        DlqAction::Show => {
            let id = id.unwrap_or_default();
            let Some(letter) = dead_letters::find(&pipeline, stage, id).await? else {
                return Err(Failed(format!(
                    "no dead letter with id `{id}` in {}.{stage}.dead",
                    pipeline.name
                ))
                .into());
            };
            out!("id: {}", letter.id);
            out!("attempts: {}", letter.attempts);
            out!("reason: {}", letter.reason);
            for (name, value) in &letter.headers {
                out!("header {name}: {value}");
            }
            out!("body ({} bytes):", letter.body_len);
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&letter.body);
            let _ = stdout.write_all(b"\n");
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
