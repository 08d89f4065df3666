//! One run of an `exec` stage's program: the child process (in a process
//! group that is killed with the worker, even by SIGKILL, see
//! `subprocess::guard`; its environment from `environment`) and the tasks
//! that serve its pipes: the writer of its stdin, the reader that routes its
//! answers to the handlings waiting for them (and reports anything that is
//! not the protocol), and the relay of its stderr to the log.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use rustix::process::Signal;
use tokio::{
    io::{AsyncRead, AsyncWriteExt},
    process::{ChildStdin, Command},
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::info;
use warren::{message::one_line, pipeline::ExecSpec};

use super::{
    culprit::Stopped,
    environment::{self, Identity},
    protocol::{self, Answer, MAX_LINE},
};
use crate::subprocess::{
    die_with_parent,
    guard::Group,
    lines::{Line, Lines, relay},
};

/// Lines of the program's stderr kept for the reasons of failures.
const TAIL_LINES: usize = 5;

/// Why a handling's message was not finished: the program was stopped
/// (why, and what it held then).
pub type Crash = watch::Receiver<Option<Arc<Stopped>>>;

/// The messages given to the running program and not finished.
pub type Unfinished = Arc<Mutex<HashMap<String, (mpsc::Sender<Answer>, Instant)>>>;

/// One run of the program.
pub struct Running {
    pub pid: u32,
    /// Its process group: it and what it started; killed when dropped.
    pub group: Group,
    /// Lines for its stdin; dropped to close it.
    pub stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pub crash: watch::Sender<Option<Arc<Stopped>>>,
    /// Why it must stop: set by the reader (a bad line, the end of its
    /// stdout) or by its exit.
    pub trouble: mpsc::UnboundedReceiver<String>,
    pub started: Instant,
    /// It finished a message: it works.
    pub healthy: Arc<AtomicBool>,
    /// Messages it was given (for `max_messages`).
    pub given: u64,
}

/// Starts the program with its pipes and the tasks that serve them.
pub fn spawn(
    spec: &ExecSpec,
    who: &Identity,
    pending: &Unfinished,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<Running, String> {
    let env = environment::build(std::env::vars_os(), &spec.env, who)?;
    let mut command = Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(env)
        // The program starts in the pipeline file's folder, so
        // `exec: [python3, lookup.py]` finds the script beside the file.
        .current_dir(who.pipeline_file.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut group = Group::new();
    group.join(&mut command);
    die_with_parent(&mut command, Signal::KILL);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", spec.argv[0]))?;
    let pid = child.id().unwrap_or_default();
    group.started(pid);
    let (trouble_tx, trouble) = mpsc::unbounded_channel();
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    tokio::spawn(write_lines(stdin, stdin_rx));
    tokio::spawn(relay_stderr(stderr, who.stage.clone(), tail.clone()));
    let (crash, _) = watch::channel(None);
    let healthy = Arc::new(AtomicBool::new(false));
    tokio::spawn(read_answers(
        stdout,
        pending.clone(),
        trouble_tx.clone(),
        crash.subscribe(),
        healthy.clone(),
    ));
    tokio::spawn(async move {
        let how = match child.wait().await {
            Ok(status) => describe(status),
            Err(error) => format!("lost track of it: {error}"),
        };
        let _ = trouble_tx.send(format!("the program {how}"));
    });
    Ok(Running {
        pid,
        group,
        stdin: Some(stdin_tx),
        crash,
        trouble,
        started: Instant::now(),
        healthy,
        given: 0,
    })
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// Lines written to the program in one go, at most: what is waiting when
/// the pipe can take more goes out together (one system call for many
/// messages, and the program reads many at once).
const LINES_AT_ONCE: usize = 256;

/// Writes lines to the program's stdin; closing the channel closes it.
async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut waiting = Vec::with_capacity(LINES_AT_ONCE);
    let mut out = Vec::new();
    while lines.recv_many(&mut waiting, LINES_AT_ONCE).await > 0 {
        out.clear();
        for line in waiting.drain(..) {
            out.extend_from_slice(&line);
        }
        if stdin.write_all(&out).await.is_err() {
            return; // the program is gone; its exit says why
        }
        if out.capacity() > 1 << 20 {
            out = Vec::new(); // a batch of big messages: not kept
        }
    }
}

/// The program's stderr, line by line, into the log (and the last lines
/// kept for the reasons of failures).
async fn relay_stderr(
    stderr: impl AsyncRead + Unpin,
    stage: String,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    relay(stderr, 64 * 1024, |line| {
        let text = one_line(line, 2000);
        info!(%stage, "program: {text}");
        let mut tail = tail.lock().expect("tail");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(one_line(&text, 300));
    })
    .await;
}

/// Reads the program's answers and gives each to the handling of its
/// message; anything that is not the protocol stops the program.
async fn read_answers(
    stdout: impl AsyncRead + Unpin,
    pending: Unfinished,
    trouble: mpsc::UnboundedSender<String>,
    mut crash: Crash,
    healthy: Arc<AtomicBool>,
) {
    let mut lines = Lines::new(stdout, MAX_LINE);
    loop {
        let read = tokio::select! {
            read = lines.next() => read,
            _ = crash.changed() => return,
        };
        let line = match read {
            Line::End => return, // its exit says why
            Line::TooLong => {
                let _ = trouble.send(format!(
                    "the program wrote a line longer than {} MiB",
                    MAX_LINE / (1024 * 1024)
                ));
                return;
            }
            Line::Whole(line) => line,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = match protocol::decode(&line) {
            Ok(answer) => answer,
            Err(why) => {
                let shown = one_line(&String::from_utf8_lossy(&line[..line.len().min(200)]), 200);
                let _ = trouble.send(format!(
                    "the program wrote a line that is not the protocol ({why}): {shown}"
                ));
                return;
            }
        };
        let finished = !matches!(answer, Answer::Emit { .. } | Answer::Progress { .. });
        if matches!(answer, Answer::Done { .. }) {
            healthy.store(true, Ordering::Relaxed);
        }
        let events = {
            let mut pending = pending.lock().expect("pending");
            let events = pending.get(answer.id()).map(|(events, _)| events.clone());
            if finished {
                pending.remove(answer.id());
            }
            events
        };
        let Some(events) = events else {
            let _ = trouble.send(format!(
                "the program answered about `{}`, a message it was not given or had finished",
                one_line(answer.id(), 100)
            ));
            return;
        };
        // Waits while the handling passes on what came before: a program
        // that floods its stdout is read no faster than its emits go out.
        let _ = events.send(answer).await;
    }
}
