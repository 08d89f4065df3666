//! `warren supervise`: run, restart and scale worker processes per stage.
//!
//! Every poll the supervisor reads each stage queue's ready messages and
//! consumers (passive declares on one long-lived connection) and the number
//! of supervisors of the pipeline, adds what its workers report, and lets
//! the [`policy`] decide how many workers each stage gets on this box.
//! Crashed workers restart with backoff ([`restart`]); workers chosen to
//! stop get SIGTERM and their grace period before anything harsher.

pub mod monitor;
pub mod policy;
pub mod pool;
pub mod process;
pub mod restart;
pub mod status;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use warren::{Pipeline, Topology, names, report::WorkerReport};

use monitor::Monitor;
use policy::Observation;
use pool::Pool;
use process::{Environment, Exited, Launch};
use restart::RestartRules;
use status::SupervisorStatus;

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
            pipeline_file: file.clone(),
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
            ));
        }
        Ok(Supervisor {
            monitor: Monitor::new(
                pipeline.broker.url.clone(),
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
        info!(pipeline = %self.pipeline.name, broker = %self.pipeline.broker.url, "supervising {}", stages.join(", "));
        let mut tick = tokio::time::interval(self.options.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.poll().await,
                Some(exit) = self.exits.1.recv() => self.exited(&exit, false),
                Some(report) = self.reports.recv() => self.report(report),
                Some(()) = reload.recv() => self.reload().await,
            }
            self.publish();
        }
        self.shutdown(&mut tick).await;
        Ok(())
    }

    async fn poll(&mut self) {
        if !self.declared && self.monitor.ensure().await {
            self.declared = true;
            if let Some(connection) = self.monitor.connection()
                && let Err(error) = Topology::plan(&self.pipeline).declare(connection).await
            {
                error!("declaring the pipeline failed: {error}");
            }
        }
        let queues: Vec<String> = self
            .pools
            .iter()
            .map(|p| names::stage_queue(&self.pipeline.name, &p.stage.name))
            .collect();
        let seen = self.monitor.queues(&queues).await;
        let supervisors = if seen.is_some() {
            self.monitor.supervisors().await
        } else {
            1
        };
        let now = Instant::now();
        for (i, pool) in self.pools.iter_mut().enumerate() {
            if !pool.retiring {
                let queue_state = seen.as_ref().and_then(|states| states[i]);
                let target = match queue_state {
                    Some(queue) => {
                        let mut observation = Observation {
                            ready: queue.ready,
                            consumers: queue.consumers,
                            supervisors,
                            ..Default::default()
                        };
                        pool.observe(&mut observation);
                        let target = policy::target(
                            &pool.stage.scale,
                            &mut pool.scale_state,
                            &observation,
                            now - self.epoch,
                        );
                        if pool.stage.rate_limit.is_some() {
                            // The stage's workers everywhere: other boxes'
                            // consumers, and this box's workers as they are
                            // about to be.
                            let others =
                                observation.consumers.saturating_sub(observation.consuming);
                            let share =
                                1.0 / f64::from((others + target.max(observation.running)).max(1));
                            self.shares
                                .lock()
                                .expect("shares")
                                .insert(pool.stage.name.clone(), share);
                        }
                        target
                    }
                    // Without the broker's view, keep what runs (within bounds).
                    None => pool
                        .active()
                        .clamp(pool.stage.scale.min, pool.stage.scale.max),
                };
                if target != pool.active() {
                    pool.reconcile(target, now, &self.env, &self.exits.0);
                } else {
                    pool.target = target;
                }
            }
            pool.tick(now, &self.env, &self.exits.0);
        }
        self.pools
            .retain(|pool| !(pool.retiring && pool.is_empty()));
    }

    fn exited(&mut self, exit: &Exited, stopping: bool) {
        let now = Instant::now();
        for pool in &mut self.pools {
            if pool.exited(exit, now, stopping) {
                return;
            }
        }
    }

    fn report(&mut self, report: WorkerReport) {
        for (stage, counts) in report.stages {
            if let Some(pool) = self.pools.iter_mut().find(|p| p.stage.name == stage) {
                pool.report(report.pid, counts);
            }
        }
    }

    /// SIGHUP: re-read the file; apply it if it is valid.
    async fn reload(&mut self) {
        let new = match warren::config::load(&self.file) {
            Ok(new) => new,
            Err(invalid) => {
                error!(
                    "SIGHUP: the file is invalid, keeping the running configuration.\n{invalid}"
                );
                return;
            }
        };
        if new.name != self.pipeline.name {
            error!(
                "SIGHUP: the pipeline is now named `{}`; a supervisor serves one pipeline, restart it instead",
                new.name
            );
            return;
        }
        let now = Instant::now();
        let wanted: Vec<&warren::Stage> = selected(&new, self.options.stages.as_deref());
        for stage in &wanted {
            let launch = match Launch::of(stage, &self.file) {
                Ok(launch) => launch,
                Err(error) => {
                    error!("SIGHUP: {error}");
                    return;
                }
            };
            match self
                .pools
                .iter_mut()
                .find(|p| p.stage.name == stage.name && !p.retiring)
            {
                Some(pool) => {
                    if pool.update((*stage).clone(), launch) {
                        info!(stage = %stage.name, "settings changed: replacing its workers");
                        pool.drain_all(now);
                    }
                }
                None => {
                    info!(stage = %stage.name, "new stage");
                    self.pools.push(Pool::new(
                        (*stage).clone(),
                        launch,
                        self.options.rules,
                        self.epoch,
                    ));
                }
            }
        }
        for pool in &mut self.pools {
            if !wanted.iter().any(|s| s.name == pool.stage.name) && !pool.retiring {
                info!(stage = %pool.stage.name, "removed from the file: draining its workers");
                pool.retiring = true;
                pool.drain_all(now);
            }
        }
        self.pipeline = new;
        self.declared = false;
        info!("SIGHUP: reloaded {}", self.file.display());
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

/// The stages of `pipeline`, limited to `only` when given.
fn selected<'a>(pipeline: &'a Pipeline, only: Option<&[String]>) -> Vec<&'a warren::Stage> {
    pipeline
        .stages
        .iter()
        .filter(|s| only.is_none_or(|only| only.contains(&s.name)))
        .collect()
}
