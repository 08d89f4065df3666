//! `warren status FILE [--json]`: per stage, what the broker holds (the
//! paused stages included) and what the supervisors of this box run.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use warren::{Error, Topology};

use warren_ops::{
    management::Management,
    monitor::Monitor,
    status::SupervisorStatus,
    view::{self, StageView},
};

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Pipeline name.
    pub pipeline: String,
    /// Broker, without its password.
    pub broker: String,
    /// Per stage.
    pub stages: Vec<StageView>,
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
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8}  state",
        "stage",
        "ready",
        "in flight",
        "retrying",
        "isolated",
        "consumers",
        "dead",
        "workers",
        "restarts"
    );
    for line in &report.stages {
        out!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8}  {}",
            line.stage,
            line.ready,
            line.in_flight,
            line.retrying,
            line.isolated,
            line.consumers,
            line.dead,
            line.workers,
            line.restarts,
            line.state.map_or("-", |s| s.as_str())
        );
    }
    for line in &report.stages {
        for deploy in &line.deploys {
            out!("stage {}: {deploy}", line.stage);
        }
    }
    for supervisor in &report.supervisors {
        if let Some(keeper) = &supervisor.keeper {
            let ticks: u64 = keeper.ticks_fired.values().sum();
            out!(
                "job keeper: supervisor pid {}; callbacks delivered {}, failing {}{}; gathers released {}{}",
                supervisor.pid,
                keeper.callbacks_delivered,
                keeper.callbacks_failing,
                keeper
                    .last_failure
                    .as_ref()
                    .map(|f| format!(" (last failure: {f})"))
                    .unwrap_or_default(),
                keeper.gathers_released,
                if keeper.ticks_fired.is_empty() {
                    String::new()
                } else {
                    format!("; schedule ticks fired {ticks}")
                }
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
    let mut monitor = Monitor::new(
        pipeline.broker.urls.clone(),
        &pipeline.name,
        "status",
        false,
    );
    let management = Management::for_broker(&pipeline.broker.urls);
    let mut look = view::look(&pipeline, &topology, &mut monitor, Some(&management)).await;
    monitor.close().await;
    if look.queues.is_none() {
        return Err(Error::Unreachable {
            address: pipeline.broker.urls.addresses(),
            reason: "no connection".into(),
        }
        .into());
    }
    look.paused = Some(warren::pauses::read(&pipeline.broker.urls, &pipeline.name).await?);
    Ok(Report {
        pipeline: pipeline.name.clone(),
        broker: pipeline.broker.urls.to_string(),
        stages: view::view(&pipeline, &topology, &look),
        supervisors: look.supervisors,
    })
}
