//! One view of a running pipeline's stages, built once for every reader
//! (`warren status`, the dashboard, `/metrics`, `warren drain` and `warren
//! run`): what the broker holds for each stage (every box), and what this
//! box's supervisors run. A [`Look`] is what was read; [`view`] (pure) turns
//! it into one [`StageView`] per stage.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use warren::{Pipeline, Topology, names, report::StageCounts, topology::Role};

use crate::{
    management::{Figures, Management},
    monitor::{Monitor, QueueState},
    status::{self, StageState, SupervisorStatus},
};

/// One stage, seen from this box.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageView {
    /// Stage name.
    pub stage: String,
    /// Ready messages in the stage queue (every box).
    pub ready: u64,
    /// Delivered and not yet acknowledged: on every box when the
    /// management API answers, else those of this box's workers.
    pub in_flight: u64,
    /// Waiting in the stage's retry queues.
    pub retrying: u64,
    /// Waiting in the stage's isolation queue: their worker stopped while
    /// holding them; they are handled one at a time.
    pub isolated: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Consumers of the stage queue (every box).
    pub consumers: u32,
    /// Worker processes on this box.
    pub workers: u32,
    /// Unexpected worker exits on this box.
    pub restarts: u32,
    /// An operator paused the stage (`warren pause`; the state kept on the
    /// broker, every box).
    pub paused: bool,
    /// Its workers' state on this box; none without a supervisor here,
    /// but `paused` when the stage is paused, unless its workers do worse
    /// (a breaker open shows as `calls failing`, a crash loop as
    /// `failing`).
    pub state: Option<StageState>,
    /// Rolls of its workers under way or stopped on this box's
    /// supervisors (a deploy, `warren restart`), in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deploys: Vec<String>,
    /// What this box's workers counted (in flight, done, retried, dead,
    /// timings) since their supervisors started.
    #[serde(skip)]
    pub counts: StageCounts,
}

/// What one look read.
#[derive(Clone, Debug, Default)]
pub struct Look {
    /// Each queue of the topology (in its order): `None` for one that does
    /// not exist; the whole `None` when the broker did not answer.
    pub queues: Option<Vec<Option<QueueState>>>,
    /// This box's supervisors of the pipeline.
    pub supervisors: Vec<SupervisorStatus>,
    /// The management API's figures by queue name, when it answered.
    pub sampled: Option<HashMap<String, Figures>>,
    /// The paused stages (the broker's pause stream), when read: the
    /// caller fills it in (`warren_pipeline::pauses`: `read` once, or
    /// `follow`).
    pub paused: Option<BTreeSet<String>>,
}

/// Reads what a look needs: the broker's queues on `monitor`, this box's
/// supervisors, and the management API (with `management`).
pub async fn look(
    pipeline: &Pipeline,
    topology: &Topology,
    monitor: &mut Monitor,
    management: Option<&Management>,
) -> Look {
    let names = topology.looked_at();
    let queues = monitor.queues(&names).await;
    let supervisors = status::query_all(&pipeline.name).await;
    let sampled = match management {
        Some(api) => api.figures(&names::prefix(&pipeline.name)).await,
        None => None,
    };
    Look {
        queues,
        supervisors,
        sampled,
        paused: None,
    }
}

