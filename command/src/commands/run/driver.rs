//! The two halves of a run: sending what is left of the input while the
//! workers already work on it, then watching the pipeline until it drained
//! (and, on a tracked pipeline, every job this run sent settled), a stage
//! fails, or Ctrl-C.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use warren::{Pipeline, Producer};
use warren_ops::{
    drained::{Local, Watcher},
    jobs::settling::Settling,
    status::{StageState, SupervisorStatus},
};

use super::{
    EVERY,
    resume::{State, hex, save_state},
};
use crate::{
    feed::{self, BadLines, Feed},
    input::{self, Source, Start},
    progress::Progress,
};

/// How the run ended.
pub enum Outcome {
    /// Every message handled (and every job settled).
    Drained,
    /// Ctrl-C.
    Interrupted,
    /// A stage's workers keep exiting: waiting would be for ever.
    Failing(String),
}

/// Sends the input and watches the pipeline until it drained.
pub struct Driver<'a> {
    pub pipeline: &'a Pipeline,
    pub entry: &'a str,
    pub source: &'a Source,
    pub bad: BadLines,
    pub id_field: Option<String>,
    pub state: &'a mut State,
    pub state_path: Option<&'a Path>,
    pub status: &'a Arc<Mutex<SupervisorStatus>>,
    pub interrupt: &'a CancellationToken,
    /// Good lines of a file (unknown for a pipe).
    pub total: Option<usize>,
    /// The jobs sent and not settled yet, on a tracked pipeline.
    pub settling: Option<Settling>,
}

impl Driver<'_> {
    /// Sends the input from `start`, then waits until it drained.
    pub async fn drive(&mut self, start: Start) -> Result<Outcome> {
        if let Some(outcome) = self.send(start).await? {
            return Ok(outcome);
        }
        self.wait().await
    }

    /// Sends what is left of the input while the workers work.
    async fn send(&mut self, start: Start) -> Result<Option<Outcome>> {
        let producer = Producer::connect(self.pipeline).await?;
        let total = self.total.map_or(0, |t| t as u64);
        let mut progress = Progress::new("sending", total);
        let mut saved_at = Instant::now();
        let lines = input::stream(self.source, start, self.id_field.clone());
        let name = self.source.name();
        let feed = Feed {
            producer: &producer,
            stage: self.entry,
            input: &name,
            bad: self.bad,
            when: None,
        };
        let (state, state_path) = (&mut *self.state, self.state_path);
        let settling = &mut self.settling;
        let (interrupt, status) = (self.interrupt, self.status);
        let failed = Mutex::new(None);
        let mut last: Option<Sha256> = None;
        let fed = feed::send(
            &feed,
            lines,
            |line| line.id.clone().unwrap_or_else(|| line.derived_id()),
            |line| {
                if let Some(settling) = settling.as_mut() {
                    settling.sent(line.id.clone().unwrap_or_else(|| line.derived_id()));
                }
                state.sent += 1;
                state.lines = line.number;
                state.offset = line.end;
                last = Some(line.digest.clone());
                if let Some(path) = state_path
                    && saved_at.elapsed() > Duration::from_secs(1)
                {
                    state.digest = hex(line.digest.clone());
                    save_state(path, state);
                    saved_at = Instant::now();
                }
                progress.set(state.sent as u64, "");
            },
            || {
                if interrupt.is_cancelled() {
                    return true;
                }
                let reason = failing(status);
                let stop = reason.is_some();
                *failed.lock().expect("failed") = reason;
                stop
            },
        )
        .await;
        producer.close().await;
        if let Some(digest) = last {
            self.state.digest = hex(digest);
        }
        if let Some(path) = self.state_path {
            save_state(path, self.state);
        }
        let fed = fed?;
        progress.finish(&format!(
            "{} inputs sent to {}",
            self.state.sent, self.entry
        ));
        if let Some(reason) = failed.into_inner().expect("failed") {
            return Ok(Some(Outcome::Failing(reason)));
        }
        if fed.interrupted {
            return Ok(Some(Outcome::Interrupted));
        }
        Ok(None)
    }

    /// Waits until the pipeline drained (and, on a tracked pipeline, every
    /// job this run sent settled), a stage fails, or Ctrl-C.
    async fn wait(&mut self) -> Result<Outcome> {
        let mut watcher = Watcher::new(self.pipeline);
        let total = self.total.unwrap_or(self.state.sent) as u64;
        let mut progress = Progress::new("working", total);
        let mut first = true;
        loop {
            match self.settling.as_mut() {
                // Folding is not cut short: it stops by itself within EVERY.
                Some(settling) => {
                    settling
                        .follow(tokio::time::Instant::now() + EVERY, first)
                        .await?;
                    first = false;
                }
                None => {
                    tokio::select! {
                        _ = self.interrupt.cancelled() => {}
                        _ = tokio::time::sleep(EVERY) => {}
                    }
                }
            }
            if self.interrupt.is_cancelled() {
                watcher.close().await;
                return Ok(Outcome::Interrupted);
            }
            if let Some(reason) = failing(self.status) {
                watcher.close().await;
                return Ok(Outcome::Failing(reason));
            }
            let (local, done, entry_done) = {
                let status = self.status.lock().expect("status");
                let mut local = HashMap::new();
                Local::add_all(&mut local, &status.stages);
                let done: Vec<String> = status
                    .stages
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.counts.done))
                    .collect();
                let entry_done = status
                    .stages
                    .iter()
                    .find(|s| s.name == self.entry)
                    .map_or(0, |s| s.counts.done);
                (local, done, entry_done)
            };
            let Some(left) = watcher.look(&local).await else {
                continue;
            };
            let jobs_open = self.settling.as_ref().map_or(0, Settling::going);
            let jobs = match &self.settling {
                Some(settling) => format!(
                    "; jobs: {} done, {} failed, {jobs_open} open",
                    settling.done(),
                    settling.failed().len()
                ),
                None => String::new(),
            };
            progress.set(entry_done, &format!("done: {}{jobs}", done.join(", ")));
            if jobs_open == 0 && watcher.settled(&left) {
                progress.finish("drained");
                watcher.close().await;
                return Ok(Outcome::Drained);
            }
        }
    }
}

/// The first stage whose workers keep exiting, and why.
fn failing(status: &Mutex<SupervisorStatus>) -> Option<String> {
    let status = status.lock().expect("status");
    status
        .stages
        .iter()
        .find(|s| s.state == StageState::Failing)
        .map(|s| {
            format!(
                "stage `{}` is failing: its workers keep exiting ({})",
                s.name,
                s.last_exit.as_deref().unwrap_or("no output")
            )
        })
}
