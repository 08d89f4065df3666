//! # warren
//!
//! RabbitMQ worker pipelines declared in one YAML file. This crate holds the
//! pipeline model (file -> validated [`Pipeline`]), the broker topology built
//! from it, the worker runtime in which a stage handler is a typed async
//! function, and a producer for application code.
//!
//! The outside contract (file format, broker names, message format) is in
//! the project's `DESIGN.md`; the README explains the guarantees.

pub mod backoff;
pub mod broker;
pub mod config;
pub mod connection;
pub mod dead_letters;
pub mod duration;
pub mod error;
pub mod exit;
pub mod jobs;
pub(crate) mod limits;
#[cfg(feature = "logging")]
pub mod logging;
pub mod message;
pub mod mismatch;
pub mod names;
pub mod pipeline;
pub mod producer;
pub mod publisher;
pub mod rate;
pub mod report;
pub mod retry;
pub mod template;
pub mod testing;
pub mod timings;
pub mod topology;
pub mod worker;

pub use broker::{BrokerUrl, BrokerUrls};
pub use error::{Error, Result};
pub use pipeline::{Pipeline, PostgresSpec, Stage, StageKind};
pub use producer::Producer;
pub use topology::Topology;
pub use worker::{Context, Failure, Outcome, Worker};
