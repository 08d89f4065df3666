//! The program of an `exec` stage, kept running by one task: it starts the
//! program (in a process group killed with the worker), writes the
//! messages on its stdin, routes its answers to the handlings that wait for
//! them, relays its stderr to the log, and when the program exits, writes
//! something that is not the protocol, answers about a message it was not
//! given, or lets a message pass its deadline, it kills the program's
//! process group, fails every unfinished message (the reason carrying the
//! program's last stderr lines; only a message it held alone counts an
//! attempt, see `culprit`) and starts it again, with a growing pause if it
//! keeps dying.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{error, info, warn};
use warren::{backoff::Backoff, pipeline::ExecSpec};

use super::child::{Running, Unfinished, spawn};
use super::culprit::Stopped;
use super::protocol::Answer;
pub use super::{child::Crash, environment::Identity};

/// A handling's request to the program's task.
pub enum Request {
    /// Give the program this message (its line), with answers to `events`
    /// until `deadline`; `started` gets the crash signal of the program
    /// that took it, or why it was not given to any.
    Start {
        id: String,
        line: Vec<u8>,
        deadline: Instant,
        events: mpsc::Sender<Answer>,
        started: oneshot::Sender<Result<Crash, String>>,
    },
    /// Tell the program that the job of message `id`, which it holds, was
    /// cancelled (a cancel line).
    Cancel { id: String },
    /// Close the program's stdin (the worker drains): it finishes what it
    /// holds and exits.
    Close,
    /// Wait until the program exited, at most `grace`, then kill it.
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Starts the program and the task that keeps it running; fails when it
/// cannot be started at all (a missing or not executable program).
pub fn start(spec: ExecSpec, who: Identity) -> Result<mpsc::UnboundedSender<Request>, String> {
    let pending = Unfinished::default();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let running = spawn(&spec, &who, &pending, &tail)?;
    let (requests, incoming) = mpsc::unbounded_channel();
    let keeper = Keeper {
        spec,
        who,
        pending,
        tail,
        running: Some(running),
        waiting: VecDeque::new(),
        restart_at: None,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        closing: false,
    };
    tokio::spawn(keeper.run(incoming));
    Ok(requests)
}

struct Keeper {
    spec: ExecSpec,
    who: Identity,
    pending: Unfinished,
    tail: Arc<Mutex<VecDeque<String>>>,
    running: Option<Running>,
    /// Requests that wait for a program (starting again, or busy with the
    /// same message from an earlier delivery).
    waiting: VecDeque<Request>,
    restart_at: Option<Instant>,
    backoff: Backoff,
    closing: bool,
}

impl Keeper {
    async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<Request>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            let trouble = async {
                match self.running.as_mut() {
                    Some(running) => running.trouble.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = incoming.recv() => match request {
                    None => break,
                    Some(Request::Stop { grace, done }) => {
                        self.stop(grace).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(request) => self.take(request),
                },
                Some(reason) = trouble => self.crash(&reason),
                _ = tick.tick() => {
                    self.check_deadlines();
                    self.restart_if_due();
                }
            }
        }
        if let Some(running) = &self.running {
            running.group.kill();
        }
    }

    fn take(&mut self, request: Request) {
        match request {
            Request::Close => {
                self.closing = true;
                if let Some(running) = &mut self.running {
                    running.stdin = None;
                }
                for request in std::mem::take(&mut self.waiting) {
                    refuse(request, "the worker is stopping");
                }
            }
            Request::Cancel { id } => {
                let holds = self.pending.lock().expect("pending").contains_key(&id);
                if let (true, Some(running)) = (holds, &self.running)
                    && let Some(stdin) = &running.stdin
                {
                    let _ = stdin.send(super::protocol::cancel_line(&id));
                }
            }
            Request::Start { .. } if self.closing => refuse(request, "the worker is stopping"),
            Request::Start { ref id, .. }
                if self.running.is_none()
                    || self.pending.lock().expect("pending").contains_key(id) =>
            {
                self.waiting.push_back(request);
            }
            Request::Start {
                id,
                line,
                deadline,
                events,
                started,
            } => {
                let running = self.running.as_mut().expect("running");
                let Some(stdin) = &running.stdin else {
                    let _ = started.send(Err("the program's stdin is closed".into()));
                    return;
                };
                self.pending
                    .lock()
                    .expect("pending")
                    .insert(id, (events, deadline));
                let _ = stdin.send(line);
                let _ = started.send(Ok(running.crash.subscribe()));
            }
            Request::Stop { .. } => unreachable!("handled by the loop"),
        }
    }

