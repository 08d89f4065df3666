//! Workers without a supervisor (a Kubernetes pod, a systemd unit per
//! worker): with no supervisor to hand out rate-limit shares, a worker reads
//! how many consumers its stage's queue has and takes that fraction of the
//! stage's limit, again every [`SHARE_POLL`].

use std::{sync::Arc, time::Duration};

use lapin::{Connection, options::QueueDeclareOptions, types::FieldTable};
use tracing::{debug, info};

use super::stage::StageRuntime;

/// How often a worker without a supervisor reads its stages' consumer
/// counts.
pub(crate) const SHARE_POLL: Duration = Duration::from_secs(2);

/// A worker's share of its stage's rate limit when the stage's queue has
/// `consumers` consumers (this worker among them once it consumes): the
/// limit divided evenly, the whole limit when it seems alone.
pub(crate) fn lone_share(consumers: u32) -> f64 {
    1.0 / f64::from(consumers.max(1))
}

/// Whether this worker must find its shares itself: it has a rate-limited
/// stage and no supervisor's socket to ask.
pub(crate) fn needed(stages: &[Arc<StageRuntime>], supervised: bool) -> bool {
    !supervised && stages.iter().any(|s| s.limiter.is_some())
}

/// Sets the share of every rate-limited stage from its queue's consumer
/// count now and every [`SHARE_POLL`], on a channel of its own, until the
/// task is aborted (the session's end). A failed read keeps the last share.
pub(crate) async fn follow(connection: Arc<Connection>, stages: Vec<Arc<StageRuntime>>) {
    let mut last: Vec<Option<u32>> = vec![None; stages.len()];
    let mut channel = None;
    loop {
        if channel.is_none() {
            channel = connection.create_channel().await.ok();
        }
        if let Some(probe) = &channel {
            for (stage, last) in stages.iter().zip(last.iter_mut()) {
                let Some(limiter) = &stage.limiter else {
                    continue;
                };
                match probe
                    .queue_declare(
                        stage.queue.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                {
                    Ok(queue) => {
                        let consumers = queue.consumer_count();
                        limiter.set_share(lone_share(consumers));
                        if *last != Some(consumers) {
                            info!(
                                stage = %stage.info.name,
                                consumers,
                                "no supervisor: taking 1/{} of the rate limit {}",
                                consumers.max(1),
                                stage.stage.rate_limit.map(|r| r.to_string()).unwrap_or_default()
                            );
                            *last = Some(consumers);
                        }
                    }
                    Err(error) => {
                        debug!(stage = %stage.info.name, %error, "could not read the consumer count; keeping the last share");
                        channel = None;
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(SHARE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_divided_among_the_consumers() {
        assert_eq!(lone_share(0), 1.0);
        assert_eq!(lone_share(1), 1.0);
        assert_eq!(lone_share(2), 0.5);
        assert_eq!(lone_share(4), 0.25);
        // Three workers of a 30/s stage: 10/s each.
        let limit = crate::rate::RateLimit::parse("30/s").unwrap();
        assert!((limit.per_second() * lone_share(3) - 10.0).abs() < 1e-9);
    }
}
