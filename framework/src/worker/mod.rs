//! The worker runtime: register typed handlers by stage name, then `run`.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use warren::worker::{Context, Outcome, Worker};
//!
//! #[derive(Deserialize)]
//! struct Company { name: String }
//!
//! #[derive(Serialize)]
//! struct Site { company: String, url: String }
//!
//! async fn lookup(company: Company, ctx: Context) -> Outcome {
//!     let url = format!("https://{}.example", company.name.to_lowercase());
//!     ctx.emit(&Site { company: company.name, url }).await?;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     warren::logging::init(false);
//!     Worker::new().stage("lookup", lookup).serve().await
//! }
//! ```
//!
//! `run` reads `WARREN_PIPELINE` (the pipeline file) and `WARREN_STAGE` (a
//! stage name, or several separated by commas; all registered stages when
//! unset), as set by `warren supervise`. It connects, declares, consumes,
//! reconnects by itself when the broker goes away, and on SIGTERM or SIGINT
//! drains: it takes no new message, lets the handlers in flight finish
//! within the grace period (`WARREN_GRACE`, or the longest stage timeout
//! plus [`GRACE_MARGIN`]), acknowledges, and returns.
//!
//! Without a supervisor (`WARREN_SUPERVISOR_SOCKET` unset), a worker of a
//! rate-limited stage takes 1/N of the limit, N the consumers of the
//! stage's queue, read again every two seconds; `WARREN_HEALTH=ADDR` serves
//! `/healthz` and `/readyz` for a platform's probes.

mod acks;
mod breaker;
mod cancels;
mod channels;
mod consumer;
mod context;
mod delivery;
mod handler;
mod handover;
mod health;
mod in_flight;
mod intake;
mod lone;
mod outcome;
mod reconnect;
mod recorder;
mod session;
#[cfg(feature = "signals")]
mod signals;
mod stage;
mod stream_gate;