    /// Gives waiting requests to the program when they can go.
    fn release_waiting(&mut self) {
        for request in std::mem::take(&mut self.waiting) {
            self.take(request);
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let late = self
            .pending
            .lock()
            .expect("pending")
            .iter()
            .find(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| id.clone());
        if let Some(id) = late {
            self.crash(&format!(
                "message `{id}` passed its deadline: the program was stopped and started again"
            ));
        }
        let (late, waiting) = std::mem::take(&mut self.waiting).into_iter().partition(
            |request| matches!(request, Request::Start { deadline, .. } if *deadline <= now),
        );
        self.waiting = waiting;
        for request in late {
            refuse(
                request,
                "it passed its deadline waiting for the program to start again",
            );
        }
    }

    fn restart_if_due(&mut self) {
        if self.running.is_some() || self.closing {
            return;
        }
        if self.restart_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        match spawn(&self.spec, &self.who, &self.pending, &self.tail) {
            Ok(running) => {
                info!(stage = %self.who.stage, "the program runs again (pid {})", running.pid);
                self.running = Some(running);
                self.restart_at = None;
                self.release_waiting();
            }
            Err(why) => {
                error!(stage = %self.who.stage, "{why}");
                self.restart_at = Some(Instant::now() + self.backoff.next_delay());
            }
        }
    }

    /// The program must go: every unfinished message fails with `reason`
    /// and its last lines; it is started again after a pause.
    fn crash(&mut self, reason: &str) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.group.kill();
        // A program that worked, or ran a while, starts again at once.
        if running.healthy.load(Ordering::Relaxed)
            || running.started.elapsed() > Duration::from_secs(30)
        {
            self.backoff.reset();
        }
        let last: Vec<String> = self.tail.lock().expect("tail").iter().cloned().collect();
        let full = if last.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}; its last lines: {}", last.join(" / "))
        };
        let stopped = self.stopped(full);
        let unfinished = stopped.held.len();
        if !self.closing || unfinished > 0 {
            warn!(stage = %self.who.stage, unfinished, "{}", stopped.reason);
        }
        let _ = running.crash.send(Some(stopped));
        if !self.closing {
            let pause = self.backoff.next_delay();
            self.restart_at = Some(Instant::now() + pause);
        }
        self.release_waiting();
    }

    /// Waits for the program to exit by itself (its stdin is closed), at
    /// most `grace`, then kills it.
    async fn stop(&mut self, grace: Duration) {
        self.closing = true;
        let Some(running) = self.running.as_mut() else {
            return;
        };
        running.stdin = None;
        let ended = tokio::time::timeout(grace, running.trouble.recv()).await;
        if ended.is_err() {
            warn!(stage = %self.who.stage, "the program did not exit within {}s of its stdin closing; killing it", grace.as_secs());
        }
        if let Some(running) = self.running.take() {
            running.group.kill();
            let stopped = self.stopped("the worker stopped".into());
            let _ = running.crash.send(Some(stopped));
        }
    }

    /// The program stopped for `reason`: what it held is unfinished.
    fn stopped(&self, reason: String) -> Arc<Stopped> {
        let held = self
            .pending
            .lock()
            .expect("pending")
            .drain()
            .map(|(id, _)| id)
            .collect();
        Arc::new(Stopped { reason, held })
    }
}

/// Answers a request that cannot be given to a program.
fn refuse(request: Request, why: &str) {
    if let Request::Start { started, .. } = request {
        let _ = started.send(Err(why.to_string()));
    }
}
