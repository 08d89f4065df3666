//! The program of an `exec` stage, kept running by one task: it starts the
//! program (in a process group killed with the worker), writes the
//! messages on its stdin, routes its answers to the handlings that wait for
//! them, relays its stderr to the log, and when the program exits, writes
//! something that is not the protocol, answers about a message it was not
//! given, or lets a message pass its deadline, it kills the program's
//! process group, fails every unfinished message (the reason carrying the
//! program's last stderr lines; only a message it held alone counts an
//! attempt, see `culprit`) and starts it again, with a growing pause if it
//! keeps dying. With `max_messages` or `max_memory` it replaces the program
//! when due, without a gap and without failing a message (`recycle`).

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
use super::recycle::{self, Look, MEMORY_EVERY, Retiring};
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
        retiring: Vec::new(),
        memory_read: Instant::now(),
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
    /// Replaced programs finishing what they hold (see `recycle`).
    retiring: Vec<Retiring>,
    /// When the running program's resident size was last read.
    memory_read: Instant,
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
                        let until = Instant::now() + grace;
                        self.stop(grace).await;
                        self.stop_retiring(until).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(request) => self.take(request),
                },
                Some(reason) = trouble => self.crash(&reason),
                _ = tick.tick() => {
                    self.check_deadlines();
                    self.restart_if_due();
                    self.look_at_retiring();
                    self.recycle_if_too_big();
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
                // (A replaced program holding it cannot be told: its
                // stdin is closed; its answer is awaited as usual.)
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
                    || self.pending.lock().expect("pending").contains_key(id)
                    || self.retiring.iter().any(|old| old.holds(id)) =>
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
                // A handling that gave up waiting (its message went back
                // to the queue) is not given to the program.
                if started.send(Ok(running.crash.subscribe())).is_err() {
                    return;
                }
                self.pending
                    .lock()
                    .expect("pending")
                    .insert(id, (events, deadline));
                let _ = stdin.send(line);
                running.given += 1;
                if let Some(why) = recycle::due(&self.spec.recycle, running.given, None) {
                    self.recycle(why);
                }
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
        // Handlings that gave up waiting (their messages went back to the
        // queue uncharged, see `given`) are forgotten.
        self.waiting.retain(
            |request| !matches!(request, Request::Start { started, .. } if started.is_closed()),
        );
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

/// Recycling (`max_messages`, `max_memory`; see `recycle`).
impl Keeper {
    /// Replaces the running program: a fresh one takes the next messages,
    /// the old one finishes what it holds. If no fresh one can be started,
    /// the old one goes on, and it is tried again after a pause.
    fn recycle(&mut self, why: recycle::Reason) {
        let now = Instant::now();
        if self.running.is_none() || self.closing || self.restart_at.is_some_and(|at| at > now) {
            return;
        }
        let pending = Unfinished::default();
        // The fresh program's stderr lines are its own: a failure of either
        // names the lines of the program that failed.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let fresh = match spawn(&self.spec, &self.who, &pending, &tail) {
            Ok(fresh) => fresh,
            Err(error) => {
                error!(stage = %self.who.stage, "the program is not replaced ({why}): {error}");
                self.restart_at = Some(now + self.backoff.next_delay());
                return;
            }
        };
        let Some(old) = self.running.replace(fresh) else {
            return;
        };
        let old_pending = std::mem::replace(&mut self.pending, pending);
        let old_tail = std::mem::replace(&mut self.tail, tail);
        let holds = old_pending.lock().expect("pending").len();
        info!(
            stage = %self.who.stage,
            pid = old.pid,
            holds,
            "recycling the program: {why}; pid {} takes the next messages, pid {} finishes the {holds} it holds",
            self.running.as_ref().map_or(0, |new| new.pid),
            old.pid,
        );
        self.retiring
            .push(Retiring::new(old, old_pending, old_tail, &self.who.stage));
        self.memory_read = now;
    }

    /// Reads the running program's resident size (every `MEMORY_EVERY`)
    /// and replaces it when it is above `max_memory`.
    fn recycle_if_too_big(&mut self) {
        let Some(running) = &self.running else {
            return;
        };
        if self.spec.recycle.max_memory.is_none() || self.memory_read.elapsed() < MEMORY_EVERY {
            return;
        }
        self.memory_read = Instant::now();
        let rss = recycle::resident_bytes(running.pid);
        if let Some(why) = recycle::due(&self.spec.recycle, running.given, rss)
            && matches!(why, recycle::Reason::Memory(_))
        {
            self.recycle(why);
        }
    }

    /// Lets go of replaced programs that finished; stops those that died
    /// or let a message pass its deadline with messages in hand.
    fn look_at_retiring(&mut self) {
        let now = Instant::now();
        let before = self.retiring.len();
        for mut old in std::mem::take(&mut self.retiring) {
            match old.look(now) {
                Look::Working => self.retiring.push(old),
                Look::Gone => old.gone(),
                Look::Failed(reason) => old.fail(&reason),
            }
        }
        if self.retiring.len() < before {
            // A request for an id a replaced program held can go now.
            self.release_waiting();
        }
    }

    /// On drain: waits for the replaced programs to finish, until `until`,
    /// then stops those left.
    async fn stop_retiring(&mut self, until: Instant) {
        while !self.retiring.is_empty() && Instant::now() < until {
            self.look_at_retiring();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for old in std::mem::take(&mut self.retiring) {
            old.fail("the worker stopped");
        }
    }
}

/// Answers a request that cannot be given to a program.
fn refuse(request: Request, why: &str) {
    if let Request::Start { started, .. } = request {
        let _ = started.send(Err(why.to_string()));
    }
}
