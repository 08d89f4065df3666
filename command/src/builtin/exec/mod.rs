//! The built-in `exec` stage: a program in any language, kept running, that
//! speaks JSON lines (DESIGN.md, *exec stages*). Each message handled by
//! the worker is one line on the program's stdin; the handling waits for
//! the program's answers about it, emits what it says to emit (confirmed by
//! the broker, every [`FLUSH_EVERY`] emits and at the end), and ends as the
//! program says: done, retry (after a delay), or dead. Everything else of a
//! Rust stage applies unchanged (prefetch, concurrency, timeout, retries,
//! dead letters, rate limit, circuit breaker, drain), since this is an
//! ordinary handler of the worker runtime.
//!
//! [`program`] keeps the program running, one run of it at a time
//! (`child`: the process and its pipes; `environment`: what it inherits);
//! [`protocol`] is the line format; `culprit` says which message a
//! stopped program is charged to; `recycle` replaces a program that was
//! given `max_messages` or grew above `max_memory`.

mod child;
mod culprit;
mod environment;
pub mod program;
pub mod protocol;
mod recycle;

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::info;
use warren::{
    Context, Error, Failure, Outcome,
    worker::{Handler, HandlerFuture},
};

use program::Request;
use protocol::{Answer, Input};

/// Emits confirmed at least this often, so that the program's output is
/// read no faster than the broker takes it.
pub const FLUSH_EVERY: u32 = 128;

/// How much earlier than the stage timeout the program's deadline falls.
const DEADLINE_MARGIN: Duration = Duration::from_millis(300);

/// Answers about one message buffered before the program is read no more.
const ANSWERS_BUFFERED: usize = 64;

/// An `exec` stage's handler.
pub struct ExecStage {
    requests: mpsc::UnboundedSender<Request>,
    stage: String,
    timeout: Duration,
}

impl ExecStage {
    /// Starts the program; an error (it cannot be started at all) names it.
    pub fn start(
        spec: warren::pipeline::ExecSpec,
        who: program::Identity,
        timeout: Duration,
    ) -> Result<ExecStage, String> {
        let stage = who.stage.clone();
        let requests = program::start(spec, who)?;
        Ok(ExecStage {
            requests,
            stage,
            timeout,
        })
    }

    /// Closes the program's stdin: it finishes what it holds and exits.
    pub fn close(&self) {
        let _ = self.requests.send(Request::Close);
    }

    /// Waits until the program exited, at most `grace`, then kills it.
    pub async fn stop(&self, grace: Duration) {
        let (done, stopped) = oneshot::channel();
        if self.requests.send(Request::Stop { grace, done }).is_ok() {
            let _ = stopped.await;
        }
    }
}

impl Handler for ExecStage {
    fn start(&self, body: &[u8], ctx: Context) -> Result<HandlerFuture, String> {
        let body = protocol::one_line_json(body)?;
        // A little before the stage's own timeout, so that the program is
        // stopped (and the message's reason says so) before the worker
        // gives up on the handling.
        let left = self
            .timeout
            .saturating_sub(DEADLINE_MARGIN)
            .max(self.timeout / 2);
        let now = Instant::now();
        let deadline = now + left;
        // A program gets a message with half its time ahead at least.
        let give_by = now + left / 2;
        let line = Input {
            id: ctx.id(),
            job: ctx.job(),
            stage: &self.stage,
            attempt: ctx.attempt(),
            deadline_ms: left.as_millis() as u64,
            body: &body,
        }
        .line();
        let requests = self.requests.clone();
        Ok(Box::pin(async move {
            let (answers_tx, answers) = mpsc::channel(ANSWERS_BUFFERED);
            let (started, taken) = oneshot::channel();
            requests
                .send(Request::Start {
                    id: ctx.id().to_string(),
                    line,
                    deadline,
                    events: answers_tx,
                    started,
                })
                .map_err(|_| Failure::crashed("the program's keeper stopped"))?;
            // A message that no program took (it waited for the program to
            // start again, or the worker is stopping) goes back uncharged:
            // only what a program held can be its fault.
            let crash = match given(taken, give_by).await {
                Ok(crash) => crash,
                Err(Some(why)) => {
                    info!(id = %ctx.id(), "back to its queue, its attempt not counted: {why}");
                    return Err(Failure::untouched(why));
                }
                // A bug: a crash, charged as before, never a loop.
                Err(None) => return Err(Failure::crashed("the program's keeper stopped")),
            };
            follow(answers, crash, &ctx, &requests).await
        }))
    }
}

