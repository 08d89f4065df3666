//! `warren supervise`: run, restart and scale worker processes per stage.
//!
//! The control loop is here: it waits for the next poll, a worker's exit,
//! a worker's report or SIGHUP. Each poll ([`poll`]) reads each stage
//! queue's ready messages and consumers (passive declares on one
//! long-lived connection, [`monitor`]) and the number of supervisors of the
//! pipeline, adds what its workers report, and lets the [`policy`] decide
//! how many workers each stage gets on this box; the stage's [`pool`]
//! starts or drains them. Crashed workers restart with backoff
//! ([`restart`]); workers chosen to stop get SIGTERM and their grace period
//! before anything harsher. SIGHUP applies the file again ([`reload`]).
//! A stage whose program file changed ([`deploy`]) or that `warren
//! restart` names (a request on the pipeline's pause stream, followed by
//! [`warren::restarts::follow`]) has its workers replaced one at a time
//! ([`roll`]).

pub mod deploy;
pub mod policy;
mod poll;
pub mod pool;
pub mod process;
mod reload;
pub mod restart;
pub mod roll;
mod rolling;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren::{Pipeline, report::WorkerReport, restarts::Request};

use pool::Pool;
use process::{Environment, Exited, Launch};
use reload::selected;
use restart::RestartRules;
use status::SupervisorStatus;
use warren_ops::{monitor::Monitor, status};

/// Default time between polls.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// How a supervisor is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only these stages (all when `None`).
    pub stages: Option<Vec<String>>,
    /// Time between polls.
    pub poll: Duration,
    /// Workers log JSON lines (else bare lines the supervisor re-emits).
    pub json_logs: bool,
    /// Restart and crash-loop settings.
    pub rules: RestartRules,
    /// `RUST_LOG` for workers when it is not set.
    pub log_filter: &'static str,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            stages: None,
            poll: DEFAULT_POLL,
            json_logs: false,
            rules: RestartRules::default(),
            log_filter: warren::logging::DEFAULT_FILTER,
        }
    }
}

/// A running supervisor.
pub struct Supervisor {
    file: PathBuf,
    pipeline: Pipeline,
    options: Options,
    pools: Vec<Pool>,
    monitor: Monitor,
    env: Environment,
    exits: (
        mpsc::UnboundedSender<Exited>,
        mpsc::UnboundedReceiver<Exited>,
    ),
    reports: mpsc::UnboundedReceiver<WorkerReport>,
    status: Arc<Mutex<SupervisorStatus>>,
    shares: status::Shares,
    declared: bool,
    epoch: Instant,
}

impl Supervisor {
    /// Prepares a supervisor for `pipeline` read from `file`: opens its
    /// socket. Workers start at the first poll of [`Supervisor::run`].
    pub fn new(file: &Path, pipeline: Pipeline, options: Options) -> anyhow::Result<Supervisor> {
        let file = std::fs::canonicalize(file)?;
        let status = Arc::new(Mutex::new(SupervisorStatus {
            pid: std::process::id(),
            pipeline: pipeline.name.clone(),
            stages: Vec::new(),
            keeper: None,
        }));
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let shares = status::Shares::default();
        let socket = match status::listen(&pipeline.name) {
            Ok((listener, path)) => {
                tokio::spawn(status::serve(
                    listener,
                    status.clone(),
                    reports_tx,
                    shares.clone(),
                ));
                Some(path)
            }
            Err(error) => {
                warn!(
                    "no status socket ({error}): `warren status` will not see this supervisor's workers"
                );
                None
            }
        };
        let env = Environment {
            // Absolute: workers start in the pipeline file's folder.
            pipeline_file: std::path::absolute(&file).unwrap_or_else(|_| file.clone()),
            socket,
            log_format: if options.json_logs { "json" } else { "bare" },
            log_filter: options.log_filter,
        };
        let epoch = Instant::now();
        let mut pools = Vec::new();
        for stage in selected(&pipeline, options.stages.as_deref()) {
            pools.push(Pool::new(
                stage.clone(),
                Launch::of(stage, &file)?,
                options.rules,
                epoch,
                file.parent().unwrap_or(Path::new("/")),
            ));
        }
        Ok(Supervisor {
            monitor: Monitor::new(
                pipeline.broker.urls.clone(),
                &pipeline.name,
                "supervisor",
                true,
            ),
            file,
            pipeline,
            options,
            pools,
            env,
            exits: mpsc::unbounded_channel(),
            reports,
            status,
            shares,
            declared: false,
            epoch,
        })
    }

