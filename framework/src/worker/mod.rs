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
//! within the grace period, acknowledges, and returns.

mod acks;
mod breaker;
mod context;
mod delivery;
mod handler;
mod outcome;
mod session;
mod signals;

use std::{future::Future, io::Write, process::ExitCode, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use context::{Context, Emitted};
pub use handler::{Handler, HandlerFuture, typed};
pub use outcome::{Action, Disposition, Failure, Outcome, decide};

pub(crate) use context::{Outlet, StageInfo};
pub(crate) use handler::{Invocation, invoke};

use crate::{config, connection, error::Error, pipeline::Pipeline, report};
use delivery::StageRuntime;
use session::SessionEnd;

/// Time a worker gives its handlers to finish after SIGTERM, beyond the
/// stage timeout.
pub const GRACE_MARGIN: Duration = Duration::from_secs(5);

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A session that lasted this long resets the reconnection backoff.
const STABLE: Duration = Duration::from_secs(10);

/// A worker process: handlers by stage name.
#[derive(Default)]
pub struct Worker {
    handlers: Vec<(String, Arc<dyn Handler>)>,
    pipeline: Option<Pipeline>,
    stages: Option<Vec<String>>,
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

    /// Runs until SIGTERM or SIGINT, then drains. See the module docs.
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
        let plan = self.plan()?;
        plan.run(&token).await
    }

    /// Runs like [`Worker::run`] and turns the result into an exit code,
    /// logging the error: 78 for a bad pipeline or worker setup, 69 for a
    /// refused login, 1 for anything else.
    pub async fn serve(self) -> ExitCode {
        match self.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                error!("{error}");
                // Not eprintln!: it panics when stderr is a closed pipe.
                let _ = writeln!(std::io::stderr(), "error: {error}");
                ExitCode::from(exit_code(&error))
            }
        }
    }

    /// Resolves the pipeline, the stages to serve and their handlers.
    fn plan(self) -> Result<Plan, Error> {
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
            stages.push(Arc::new(StageRuntime::new(&pipeline.name, stage, handler)));
        }
        let grace = stages
            .iter()
            .map(|s| s.stage.timeout)
            .max()
            .unwrap_or_default()
            + GRACE_MARGIN;
        if let Some(share) = std::env::var(report::RATE_SHARE_ENV)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            for limiter in stages.iter().filter_map(|s| s.limiter.as_ref()) {
                limiter.set_share(share);
            }
        }
        Ok(Plan {
            pipeline,
            stages,
            grace,
        })
    }
}

/// The exit code for a worker error.
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Pipeline(_) | Error::Setup(_) | Error::UnknownStage { .. } => 78,
        Error::LoginRefused { .. } | Error::Unreachable { .. } => 69,
        _ => 1,
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a worker serves, resolved.
struct Plan {
    pipeline: Pipeline,
    stages: Vec<Arc<StageRuntime>>,
    grace: Duration,
}

impl Plan {
    /// What the reporter tells the supervisor about, and where it applies
    /// the rate shares it gets back.
    fn reported(&self) -> Arc<Vec<report::Reported>> {
        Arc::new(
            self.stages
                .iter()
                .map(|s| report::Reported {
                    name: s.info.name.clone(),
                    stats: s.stats.clone(),
                    limiter: s.limiter.clone(),
                })
                .collect(),
        )
    }
    /// Sessions until shutdown, reconnecting with capped exponential
    /// backoff. Each change of state is logged once.
    async fn run(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let names: Vec<&str> = self.stages.iter().map(|s| s.info.name.as_str()).collect();
        let index = std::env::var("WARREN_WORKER").unwrap_or_else(|_| "0".into());
        let label = format!("{}.{}#{index}", self.pipeline.name, names.join("+"));
        let url = &self.pipeline.broker.url;
        let mut backoff = Duration::from_millis(250);
        let mut down_since: Option<std::time::Instant> = None;
        let mut session_count = 0u32;
        let mut last_loss: Option<String> = None;
        let reporter = std::env::var(report::SOCKET_ENV)
            .ok()
            .map(|path| tokio::spawn(report::run(path, self.reported())));
        let _stop_reporting = reporter.map(|task| AbortOnDrop(task.abort_handle()));
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let conn_name = format!("warren worker {label} pid {}", std::process::id());
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                opened = connection::open(url, &conn_name) => opened,
            };
            let connection = match connection {
                Ok(connection) => connection,
                Err(error @ Error::LoginRefused { .. }) => return Err(error),
                Err(error) => {
                    match down_since {
                        None => {
                            warn!(
                                "{error}; retrying with backoff up to {}s",
                                MAX_BACKOFF.as_secs()
                            );
                            down_since = Some(std::time::Instant::now());
                        }
                        Some(since) => {
                            debug!(%error, down_for = ?since.elapsed(), "still cannot reach the broker")
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            session_count += 1;
            match down_since.take() {
                Some(since) => {
                    info!(serving = %label, "reconnected after {:.1}s; consuming again", since.elapsed().as_secs_f64())
                }
                None if session_count == 1 => {
                    info!(serving = %label, broker = %url, "connected; consuming")
                }
                None => info!(serving = %label, "reconnected; consuming again"),
            }
            let tag_prefix = format!(
                "warren-{}-{index}-{}-{session_count}",
                self.pipeline.name,
                std::process::id()
            );
            let started = std::time::Instant::now();
            match session::run(
                connection,
                &self.pipeline,
                &self.stages,
                shutdown,
                self.grace,
                &tag_prefix,
            )
            .await?
            {
                SessionEnd::Drained => {
                    info!(serving = %label, "drained; stopping");
                    if let Ok(path) = std::env::var(report::SOCKET_ENV) {
                        report::send_final(&path, &self.reported()).await;
                    }
                    return Ok(());
                }
                SessionEnd::Lost(reason) => {
                    // A session that ends at once again and again is logged
                    // once and retried with a growing pause.
                    if started.elapsed() > STABLE || last_loss.as_deref() != Some(reason.as_str()) {
                        warn!(serving = %label, "lost the broker: {reason}; reconnecting");
                    } else {
                        debug!(serving = %label, "lost the broker again: {reason}");
                    }
                    if started.elapsed() > STABLE {
                        backoff = Duration::from_millis(250);
                    }
                    last_loss = Some(reason);
                    down_since = Some(std::time::Instant::now());
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
