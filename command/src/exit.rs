//! Which exit code an error gets (the codes are [`warren::exit`]'s): the
//! first cause in its chain that has one.

use std::process::ExitCode;

pub use warren::exit::{CONFIG, DATA_ERR, FAILURE, USAGE};
use warren::{Error, config::InvalidPipeline, pipeline::UnknownStage};

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
        // `serve.tls` names a file that cannot be served: the file's fault.
        if cause.downcast_ref::<InvalidPipeline>().is_some()
            || cause
                .downcast_ref::<warren_serve::tls::TlsError>()
                .is_some()
        {
            return ExitCode::from(CONFIG);
        }
        if cause.downcast_ref::<BadInput>().is_some() {
            return ExitCode::from(DATA_ERR);
        }
        // The stages this binary names come from its command line.
        if cause.downcast_ref::<Usage>().is_some() || cause.downcast_ref::<UnknownStage>().is_some()
        {
            return ExitCode::from(USAGE);
        }
        if let Some(error) = cause.downcast_ref::<Error>() {
            // The stages this binary names come from its command line.
            if matches!(error, Error::UnknownStage(_)) {
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
