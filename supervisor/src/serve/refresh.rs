//! Every second: the broker's queue depths and consumers (every box), the
//! workers' counters and timings of this box's supervisors, the in-flight
//! counts of the management API when it answers, and the job counts, into
//! the snapshot `/metrics` shows and ingest's backlog check reads. Whether
//! the broker answered is `/readyz`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use warren::{Pipeline, names, topology::Role};

use super::{metrics::Shared, tickets::Tickets};
use crate::{
    management::Management,
    supervise::{monitor::Monitor, status},
};

/// Time between looks.
const EVERY: Duration = Duration::from_secs(1);

/// Looks until `stop`.
pub async fn run(
    pipeline: Pipeline,
    figures: Shared,
    tickets: Option<Tickets>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut monitor = Monitor::new(pipeline.broker.urls.clone(), &pipeline.name, "serve", false);
    let management = Management::for_broker(&pipeline.broker.urls);
    // Each queue looked at, with its stage and what it holds.
    let topology = warren::Topology::plan(&pipeline);
    let looked: Vec<(usize, &Role, String)> = topology
        .queues
        .iter()
        .filter_map(|queue| {
            let stage = pipeline.stages.iter().position(|stage| {
                queue.name == names::stage_queue(&pipeline.name, &stage.name)
                    || queue.name == names::dead_queue(&pipeline.name, &stage.name)
                    || queue
                        .name
                        .starts_with(&format!("{}.{}.retry.", pipeline.name, stage.name))
            })?;
            matches!(queue.role, Role::Stage | Role::Dead | Role::Retry(_))
                .then(|| (stage, &queue.role, queue.name.clone()))
        })
        .collect();
    let queues: Vec<String> = looked.iter().map(|(_, _, name)| name.clone()).collect();
    while !stop.is_cancelled() {
        let states = monitor.queues(&queues).await;
        ready.store(states.is_some(), Ordering::Relaxed);
        let supervisors = status::query_all(&pipeline.name).await;
        let unacked = management.unacked(&format!("{}.", pipeline.name)).await;
        let jobs = tickets.as_ref().and_then(|t| t.counts().ok());
        {
            let mut snapshot = figures.lock().expect("metrics");
            snapshot.broker_blocked = false;
            for (i, stage) in pipeline.stages.iter().enumerate() {
                let figures = snapshot.stages.entry(stage.name.clone()).or_default();
                if let Some(states) = &states {
                    figures.retrying = 0;
                    for ((_, role, _), state) in
                        looked.iter().zip(states).filter(|((at, _, _), _)| *at == i)
                    {
                        let Some(state) = state else { continue };
                        match role {
                            Role::Stage => {
                                figures.ready = state.ready;
                                figures.workers = u64::from(state.consumers);
                            }
                            Role::Dead => figures.dead_letters = state.ready,
                            _ => figures.retrying += state.ready,
                        }
                    }
                }
                let mut counts = warren::report::StageCounts::default();
                let (mut local_workers, mut failing) = (0, false);
                for supervisor in &supervisors {
                    for local in supervisor.stages.iter().filter(|s| s.name == stage.name) {
                        counts.add_totals(&local.counts);
                        counts.in_flight += local.counts.in_flight;
                        counts.breaker_open |= local.state == "calls failing";
                        counts.blocked |= local.state == "blocked";
                        local_workers += u64::from(local.workers);
                        failing |= local.state == "failing";
                    }
                }
                figures.local_workers = local_workers;
                figures.failing = failing;
                let everywhere = unacked
                    .as_ref()
                    .and_then(|u| u.get(&names::stage_queue(&pipeline.name, &stage.name)))
                    .copied();
                figures.in_flight = everywhere.unwrap_or(0).max(counts.in_flight);
                let blocked = counts.blocked;
                figures.counts = counts;
                snapshot.broker_blocked |= blocked;
            }
            if let Some(jobs) = jobs {
                snapshot.jobs = jobs;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
    monitor.close().await;
}
