//! Is a pipeline done? Every stage queue and retry queue empty, and nothing
//! in flight, seen twice in a row.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use warren::{Pipeline, Topology, names, topology::Role};

use crate::{management::Management, supervise::monitor::Monitor};

/// What is left of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Left {
    /// Stage name.
    pub stage: String,
    /// Ready in the stage queue.
    pub ready: u64,
    /// Waiting in its retry queues.
    pub retrying: u64,
    /// Delivered and not acknowledged (or being handled).
    pub in_flight: u64,
}

impl Left {
    /// Messages left in all.
    pub fn total(&self) -> u64 {
        self.ready + self.retrying + self.in_flight
    }
}

/// Looks at a pipeline's queues.
pub struct Watcher {
    pipeline: Pipeline,
    /// The pipeline's queues, and their names (planned once).
    topology: Topology,
    queue_names: Vec<String>,
    monitor: Monitor,
    management: Management,
    /// The management API answered at least once.
    pub management_seen: bool,
    /// Since when every look found nothing left.
    empty_since: Option<Instant>,
}

/// How long the pipeline must look empty before it counts as drained:
/// longer than two of the workers' one-second reports, so a message just
/// taken by a worker that has not reported it yet is not missed.
const SETTLE: Duration = Duration::from_millis(2500);

impl Watcher {
    /// A watcher of `pipeline`.
    pub fn new(pipeline: &Pipeline) -> Watcher {
        let topology = Topology::plan(pipeline);
        Watcher {
            queue_names: topology.queues.iter().map(|q| q.name.clone()).collect(),
            topology,
            monitor: Monitor::new(pipeline.broker.urls.clone(), &pipeline.name, "drain", false),
            management: Management::for_broker(&pipeline.broker.urls),
            pipeline: pipeline.clone(),
            management_seen: false,
            empty_since: None,
        }
    }

    /// What is left per stage, adding `local_in_flight` (messages handled
    /// right now by workers this process knows of). `None` when the broker
    /// cannot be reached.
    pub async fn look(&mut self, local_in_flight: &HashMap<String, u64>) -> Option<Vec<Left>> {
        let states = self.monitor.queues(&self.queue_names).await?;
        let unacked = self
            .management
            .unacked(&format!("{}.", self.pipeline.name))
            .await;
        self.management_seen |= unacked.is_some();
        let mut left: Vec<Left> = self
            .pipeline
            .stages
            .iter()
            .map(|s| Left {
                stage: s.name.clone(),
                in_flight: local_in_flight.get(&s.name).copied().unwrap_or(0),
                ..Default::default()
            })
            .collect();
        for (queue, state) in self.topology.queues.iter().zip(states) {
            let Some(stage) = left.iter_mut().find(|l| {
                queue
                    .name
                    .starts_with(&format!("{}.{}.", self.pipeline.name, l.stage))
                    || queue.name == names::stage_queue(&self.pipeline.name, &l.stage)
            }) else {
                continue;
            };
            let ready = state.map_or(0, |s| s.ready);
            match queue.role {
                Role::Stage => {
                    stage.ready = ready;
                    let remote = unacked
                        .as_ref()
                        .and_then(|u| u.get(&queue.name))
                        .copied()
                        .unwrap_or(0);
                    stage.in_flight = stage.in_flight.max(remote);
                }
                // Isolated messages wait their turn like retries do.
                Role::Retry(_) | Role::Isolation => stage.retrying += ready,
                Role::Dead | Role::JobStream | Role::Keeper => {}
            }
        }
        Some(left)
    }

    /// True when `left` is empty and every look for [`SETTLE`] was too.
    pub fn settled(&mut self, left: &[Left]) -> bool {
        if left.iter().any(|l| l.total() > 0) {
            self.empty_since = None;
            return false;
        }
        let since = *self.empty_since.get_or_insert_with(Instant::now);
        since.elapsed() >= SETTLE
    }

    /// Closes the connection.
    pub async fn close(&mut self) {
        self.monitor.close().await;
    }
}

/// `stage: 3 ready, 1 retrying, 2 in flight` for the stages with something.
pub fn describe(left: &[Left]) -> String {
    let busy: Vec<String> = left
        .iter()
        .filter(|l| l.total() > 0)
        .map(|l| {
            format!(
                "{}: {} ready, {} retrying, {} in flight",
                l.stage, l.ready, l.retrying, l.in_flight
            )
        })
        .collect();
    if busy.is_empty() {
        "nothing left".into()
    } else {
        busy.join("; ")
    }
}