/// The crash signal of the program that took the message, or why none
/// did (`None`: the program's keeper is gone). Waits until `give_by` at most (well before the stage's own
/// timeout, which would charge the message, and with time left for the
/// program): a message still waiting then goes back to its queue
/// uncharged, unless a program took it at that very moment.
async fn given(
    mut taken: oneshot::Receiver<Result<program::Crash, String>>,
    give_by: Instant,
) -> Result<program::Crash, Option<String>> {
    let answer = tokio::select! {
        biased;
        answer = &mut taken => answer,
        _ = tokio::time::sleep_until(give_by) => {
            // No program can take it from now on.
            taken.close();
            match taken.try_recv() {
                Ok(answer) => Ok(answer),
                Err(_) => return Err(Some("no program took it within half its deadline (the program was starting again)".into())),
            }
        }
    };
    match answer {
        Ok(given) => given.map_err(Some),
        Err(_) => Err(None),
    }
}

/// Carries out the program's answers about one message until the last.
async fn follow(
    mut answers: mpsc::Receiver<Answer>,
    mut crash: program::Crash,
    ctx: &Context,
    requests: &mpsc::UnboundedSender<Request>,
) -> Outcome {
    let mut emitted = 0u32;
    let mut told = false;
    // The program stopped after it finished this message: its last answer
    // is on its way.
    let mut answered = false;
    loop {
        let answer = tokio::select! {
            answer = answers.recv() => answer,
            changed = crash.changed(), if !answered => {
                if changed.is_err() {
                    // Its keeper let go of the program without a stop (a
                    // replaced program that answered everything): the
                    // answers are in `answers`, and a missing one ends it
                    // below.
                    answered = true;
                    continue;
                }
                let stopped = crash.borrow().clone();
                match culprit::verdict(stopped.as_deref(), ctx.id()).failure() {
                    Some(failure) => return Err(failure),
                    None => {
                        answered = true;
                        continue;
                    }
                }
            }
            _ = ctx.cancelled(), if !told => {
                // The job was cancelled (not a timeout: the program's own
                // deadline comes first): the program is told, and its
                // answer awaited as usual.
                told = true;
                if ctx.job_cancelled() {
                    let _ = requests.send(Request::Cancel { id: ctx.id().to_string() });
                }
                continue;
            }
        };
        let Some(answer) = answer else {
            // No last answer will come: the program stopped (its keeper
            // lets go of the message just before it says why).
            let _ = crash.wait_for(Option::is_some).await;
            let stopped = crash.borrow().clone();
            return Err(culprit::verdict(stopped.as_deref(), ctx.id())
                .failure()
                .unwrap_or_else(|| Failure::crashed("the program stopped")));
        };
        match answer {
            Answer::Emit { to, body, .. } => {
                let sent = match &to {
                    Some(stage) => ctx.emit_to(stage, &body).await,
                    None => ctx.emit(&body).await,
                };
                if let Err(error) = sent {
                    return Err(match error {
                        // A stage it may not emit to: its bug, for this message.
                        Error::Setup(why) => Failure::dead(format!("the program's emit: {why}")),
                        other => Failure::retry(other),
                    });
                }
                emitted += 1;
                if emitted.is_multiple_of(FLUSH_EVERY) {
                    ctx.flush().await?;
                }
            }
            Answer::Done { .. } => return Ok(()),
            Answer::Retry { reason, after, .. } => {
                return Err(match after {
                    Some(after) => Failure::retry_after(after, reason),
                    None => Failure::retry(reason),
                });
            }
            Answer::Dead { reason, .. } => return Err(Failure::dead(reason)),
            Answer::Progress { fraction, note, .. } => ctx.progress(fraction, &note),
        }
    }
}
