//! The end of a run: the figures per stage, the jobs that failed, and
//! what the run's exit says (interrupted, a stage failing, dead letters).

use std::{collections::HashMap, path::Path};

use anyhow::Result;
use warren::Pipeline;
use warren_ops::status::SupervisorStatus;

use super::{driver::Outcome, resume::State};
use crate::exit::Failed;

/// The figures of the run, per stage.
pub fn summary(
    pipeline: &Pipeline,
    status: &SupervisorStatus,
    inputs: usize,
    sent: usize,
    elapsed: f64,
) {
    out!(
        "{}: {inputs} inputs ({sent} sent by this run) in {elapsed:.1}s, {:.1} inputs/s",
        pipeline.name,
        sent as f64 / elapsed.max(0.001)
    );
    out!(
        "{:<16} {:>10} {:>10} {:>14}",
        "stage",
        "done",
        "retried",
        "dead-lettered"
    );
    for stage in &pipeline.stages {
        let counts = status
            .stages
            .iter()
            .find(|s| s.name == stage.name)
            .map(|s| s.counts)
            .unwrap_or_default();
        out!(
            "{:<16} {:>10} {:>10} {:>14}",
            stage.name,
            counts.done,
            counts.retried,
            counts.dead
        );
    }
}

/// What the run did, printed; and the run's result: an error when it was
/// interrupted, a stage failed, or messages were dead-lettered.
pub struct Ended<'a> {
    pub file: &'a Path,
    pub pipeline: &'a Pipeline,
    pub outcome: Outcome,
    pub state: &'a State,
    /// Good lines of a file (unknown for a pipe).
    pub total: Option<usize>,
    pub failed_jobs: Vec<String>,
    pub dead_before: HashMap<String, u32>,
    pub dead_after: HashMap<String, u32>,
}

impl Ended<'_> {
    /// Prints the failed jobs, then says how the run ended.
    pub fn result(self) -> Result<()> {
        let Ended {
            file,
            pipeline,
            outcome,
            state,
            total,
            failed_jobs,
            dead_before,
            dead_after,
        } = self;
        if !failed_jobs.is_empty() {
            const SHOWN: usize = 20;
            let more = failed_jobs.len().saturating_sub(SHOWN);
            out!(
                "failed jobs: {}{} (`warren job {} ID` says why)",
                failed_jobs[..failed_jobs.len().min(SHOWN)].join(" "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                file.display()
            );
        }
        let new_dead: Vec<(String, u32)> = pipeline
            .stages
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    dead_after[&s.name].saturating_sub(dead_before[&s.name]),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        match outcome {
            Outcome::Interrupted => Err(Failed(format!(
                "interrupted after sending {} of {} inputs; run the same command again to resume",
                state.sent,
                total.map_or("the".into(), |t| t.to_string())
            ))
            .into()),
            Outcome::Failing(reason) => Err(Failed(format!(
                "{reason}; {} inputs were sent. Fix it and run the same command again to resume",
                state.sent
            ))
            .into()),
            Outcome::Drained if !new_dead.is_empty() => {
                let total: u32 = new_dead.iter().map(|(_, n)| n).sum();
                let look: Vec<String> = new_dead
                    .iter()
                    .map(|(s, n)| format!("  {n} in {s}: warren dlq {} {s} list", file.display()))
                    .collect();
                Err(Failed(format!(
                    "{total} messages were dead-lettered during this run:\n{}",
                    look.join("\n")
                ))
                .into())
            }
            Outcome::Drained => Ok(()),
        }
    }
}
