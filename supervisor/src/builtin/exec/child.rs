//! One run of an `exec` stage's program: the child process (its own
//! process group, killed with the worker) and the tasks that serve its
//! pipes: the writer of its stdin, the reader that routes its answers to
//! the handlings waiting for them (and reports anything that is not the
//! protocol), and the relay of its stderr to the log.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use rustix::process::Signal;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    process::{ChildStdin, Command},
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::info;
use warren::{message::one_line, pipeline::ExecSpec};

use super::protocol::{self, Answer, MAX_LINE};
use crate::supervise::process::{die_with_parent, signal_group};

/// Lines of the program's stderr kept for the reasons of failures.
const TAIL_LINES: usize = 5;

/// Why a handling's message was not finished: the program was stopped.
pub type Crash = watch::Receiver<Option<String>>;

/// Who runs the program, for its environment and the log.
#[derive(Clone, Debug)]
pub struct Identity {
    pub pipeline_file: PathBuf,
    pub stage: String,
    pub worker: String,
    pub concurrency: u32,
}

/// The messages given to the running program and not finished.
pub type Unfinished = Arc<Mutex<HashMap<String, (mpsc::Sender<Answer>, Instant)>>>;

/// One run of the program.
pub struct Running {
    pub pid: u32,
    /// Lines for its stdin; dropped to close it.
    pub stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pub crash: watch::Sender<Option<String>>,
    /// Why it must stop: set by the reader (a bad line, the end of its
    /// stdout) or by its exit.
    pub trouble: mpsc::UnboundedReceiver<String>,
    pub started: Instant,
    /// It finished a message: it works.
    pub healthy: Arc<AtomicBool>,
}

/// Starts the program with its pipes and the tasks that serve them.
pub fn spawn(
    spec: &ExecSpec,
    who: &Identity,
    pending: &Unfinished,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<Running, String> {
    let mut command = Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .envs(&spec.env)
        .env("WARREN_PIPELINE", &who.pipeline_file)
        .env("WARREN_STAGE", &who.stage)
        .env("WARREN_WORKER", &who.worker)
        .env("WARREN_CONCURRENCY", who.concurrency.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut command, Signal::KILL);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", spec.argv[0]))?;
    let pid = child.id().unwrap_or_default();
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
        stdin: Some(stdin_tx),
        crash,
        trouble,
        started: Instant::now(),
        healthy,
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

/// Writes lines to the program's stdin; closing the channel closes it.
async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if stdin.write_all(&line).await.is_err() {
            return; // the program is gone; its exit says why
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
    let mut lines = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut lines, &mut line, 64 * 1024).await {
            Ok(Line::End) | Err(_) => return,
            Ok(Line::Whole | Line::TooLong) => {}
        }
        let text = one_line(&String::from_utf8_lossy(&line), 2000);
        info!(%stage, "program: {text}");
        let mut tail = tail.lock().expect("tail");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(one_line(&text, 300));
    }
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
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            read = read_line(&mut reader, &mut line, MAX_LINE) => read,
            _ = crash.changed() => return,
        };
        match read {
            Ok(Line::End) | Err(_) => return, // its exit says why
            Ok(Line::TooLong) => {
                let _ = trouble.send(format!(
                    "the program wrote a line longer than {} MiB",
                    MAX_LINE / (1024 * 1024)
                ));
                return;
            }
            Ok(Line::Whole) => {}
        }
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
        let finished = !matches!(answer, Answer::Emit { .. });
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

enum Line {
    Whole,
    TooLong,
    End,
}

/// Reads one line (without its newline) of at most `max` bytes.
async fn read_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Whole
            });
        }
        let (take, found) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if line.len() + take > max + 1 {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if found {
            line.pop();
            return Ok(Line::Whole);
        }
    }
}

/// Kills the program's process group (it and what it started).
pub fn kill(pid: u32) {
    signal_group(pid, Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(String, &'static str)> {
        let mut reader = BufReader::with_capacity(16, input);
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let kind = match read_line(&mut reader, &mut line, max).await.unwrap() {
                Line::End => return out,
                Line::Whole => "whole",
                Line::TooLong => "too long",
            };
            out.push((String::from_utf8_lossy(&line).into_owned(), kind));
            if kind == "too long" {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_read_whole_across_buffers_and_a_long_one_is_refused() {
        assert_eq!(
            lines(b"{\"id\":\"a\",\"done\":true}\nlast", 64).await,
            vec![
                ("{\"id\":\"a\",\"done\":true}".to_string(), "whole"),
                ("last".to_string(), "whole")
            ]
        );
        // 40 bytes and its newline fit a limit of 40; 41 do not, and the
        // reader stops without holding more than the limit.
        let exact = format!("{}\n", "x".repeat(40));
        assert_eq!(lines(exact.as_bytes(), 40).await[0].1, "whole");
        let long = format!("{}\nnext\n", "x".repeat(41));
        let read = lines(long.as_bytes(), 40).await;
        assert_eq!(read.last().unwrap().1, "too long");
        assert!(read.last().unwrap().0.len() <= 41);
    }
}
