//! # warren
//!
//! RabbitMQ worker pipelines declared in one YAML file. This crate holds the
//! pipeline model (file -> validated [`Pipeline`]), the broker topology built
//! from it, the worker runtime in which a stage handler is a typed async
//! function, and a producer for application code.
//!
//! The outside contract (file format, broker names, message format) is in
//! the project's `DESIGN.md`; the README explains the guarantees.

// The API users build on: a worker (`Worker`, `Context`, `Failure`,
// `Outcome`), a producer (`Producer`), the pipeline model (`config::load`
// -> `Pipeline`), its broker objects (`topology`, `names`), dead letters
// and retrying and scheduled messages,
// job views (`jobs`) and handlers tested without a broker (`testing`).
pub mod config;
pub mod dead_letters;
pub mod error;
pub mod front;
pub mod jobs;
#[cfg(feature = "logging")]
pub mod logging;
pub mod names;
pub mod pauses;
pub(crate) mod peeks;
pub mod pipeline;
pub mod producer;
pub mod restarts;
pub mod retrying;
pub mod scheduled;
pub mod testing;
pub mod topology;
pub mod waiting;
pub mod worker;

// What the `warren` command and its crates (warren-ops, warren-serve) use
// besides: public for them, hidden from the documentation, and free to
// change between versions.
#[doc(hidden)]
pub mod backoff;
#[doc(hidden)]
pub mod broker;
#[doc(hidden)]
pub mod connection;
pub(crate) mod control_stream;
pub mod delay;
#[doc(hidden)]
pub mod duration;
#[doc(hidden)]
pub mod exit;
pub(crate) mod limits;
#[doc(hidden)]
pub mod message;
#[doc(hidden)]
pub mod mismatch;
pub(crate) mod pass;
#[doc(hidden)]
pub mod publisher;
#[doc(hidden)]
pub mod rate;
#[doc(hidden)]
pub mod report;
#[doc(hidden)]
pub mod retry;
#[doc(hidden)]
pub mod running;
pub mod schedule;
#[doc(hidden)]
pub mod template;
#[doc(hidden)]
pub mod timings;
pub mod traces;

pub use broker::{BrokerUrl, BrokerUrls};
pub use error::{Error, Result};
pub use pipeline::{Pipeline, PostgresSpec, Stage, StageKind};
pub use producer::Producer;
pub use topology::Topology;
pub use worker::{Context, Failure, Outcome, Worker};