/// Every stage of `pipeline` as `look` saw it (pure).
pub fn view(pipeline: &Pipeline, topology: &Topology, look: &Look) -> Vec<StageView> {
    pipeline
        .stages
        .iter()
        .map(|stage| {
            let mut line = StageView {
                stage: stage.name.clone(),
                ..Default::default()
            };
            let theirs = topology
                .queues
                .iter()
                .enumerate()
                .filter(|(_, q)| q.stage.as_deref() == Some(stage.name.as_str()));
            for (at, queue) in theirs {
                let state = look
                    .queues
                    .as_ref()
                    .and_then(|states| states.get(at).copied().flatten())
                    .unwrap_or_default();
                match queue.role {
                    Role::Stage => {
                        line.ready = state.ready;
                        line.consumers = state.consumers;
                    }
                    Role::Retry(_) => line.retrying += state.ready,
                    Role::Isolation => line.isolated += state.ready,
                    Role::Dead => line.dead += state.ready,
                    Role::JobStream
                    | Role::Keeper
                    | Role::CancelStream
                    | Role::PauseStream
                    | Role::PeekStream
                    | Role::Delay(_) => {}
                }
            }
            for supervisor in &look.supervisors {
                for local in supervisor.stages.iter().filter(|s| s.name == stage.name) {
                    line.counts.add_totals(&local.counts);
                    line.counts.in_flight += local.counts.in_flight;
                    line.counts.breaker_open |=
                        local.counts.breaker_open || local.state == StageState::CallsFailing;
                    line.counts.blocked |=
                        local.counts.blocked || local.state == StageState::Blocked;
                    line.workers += local.workers;
                    line.restarts += local.restarts;
                    line.deploys.extend(local.deploy.clone());
                    line.state = line.state.max(Some(local.state));
                }
            }
            // The management API counts deliveries not yet acknowledged on
            // every box (sampled every few seconds); this box's workers
            // count theirs live.
            let everywhere = look
                .sampled
                .as_ref()
                .and_then(|s| s.get(&names::stage_queue(&pipeline.name, &stage.name)))
                .map_or(0, |f| f.unacked);
            line.in_flight = line.counts.in_flight.max(everywhere);
            line.paused = look
                .paused
                .as_ref()
                .is_some_and(|paused| paused.contains(&stage.name));
            if line.paused {
                line.state = line.state.max(Some(StageState::Paused));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StageStatus;

    fn pipeline() -> Pipeline {
        warren::config::parse_str(
            "
pipeline: p
stages:
  a:
    command: [/bin/true]
    outputs: [b]
  b:
    sink: { path: /tmp/b.jsonl }
",
            std::path::Path::new("/tmp/p.yaml"),
            &[],
        )
        .unwrap()
    }

    fn queue(ready: u64, consumers: u32) -> Option<QueueState> {
        Some(QueueState { ready, consumers })
    }

    #[test]
    fn every_queue_of_a_stage_is_counted_where_it_belongs() {
        let pipeline = pipeline();
        let topology = Topology::plan(&pipeline);
        let states = topology
            .queues
            .iter()
            .map(|q| match (&q.stage, &q.role) {
                (Some(s), Role::Stage) if s == "a" => queue(5, 2),
                (Some(s), Role::Retry(_)) if s == "a" => queue(1, 0),
                (Some(s), Role::Isolation) if s == "a" => queue(3, 0),
                (Some(s), Role::Dead) if s == "a" => queue(4, 0),
                (Some(s), Role::Isolation) if s == "b" => None,
                _ => queue(0, 0),
            })
            .collect();
        let look = Look {
            queues: Some(states),
            ..Default::default()
        };
        let stages = view(&pipeline, &topology, &look);
        let a = &stages[0];
        let retry_queues = topology
            .queues
            .iter()
            .filter(|q| q.stage.as_deref() == Some("a") && matches!(q.role, Role::Retry(_)))
            .count() as u64;
        assert_eq!(
            (a.ready, a.consumers, a.retrying, a.isolated, a.dead),
            (5, 2, retry_queues, 3, 4)
        );
        assert_eq!(
            stages[1].isolated, 0,
            "a queue that is not there holds nothing"
        );
        assert_eq!(a.state, None, "no supervisor here");
    }

    #[test]
    fn a_paused_stage_shows_paused_unless_its_workers_do_worse() {
        let pipeline = pipeline();
        let topology = Topology::plan(&pipeline);
        let stage = |name: &str, state| StageStatus {
            name: name.into(),
            state,
            workers: 1,
            ..Default::default()
        };
        let look = Look {
            supervisors: vec![SupervisorStatus {
                stages: vec![
                    stage("a", StageState::Running),
                    stage("b", StageState::CallsFailing),
                ],
                ..Default::default()
            }],
            paused: Some(["a".to_string(), "b".to_string()].into()),
            ..Default::default()
        };
        let stages = view(&pipeline, &topology, &look);
        assert!(stages[0].paused && stages[1].paused);
        assert_eq!(stages[0].state, Some(StageState::Paused));
        assert_eq!(
            stages[1].state,
            Some(StageState::CallsFailing),
            "the breaker says more; `paused` still shows"
        );
        let nobody = Look {
            paused: Some(["a".to_string()].into()),
            ..Default::default()
        };
        let stages = view(&pipeline, &topology, &nobody);
        assert_eq!(
            stages[0].state,
            Some(StageState::Paused),
            "paused without a supervisor here"
        );
        assert_eq!((stages[1].paused, stages[1].state), (false, None));
    }

    #[test]
    fn local_supervisors_add_up_and_the_worst_state_shows() {
        let pipeline = pipeline();
        let topology = Topology::plan(&pipeline);
        let stage = |state, in_flight, workers| StageStatus {
            name: "a".into(),
            state,
            workers,
            restarts: 1,
            counts: StageCounts {
                in_flight,
                done: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let supervisor = |stages| SupervisorStatus {
            stages,
            ..Default::default()
        };
        let mut sampled = HashMap::new();
        sampled.insert(
            "p.a".to_string(),
            Figures {
                unacked: 2,
                ready: 0,
            },
        );
        let look = Look {
            queues: None,
            supervisors: vec![
                supervisor(vec![stage(StageState::Running, 3, 2)]),
                supervisor(vec![stage(StageState::Failing, 1, 1)]),
            ],
            sampled: Some(sampled),
            paused: None,
        };
        let a = &view(&pipeline, &topology, &look)[0];
        assert_eq!((a.workers, a.restarts, a.counts.done), (3, 2, 20));
        assert_eq!(a.state, Some(StageState::Failing));
        assert_eq!(
            a.in_flight, 4,
            "this box's live count beats an older sample"
        );
    }
}
