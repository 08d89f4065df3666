//! `warren validate FILE`: every problem, or one line with the stage graph.

use std::{path::Path, process::ExitCode};

use crate::exit;

/// Prints every problem of `file` (exit 78), or OK and the stage graph.
/// Never touches the broker.
pub fn run(file: &Path) -> ExitCode {
    match warren::config::load(file) {
        Ok(pipeline) => {
            out!(
                "{}: OK, pipeline `{}` with {} stages: {}",
                file.display(),
                pipeline.name,
                pipeline.stages.len(),
                pipeline.graph()
            );
            ExitCode::SUCCESS
        }
        Err(invalid) => {
            err!("{invalid}");
            ExitCode::from(exit::CONFIG)
        }
    }
}
