//! Is a pipeline done? Every stage queue and retry queue empty, and nothing
//! in flight, seen twice in a row.

use std::collections::HashMap;

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
    monitor: Monitor,
    management: Management,
    /// The management API answered at least once.
    pub management_seen: bool,
    previous_empty: bool,
}

impl Watcher {
    /// A watcher of `pipeline`.
    pub fn new(pipeline: &Pipeline) -> Watcher {
        Watcher {
            monitor: Monitor::new(pipeline.broker.url.clone(), &pipeline.name, "drain", false),
            management: Management::for_broker(&pipeline.broker.url),
            pipeline: pipeline.clone(),
            management_seen: false,
            previous_empty: false,
        }
    }

    /// What is left per stage, adding `local_in_flight` (messages handled
    /// right now by workers this process knows of). `None` when the broker
    /// cannot be reached.
    pub async fn look(&mut self, local_in_flight: &HashMap<String, u64>) -> Option<Vec<Left>> {
        let topology = Topology::plan(&self.pipeline);
        let names_: Vec<String> = topology.queues.iter().map(|q| q.name.clone()).collect();
        let states = self.monitor.queues(&names_).await?;
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
        for (queue, state) in topology.queues.iter().zip(states) {
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
                Role::Retry(_) => stage.retrying += ready,
                Role::Dead => {}
            }
        }
        Some(left)
    }

    /// True when `left` is empty and the previous look was empty too.
    pub fn settled(&mut self, left: &[Left]) -> bool {
        let empty = left.iter().all(|l| l.total() == 0);
        let settled = empty && self.previous_empty;
        self.previous_empty = empty;
        settled
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
