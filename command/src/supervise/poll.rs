//! One poll of the supervisor: what the broker says about each stage's
//! queue and about the pipeline's supervisors, what this box's workers
//! report, and the workers each stage should have now.

use std::time::Instant;

use tracing::error;
use warren::{Topology, names};

use super::{Supervisor, policy};
use policy::Observation;

impl Supervisor {
    pub(super) async fn poll(&mut self) {
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
            if !pool.retiring && pool.deployed() {
                pool.begin_roll("the program file changed".into());
            }
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
                        pool.observe(&mut observation, now);
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
}
