//! The errors of the warren library.

use crate::{config::InvalidPipeline, mismatch::Mismatch, pipeline::UnknownStage};

/// Anything that can go wrong in warren.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file is invalid.
    #[error(transparent)]
    Pipeline(#[from] InvalidPipeline),

    /// The broker could not be reached.
    #[error("cannot reach the broker at {address}: {reason}")]
    Unreachable {
        /// `host:port`.
        address: String,
        /// What failed, without credentials.
        reason: String,
    },

    /// The broker refused the login.
    #[error(
        "the broker at {address} refused the login of user `{user}`: check the user and password of the broker URL"
    )]
    LoginRefused {
        /// `host:port`.
        address: String,
        /// The user name.
        user: String,
    },

    /// Broker objects exist with other arguments than the pipeline wants.
    #[error("{}", Mismatch::describe_all(.0))]
    Mismatch(Vec<Mismatch>),

    /// A broker operation failed.
    #[error("{context}: {source}")]
    Broker {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },

    /// A message could not be published: the broker refused it, nothing
    /// routed it, or it was not confirmed in time.
    #[error("publish to {target} failed: {reason}")]
    Publish {
        /// Exchange and routing key, or queue.
        target: String,
        /// What happened.
        reason: String,
    },

    /// A stage name that the pipeline does not have.
    #[error(transparent)]
    UnknownStage(#[from] UnknownStage),

    /// A message could not be encoded as JSON.
    #[error("cannot encode the message as JSON: {0}")]
    Encode(#[from] serde_json::Error),

    /// The worker environment is incomplete or wrong.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn broker(context: impl Into<String>, source: lapin::Error) -> Error {
        Error::Broker {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with warren's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
