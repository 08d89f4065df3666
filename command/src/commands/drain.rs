//! `warren drain FILE [--timeout D]`: wait until nothing is left.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use tracing::warn;

use warren_ops::{
    drained::{self, Local, Watcher},
    status,
};

use crate::{exit::Failed, progress::Progress};

/// Time between looks.
const EVERY: Duration = Duration::from_millis(500);

/// Waits until every stage and retry queue is empty and nothing is in
/// flight; exit 1 after `timeout` with what is left.
pub async fn run(file: &Path, timeout: Option<Duration>) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    let mut watcher = Watcher::new(&pipeline);
    let started = Instant::now();
    let mut progress = Progress::new("draining", 0);
    let mut warned = false;
    loop {
        let mut local = HashMap::new();
        for supervisor in status::query_all(&pipeline.name).await {
            Local::add_all(&mut local, &supervisor.stages);
        }
        let Some(left) = watcher.look(&local).await else {
            return Err(warren::Error::Unreachable {
                address: pipeline.broker.urls.addresses(),
                reason: "no connection".into(),
            }
            .into());
        };
        if watcher.management_missing && !warned {
            warn!(
                "the management API does not answer: messages in flight are counted only for this box's workers"
            );
            warned = true;
        }
        let total: u64 = left.iter().map(drained::Left::total).sum();
        progress.set(0, &drained::describe(&left));
        if watcher.settled(&left) {
            progress.finish("drained");
            out!(
                "{} is drained: every queue is empty and nothing is in flight",
                pipeline.name
            );
            watcher.close().await;
            return Ok(());
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            watcher.close().await;
            return Err(Failed(format!(
                "not drained after {:.0}s: {total} messages left ({})",
                started.elapsed().as_secs_f64(),
                drained::describe(&left)
            ))
            .into());
        }
        tokio::time::sleep(EVERY).await;
    }
}
