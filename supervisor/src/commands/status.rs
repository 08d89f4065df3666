//! `warren status FILE [--json]`: per stage, what the broker holds and what
//! the supervisors of this box run.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use warren::{Error, Topology, names, topology::Role};

use crate::management::Management;
use crate::supervise::{
    monitor::Monitor,
    status::{self, SupervisorStatus},
};

/// One stage's line.
#[derive(Debug, Default, Serialize)]
pub struct StageLine {
    /// Stage name.
    pub stage: String,
    /// Ready messages in the stage queue.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged: on every box when the
    /// management API answers, else those of this box's workers.
    pub in_flight: u64,
    /// Messages waiting in the stage's retry queues.
    pub retrying: u64,
    /// Consumers of the stage queue (all boxes).
    pub consumers: u32,
    /// Messages in the dead-letter queue.
    pub dead: u64,
    /// Worker processes on this box.
    pub workers: u32,
    /// Unexpected worker exits on this box.
    pub restarts: u32,
    /// `running`, `failing` or `stopping` on this box; `-` without a
    /// supervisor here.
    pub state: String,
}

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Pipeline name.
    pub pipeline: String,
    /// Broker, without its password.
    pub broker: String,
    /// Per stage.
    pub stages: Vec<StageLine>,
    /// Supervisors of this pipeline on this box.
    pub supervisors: Vec<SupervisorStatus>,
}

/// Prints the status table (or JSON).
pub async fn run(file: &Path, json: bool) -> Result<()> {
    let report = collect(file).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    out!("pipeline {} on {}", report.pipeline, report.broker);
    out!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8}  state",
        "stage",
        "ready",
        "in flight",
        "retrying",
        "consumers",
        "dead",
        "workers",
        "restarts"
    );
    for line in &report.stages {
        out!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8}  {}",
            line.stage,
            line.ready,
            line.in_flight,
            line.retrying,
            line.consumers,
            line.dead,
            line.workers,
            line.restarts,
            line.state
        );
    }
    for supervisor in &report.supervisors {
        if let Some(keeper) = &supervisor.keeper {
            out!(
                "job keeper: supervisor pid {}; callbacks delivered {}, failing {}{}; gathers released {}",
                supervisor.pid,
                keeper.callbacks_delivered,
                keeper.callbacks_failing,
                keeper
                    .last_failure
                    .as_ref()
                    .map(|f| format!(" (last failure: {f})"))
                    .unwrap_or_default(),
                keeper.gathers_released
            );
        }
    }
    if report.supervisors.is_empty() {
        out!(
            "(no supervisor of this pipeline runs on this box: workers, restarts and state are this box's)"
        );
    }
    Ok(())
}

/// Reads the broker and the local supervisors.
pub async fn collect(file: &Path) -> Result<Report> {
    let pipeline = warren::config::load(file)?;
    let topology = Topology::plan(&pipeline);
    let queues: Vec<String> = topology.queues.iter().map(|q| q.name.clone()).collect();
    let mut monitor = Monitor::new(
        pipeline.broker.urls.clone(),
        &pipeline.name,
        "status",
        false,
    );
    let states = monitor
        .queues(&queues)
        .await
        .ok_or_else(|| Error::Unreachable {
            address: pipeline.broker.urls.addresses(),
            reason: "no connection".into(),
        })?;
    monitor.close().await;
    let supervisors = status::query_all(&pipeline.name).await;
    let unacked = Management::for_broker(&pipeline.broker.urls)
        .unacked(&format!("{}.", pipeline.name))
        .await;
    let mut stages = Vec::new();
    for stage in &pipeline.stages {
        let mut line = StageLine {
            stage: stage.name.clone(),
            state: "-".into(),
            ..Default::default()
        };
        for (queue, state) in topology.queues.iter().zip(&states) {
            let Some(state) = state else { continue };
            if queue.name == names::stage_queue(&pipeline.name, &stage.name) {
                line.ready = state.ready;
                line.consumers = state.consumers;
            } else if queue.name == names::dead_queue(&pipeline.name, &stage.name) {
                line.dead = state.ready;
            } else if matches!(queue.role, Role::Retry(_))
                && queue
                    .name
                    .starts_with(&format!("{}.{}.retry.", pipeline.name, stage.name))
            {
                line.retrying += state.ready;
            }
        }
        for supervisor in &supervisors {
            if let Some(local) = supervisor.stages.iter().find(|s| s.name == stage.name) {
                line.in_flight += local.counts.in_flight;
                line.workers += local.workers;
                line.restarts += local.restarts;
                line.state = local.state.clone();
            }
        }
        // The management API counts deliveries not yet acknowledged on every
        // box (sampled every few seconds); local workers count this box live.
        let everywhere = unacked
            .as_ref()
            .and_then(|u| u.get(&names::stage_queue(&pipeline.name, &stage.name)));
        line.in_flight = line.in_flight.max(everywhere.copied().unwrap_or(0));
        stages.push(line);
    }
    Ok(Report {
        pipeline: pipeline.name.clone(),
        broker: pipeline.broker.urls.to_string(),
        stages,
        supervisors,
    })
}