use std::{future::Future, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::error;

pub use context::{Context, Emitted};
pub use handler::{Handler, HandlerFuture, typed};
pub use health::HEALTH_ENV;
pub use outcome::{Action, Disposition, Failure, Outcome, decide};

pub(crate) use context::{Outlet, StageInfo};
pub(crate) use handler::{Handled, invoke};
pub(crate) use handover::id_of;

use crate::{config, error::Error, exit, pipeline::Pipeline, report};
use reconnect::Served;
use stage::StageRuntime;

/// Time a worker gives its handlers to finish after SIGTERM, beyond the
/// stage timeout.
pub const GRACE_MARGIN: Duration = Duration::from_secs(5);

/// The environment variable with a worker's grace period after SIGTERM
/// (`30s`, `2m`): set it below a platform's kill timeout, such as a
/// Kubernetes pod's `terminationGracePeriodSeconds`.
pub const GRACE_ENV: &str = "WARREN_GRACE";

/// A worker process: handlers by stage name.
#[derive(Default)]
pub struct Worker {
    handlers: Vec<(String, Arc<dyn Handler>)>,
    pipeline: Option<Pipeline>,
    stages: Option<Vec<String>>,
    health: Option<SocketAddr>,
    grace: Option<Duration>,
}

impl Worker {
    /// A worker with no handlers yet.
    pub fn new() -> Worker {
        Worker::default()
    }

    /// Registers `handler` for stage `name`: an async function from the
    /// message type (any `Deserialize`) and a [`Context`] to an [`Outcome`].
    pub fn stage<F, T, Fut>(self, name: &str, handler: F) -> Worker
    where
        F: Fn(T, Context) -> Fut + Send + Sync + 'static,
        T: DeserializeOwned + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.handler(name, Arc::new(typed(handler)))
    }

    /// Registers a type-erased handler for stage `name`.
    pub fn handler(mut self, name: &str, handler: Arc<dyn Handler>) -> Worker {
        self.handlers.retain(|(stage, _)| stage != name);
        self.handlers.push((name.to_string(), handler));
        self
    }

    /// Uses this pipeline instead of reading `WARREN_PIPELINE`.
    pub fn pipeline(mut self, pipeline: Pipeline) -> Worker {
        self.pipeline = Some(pipeline);
        self
    }

    /// Serves these stages instead of reading `WARREN_STAGE`.
    pub fn serve_stages<S: Into<String>>(mut self, stages: impl IntoIterator<Item = S>) -> Worker {
        self.stages = Some(stages.into_iter().map(Into::into).collect());
        self
    }

    /// Serves `/healthz` and `/readyz` on `addr` instead of reading
    /// `WARREN_HEALTH` (see [`HEALTH_ENV`]).
    pub fn health(mut self, addr: SocketAddr) -> Worker {
        self.health = Some(addr);
        self
    }

    /// Gives the handlers in flight this long to finish after SIGTERM,
    /// instead of reading `WARREN_GRACE` (see [`GRACE_ENV`]) or taking the
    /// longest stage timeout plus [`GRACE_MARGIN`].
    pub fn grace(mut self, grace: Duration) -> Worker {
        self.grace = Some(grace);
        self
    }

    /// Runs until SIGTERM or SIGINT, then drains. See the module docs.
    #[cfg(feature = "signals")]
    pub async fn run(self) -> Result<(), Error> {
        let shutdown = signals::shutdown_on_signal()?;
        self.run_until(shutdown.cancelled_owned()).await
    }

    /// Runs until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let served = self.resolve()?;
        // Spans of the handlings, when OTEL_EXPORTER_OTLP_ENDPOINT is set;
        // the last ones sent before the worker ends.
        let exporting = crate::traces::export_from_env();
        let result = served.run(&token).await;
        if let Some(exporting) = exporting {
            exporting.finish().await;
        }
        result
    }

    /// Runs like [`Worker::run`] and turns the result into an exit code,
    /// logging the error (see [`exit_code`]).
    #[cfg(feature = "signals")]
    pub async fn serve(self) -> ExitCode {
        match self.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                error!("{error}");
                // Not eprintln!: it panics when stderr is a closed pipe.
                let _ = std::io::Write::write_fmt(
                    &mut std::io::stderr(),
                    format_args!("error: {error}\n"),
                );
                ExitCode::from(exit_code(&error))
            }
        }
    }

    /// Resolves the pipeline, the stages to serve and their handlers.
    fn resolve(self) -> Result<Served, Error> {
        let pipeline = match self.pipeline {
            Some(pipeline) => pipeline,
            None => {
                let path = config::pipeline_path_from_env().ok_or_else(|| {
                    Error::Setup("WARREN_PIPELINE is not set: run this worker under `warren supervise`, or set WARREN_PIPELINE to the pipeline file".into())
                })?;
                config::load(path)?
            }
        };
        let wanted: Vec<String> = match self.stages {
            Some(stages) => stages,
            None => match std::env::var("WARREN_STAGE") {
                Ok(list) if !list.trim().is_empty() => {
                    list.split(',').map(|s| s.trim().to_string()).collect()
                }
                _ => self.handlers.iter().map(|(name, _)| name.clone()).collect(),
            },
        };
        if wanted.is_empty() {
            return Err(Error::Setup(
                "no stage to serve: register a handler with Worker::stage".into(),
            ));
        }
        let cancels = pipeline
            .jobs
            .track
            .then(|| Arc::new(cancels::Cancels::new(pipeline.jobs.keep)));
        let pauses = crate::pauses::Pauses::new();
        let peeks = crate::peeks::Peeks::default();
        let mut stages = Vec::new();
        for name in &wanted {
            let stage = pipeline.require_stage(name)?.clone();
            let handler = self
                .handlers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, h)| h.clone())
                .ok_or_else(|| {
                    let registered: Vec<&str> =
                        self.handlers.iter().map(|(n, _)| n.as_str()).collect();
                    Error::Setup(format!(
                        "this program has no handler for stage `{name}`; it handles: {}",
                        registered.join(", ")
                    ))
                })?;
            stages.push(Arc::new(StageRuntime::new(
                &pipeline,
                stage,
                handler,
                cancels.clone(),
                pauses.clone(),
                peeks.clone(),
            )));
        }
        let grace = match self.grace {
            Some(grace) => grace,
            None => match std::env::var(GRACE_ENV) {
                Ok(text) if !text.trim().is_empty() => crate::duration::parse(text.trim())
                    .map_err(|e| Error::Setup(format!("{GRACE_ENV}={text}: {e}")))?,
                _ => {
                    stages
                        .iter()
                        .map(|s| s.stage.timeout)
                        .max()
                        .unwrap_or_default()
                        + GRACE_MARGIN
                }
            },
        };
        let health = match self.health {
            Some(addr) => Some(addr),
            None => match std::env::var(HEALTH_ENV) {
                Ok(text) if !text.trim().is_empty() => {
                    Some(text.trim().parse::<SocketAddr>().map_err(|e| {
                        Error::Setup(format!(
                            "{HEALTH_ENV}={text}: not an address like 0.0.0.0:8081 ({e})"
                        ))
                    })?)
                }
                _ => None,
            },
        };
        if let Some(share) = std::env::var(report::RATE_SHARE_ENV)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            for limiter in stages.iter().filter_map(|s| s.limiter.as_ref()) {
                limiter.set_share(share);
            }
        }
        Ok(Served {
            pipeline,
            stages,
            grace,
            health,
        })
    }
}

/// The exit code for a worker error: [`exit::CONFIG`] for a bad pipeline
/// or worker setup, [`exit::UNAVAILABLE`] when the broker refuses the login
/// or cannot be reached, [`exit::FAILURE`] for anything else.
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Pipeline(_) | Error::Setup(_) | Error::UnknownStage(_) => exit::CONFIG,
        Error::LoginRefused { .. } | Error::Unreachable { .. } => exit::UNAVAILABLE,
        _ => exit::FAILURE,
    }
}
