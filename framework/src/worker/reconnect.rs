//! A worker's life: sessions with the broker, one after the other, with a
//! growing, jittered pause between them when the broker is away, until
//! shutdown. Each change of state is logged once.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    health,
    session::{self, AbortOnDrop, Connections, SessionEnd},
    stage::StageRuntime,
};
use crate::{backoff::Backoff, connection, error::Error, pipeline::Pipeline, report};

/// First pause before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between reconnection attempts (before jitter).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A session that lasted this long resets the reconnection backoff.
const STABLE: Duration = Duration::from_secs(10);

/// What a worker serves, resolved from the pipeline and its handlers.
pub(crate) struct Served {
    pub pipeline: Pipeline,
    pub stages: Vec<Arc<StageRuntime>>,
    /// How long handlers may take to finish after shutdown.
    pub grace: Duration,
    /// Where to answer health probes, if anywhere.
    pub health: Option<std::net::SocketAddr>,
}

impl Served {
    /// What the reporter tells the supervisor about, and where it applies
    /// the rate shares it gets back.
    fn reported(&self) -> Arc<Vec<report::Reported>> {
        Arc::new(
            self.stages
                .iter()
                .map(|s| report::Reported {
                    name: s.info.name.clone(),
                    stats: s.stats.clone(),
                    limiter: s.limiter.clone(),
                })
                .collect(),
        )
    }

    /// Sessions until shutdown.
    pub async fn run(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let names: Vec<&str> = self.stages.iter().map(|s| s.info.name.as_str()).collect();
        let index = std::env::var("WARREN_WORKER").unwrap_or_else(|_| "0".into());
        let label = format!("{}.{}#{index}", self.pipeline.name, names.join("+"));
        let urls = &self.pipeline.broker.urls;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut down_since: Option<std::time::Instant> = None;
        let mut session_count = 0u32;
        let mut last_loss: Option<String> = None;
        let reporter = std::env::var(report::SOCKET_ENV)
            .ok()
            .map(|path| tokio::spawn(report::run(path, self.reported())));
        let _stop_reporting = reporter.map(|task| AbortOnDrop(task.abort_handle()));
        let _stop_probes = match self.health {
            Some(addr) => {
                let listener = health::bind(addr).await?;
                info!(%addr, "answering /healthz and /readyz");
                let task = tokio::spawn(health::serve(listener, Arc::new(self.stages.clone())));
                Some(AbortOnDrop(task.abort_handle()))
            }
            None => None,
        };
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let name = format!("warren worker {label} pid {}", std::process::id());
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                opened = open(urls, &name) => opened,
            };
            let connections = match opened {
                Ok(connections) => connections,
                Err(error @ Error::LoginRefused { .. }) => return Err(error),
                Err(error) => {
                    match down_since {
                        None => {
                            warn!(
                                "{error}; retrying with backoff up to {}s",
                                MAX_BACKOFF.as_secs()
                            );
                            down_since = Some(std::time::Instant::now());
                        }
                        Some(since) => {
                            debug!(%error, down_for = ?since.elapsed(), "still cannot reach the broker")
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            };
            session_count += 1;
            match down_since.take() {
                Some(since) => {
                    info!(serving = %label, "reconnected after {:.1}s; consuming again", since.elapsed().as_secs_f64())
                }
                None if session_count == 1 => {
                    info!(serving = %label, broker = %urls, "connected; consuming")
                }
                None => info!(serving = %label, "reconnected; consuming again"),
            }
            let tag_prefix = format!(
                "warren-{}-{index}-{}-{session_count}",
                self.pipeline.name,
                std::process::id()
            );
            let started = std::time::Instant::now();
            let end = session::run(
                connections,
                &self.pipeline,
                &self.stages,
                shutdown,
                self.grace,
                &tag_prefix,
            )
            .await?;
            match end {
                SessionEnd::Drained => {
                    info!(serving = %label, "drained; stopping");
                    if let Ok(path) = std::env::var(report::SOCKET_ENV) {
                        report::send_final(&path, &self.reported()).await;
                    }
                    return Ok(());
                }
                SessionEnd::Lost(reason) => {
                    // A session that ends at once again and again is logged
                    // once and retried with a growing pause.
                    let stable = started.elapsed() > STABLE;
                    if stable || last_loss.as_deref() != Some(reason.as_str()) {
                        warn!(serving = %label, "lost the broker: {reason}; reconnecting");
                    } else {
                        debug!(serving = %label, "lost the broker again: {reason}");
                    }
                    if stable {
                        backoff.reset();
                    }
                    last_loss = Some(reason);
                    down_since = Some(std::time::Instant::now());
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}

/// Opens a session's two connections.
async fn open(urls: &crate::BrokerUrls, name: &str) -> Result<Connections, Error> {
    let consume = connection::open(urls, &format!("{name} consume")).await?;
    let publish = match connection::open(urls, &format!("{name} publish")).await {
        Ok(publish) => publish,
        Err(error) => {
            connection::close(&consume, "giving up").await;
            return Err(error);
        }
    };
    Ok(Connections {
        consume: Arc::new(consume),
        publish: Arc::new(publish),
    })
}