    /// The live state, updated after every event.
    pub fn status(&self) -> Arc<Mutex<SupervisorStatus>> {
        self.status.clone()
    }

    /// Supervises until `stop` is cancelled, re-reading the file on each
    /// message of `reload`, then drains every worker and returns.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        mut reload: mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        let stages: Vec<&str> = self.pools.iter().map(|p| p.stage.name.as_str()).collect();
        info!(pipeline = %self.pipeline.name, broker = %self.pipeline.broker.urls, "supervising {}", stages.join(", "));
        // A tracked pipeline's supervisors elect the job keeper among them.
        let mut keeper_stop = CancellationToken::new();
        let mut keeper = self.pipeline.jobs.track.then(|| {
            tokio::spawn(warren_ops::jobs::keeper::run(
                self.pipeline.clone(),
                self.status.clone(),
                keeper_stop.clone(),
            ))
        });
        let follow_stop = CancellationToken::new();
        let (requests_tx, mut requests) = mpsc::unbounded_channel();
        tokio::spawn(warren::restarts::follow(
            self.pipeline.broker.urls.clone(),
            self.pipeline.name.clone(),
            requests_tx,
            follow_stop.clone(),
        ));
        let mut tick = tokio::time::interval(self.options.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.poll().await,
                Some(exit) = self.exits.1.recv() => self.exited(&exit, false),
                Some(report) = self.reports.recv() => self.report(report),
                Some(request) = requests.recv() => self.restart(&request),
                Some(()) = reload.recv() => {
                    let schedules = self.pipeline.schedules.clone();
                    self.reload().await;
                    if self.pipeline.schedules != schedules
                        && let Some(running) = keeper.take()
                    {
                        // The keeper reads the schedules when it starts: a
                        // new one (another supervisor may lead meanwhile).
                        info!("SIGHUP: the schedules changed; starting the job keeper again");
                        keeper_stop.cancel();
                        let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
                        keeper_stop = CancellationToken::new();
                        keeper = Some(tokio::spawn(warren_ops::jobs::keeper::run(
                            self.pipeline.clone(),
                            self.status.clone(),
                            keeper_stop.clone(),
                        )));
                    }
                }
            }
            self.publish();
        }
        follow_stop.cancel();
        // The keeper goes last: gathers of what the workers finish while
        // draining are still released.
        self.shutdown(&mut tick).await;
        keeper_stop.cancel();
        if let Some(keeper) = keeper {
            let _ = tokio::time::timeout(Duration::from_secs(10), keeper).await;
        }
        Ok(())
    }

    fn exited(&mut self, exit: &Exited, stopping: bool) {
        let now = Instant::now();
        for pool in &mut self.pools {
            if pool.exited(exit, now, stopping) {
                return;
            }
        }
    }

    /// `warren restart`: roll the stages it names.
    fn restart(&mut self, request: &Request) {
        for pool in &mut self.pools {
            if !pool.retiring && request.covers(&pool.stage.name) {
                pool.begin_roll(format!("restart asked by {}", request.by));
            }
        }
    }

    fn report(&mut self, mut report: WorkerReport) {
        for (stage, counts) in report.stages {
            if let Some(pool) = self.pools.iter_mut().find(|p| p.stage.name == stage) {
                let running = report.running.remove(&stage).unwrap_or_default();
                pool.report(report.pid, counts, running);
            }
        }
    }

    /// Drains every worker, killing only those past their grace period.
    async fn shutdown(&mut self, tick: &mut tokio::time::Interval) {
        let now = Instant::now();
        let total: u32 = self.pools.iter().map(Pool::active).sum();
        info!("stopping: draining {total} workers");
        for pool in &mut self.pools {
            pool.retiring = true;
            pool.drain_all(now);
        }
        self.publish();
        while self.pools.iter().any(|p| !p.is_empty()) {
            tokio::select! {
                Some(exit) = self.exits.1.recv() => self.exited(&exit, true),
                Some(report) = self.reports.recv() => self.report(report),
                _ = tick.tick() => {
                    let now = Instant::now();
                    for pool in &mut self.pools {
                        pool.tick(now, &self.env, &self.exits.0);
                    }
                }
            }
            self.publish();
        }
        self.monitor.close().await;
        if let Some(socket) = &self.env.socket {
            let _ = std::fs::remove_file(socket);
        }
        info!("all workers stopped");
    }

    fn publish(&self) {
        let stages = self.pools.iter().map(Pool::status).collect();
        self.status.lock().expect("status").stages = stages;
    }
}
