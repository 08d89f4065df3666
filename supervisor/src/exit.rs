//! Exit codes (DESIGN.md): 0 success; 1 failure at run time; 2 wrong usage;
//! 65 bad input data; 69 broker unreachable; 78 bad pipeline file.

use std::process::ExitCode;

use warren::{Error, config::InvalidPipeline};

/// Run-time failure.
pub const FAILURE: u8 = 1;
/// Wrong usage.
pub const USAGE: u8 = 2;
/// Bad input data (an input file, a message).
pub const DATA_ERR: u8 = 65;
/// The pipeline file is invalid.
pub const CONFIG: u8 = 78;

/// Wrong usage of the command line, reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Bad input data, reported with exit code 65.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The exit code for an error: the first cause in its chain that has one.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if cause.downcast_ref::<InvalidPipeline>().is_some() {
            return ExitCode::from(CONFIG);
        }
        if cause.downcast_ref::<BadInput>().is_some() {
            return ExitCode::from(DATA_ERR);
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return ExitCode::from(USAGE);
        }
        if let Some(error) = cause.downcast_ref::<Error>() {
            // The stages this binary names come from its command line.
            if matches!(error, Error::UnknownStage { .. }) {
                return ExitCode::from(USAGE);
            }
            return ExitCode::from(warren::worker::exit_code(error));
        }
    }
    ExitCode::from(FAILURE)
}

/// A run-time failure with nothing more to explain, exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);
