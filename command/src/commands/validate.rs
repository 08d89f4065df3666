//! `warren validate FILE`: every problem, or one line with the stage graph.

use std::{path::Path, process::ExitCode};

use crate::exit;

/// Prints every problem of `file` (exit 78), or OK and the stage graph.
/// Never touches the broker. A PostgreSQL sink's table is compared with
/// the sink's columns when the database answers (said when it does not).
pub fn run(file: &Path) -> ExitCode {
    match warren::config::load(file) {
        Ok(pipeline) => {
            let notes = match tables(&pipeline, file) {
                Ok(notes) => notes,
                Err(code) => return code,
            };
            out!(
                "{}: OK, pipeline `{}` with {} stages: {}",
                file.display(),
                pipeline.name,
                pipeline.stages.len(),
                pipeline.graph()
            );
            let now = warren::message::epoch_ms();
            for schedule in &pipeline.schedules {
                let next = schedule.next_after(now).map_or("never".to_string(), |at| {
                    warren::schedule::local_text(at, schedule.timezone)
                });
                out!(
                    "schedule {}: `{}` in {} -> {}, next tick {next}",
                    schedule.name,
                    schedule.cron.as_str(),
                    schedule.timezone.name(),
                    schedule.stage
                );
            }
            for note in notes {
                out!("note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(invalid) => {
            err!("{invalid}");
            ExitCode::from(exit::CONFIG)
        }
    }
}

/// The live check of the PostgreSQL sinks, when there are any: what to
/// say after the OK, or the exit code once the mismatches were printed.
fn tables(pipeline: &warren::Pipeline, file: &Path) -> Result<Vec<String>, ExitCode> {
    if !pipeline
        .stages
        .iter()
        .any(|s| matches!(s.kind, warren::StageKind::Postgres(_)))
    {
        return Ok(Vec::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            err!("error: cannot start the async runtime: {error}");
            ExitCode::from(exit::FAILURE)
        })?;
    match runtime.block_on(crate::builtin::postgres::live::verify(pipeline, file)) {
        Ok(notes) => Ok(notes),
        Err(invalid) => {
            err!("{invalid}");
            Err(ExitCode::from(exit::CONFIG))
        }
    }
}
