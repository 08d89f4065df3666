//! Every second: the pipeline's stage view ([`warren_ops::view`]: the broker's
//! queues, this box's supervisors, the management API, the paused stages
//! followed live on the pause stream) and the job counts,
//! into the snapshot `/metrics` and the dashboard show and ingest's backlog
//! check reads, and what each stage did into the dashboard's history. Whether
//! the broker answered is `/readyz`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use warren::{
    Pipeline,
    pauses::{self, Pauses},
};

use super::{
    history::History,
    metrics::{Callbacks, Shared},
    tickets::Tickets,
};
use warren_ops::{management::Management, monitor::Monitor, view};

/// Time between looks.
const EVERY: Duration = Duration::from_secs(1);

/// Looks until `stop`.
pub async fn run(
    pipeline: Pipeline,
    figures: Shared,
    history: Arc<Mutex<History>>,
    tickets: Option<Tickets>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut monitor = Monitor::new(pipeline.broker.urls.clone(), &pipeline.name, "serve", false);
    let management = Management::for_broker(&pipeline.broker.urls);
    let topology = warren::Topology::plan(&pipeline);
    let pauses = Pauses::new();
    let follower = tokio::spawn(pauses::follow(
        pipeline.broker.urls.clone(),
        pipeline.name.clone(),
        pauses.clone(),
        stop.clone(),
    ));
    while !stop.is_cancelled() {
        let mut look = view::look(&pipeline, &topology, &mut monitor, Some(&management)).await;
        look.paused = Some(pauses.paused());
        let reachable = look.queues.is_some();
        ready.store(reachable, Ordering::Relaxed);
        let jobs = tickets.as_ref().and_then(|t| t.counts().ok());
        {
            let mut snapshot = figures.lock().expect("metrics");
            snapshot.broker_blocked = false;
            for mut stage in view::view(&pipeline, &topology, &look) {
                snapshot.broker_blocked |= stage.counts.blocked;
                if let Some(last) = snapshot.stages.get(&stage.stage).filter(|_| !reachable) {
                    // The broker did not answer: keep what it said last.
                    (stage.ready, stage.retrying, stage.isolated, stage.dead) =
                        (last.ready, last.retrying, last.isolated, last.dead);
                    stage.consumers = last.consumers;
                }
                snapshot.stages.insert(stage.stage.clone(), stage);
            }
            if let Some(jobs) = jobs {
                snapshot.jobs = jobs;
            }
            let keepers = || look.supervisors.iter().filter_map(|s| s.keeper.as_ref());
            for (schedule, n) in snapshot.schedule_ticks.iter_mut() {
                *n = keepers()
                    .filter_map(|keeper| keeper.ticks_fired.get(schedule))
                    .sum();
            }
            snapshot.callbacks = Callbacks {
                delivered: keepers().map(|k| k.callbacks_delivered).sum(),
                failed: keepers().map(|k| k.callbacks_failed).sum(),
            };
            let totals = look.supervisors.iter().flat_map(|supervisor| {
                supervisor.stages.iter().map(|stage| {
                    let c = &stage.counts;
                    (
                        supervisor.pid,
                        stage.name.as_str(),
                        [c.done, c.retried, c.dead],
                    )
                })
            });
            history
                .lock()
                .expect("history")
                .note(warren::message::epoch_ms(), totals);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
    monitor.close().await;
    let _ = follower.await;
}
