//! Starting and signalling worker processes.
//!
//! A worker gets the environment of DESIGN.md (`WARREN_PIPELINE`,
//! `WARREN_STAGE`, `WARREN_WORKER`, and `AMQP_URL` where set), the socket it
//! reports to, and a log format the supervisor can re-emit. It runs in its
//! own process group (a Ctrl-C in the terminal reaches only the supervisor,
//! which drains the workers in order), and signals go to that whole group,
//! so programs a worker started itself stop with it; what is left in the
//! group when the worker exited (it was killed, say) is killed then. It gets
//! SIGTERM when the supervisor dies, even by SIGKILL, so no worker outlives
//! it. Its stdout and stderr lines go into the supervisor's log with the
//! stage and worker index, bytes that are not UTF-8 shown as U+FFFD.

use std::{
    io,
    path::{Path, PathBuf},
    process::Stdio,
};

use rustix::process::Signal;
use tokio::{io::AsyncRead, process::Command, sync::mpsc};
use tracing::{Level, debug, error, info, trace, warn};
use warren::{
    logging,
    pipeline::{Stage, StageKind},
    report,
};

pub use crate::subprocess::signal_group;
use crate::subprocess::{die_with_parent, lines};

/// How to start a stage's workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Launch {
    /// The user's program for a `command` stage; `warren worker` for a
    /// built-in one.
    pub fn of(stage: &Stage, pipeline_file: &Path) -> io::Result<Launch> {
        Ok(match &stage.kind {
            StageKind::Command(command) => Launch {
                program: PathBuf::from(&command.argv[0]),
                args: command.argv[1..].to_vec(),
            },
            _ => Launch {
                program: std::env::current_exe()?,
                args: vec![
                    "worker".into(),
                    pipeline_file.display().to_string(),
                    "--stage".into(),
                    stage.name.clone(),
                ],
            },
        })
    }
}

/// A worker process ended.
#[derive(Debug)]
pub struct Exited {
    /// Its process id.
    pub pid: u32,
    /// How it ended, in words (`exit code 1`, `killed by signal 9`), with
    /// its last lines of output.
    pub how: String,
    /// It exited with [`warren::exit::CONFIG`]: its setup is wrong, and
    /// starting it again will not help.
    pub misconfigured: bool,
}

/// Lines of a worker's output kept to say why it exited.
const TAIL_LINES: usize = 3;

/// The last lines a worker wrote.
type Tail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

/// What every worker of this supervisor shares.
#[derive(Clone, Debug)]
pub struct Environment {
    /// Absolute path of the pipeline file.
    pub pipeline_file: PathBuf,
    /// The supervisor's socket, for reports.
    pub socket: Option<PathBuf>,
    /// `bare` or `json`: how workers log.
    pub log_format: &'static str,
    /// `RUST_LOG` for workers when it is not set already.
    pub log_filter: &'static str,
}

/// Starts worker `index` of `stage` with `rate_share` of the stage's rate
/// limit to begin with; its exit is sent to `exits`.
pub fn spawn(
    launch: &Launch,
    env: &Environment,
    stage: &str,
    index: u32,
    rate_share: f64,
    exits: mpsc::UnboundedSender<Exited>,
) -> io::Result<u32> {
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env("WARREN_PIPELINE", &env.pipeline_file)
        // Relative paths in the pipeline file are relative to its folder, and
        // so are a worker program's own (DESIGN.md: the file's folder).
        .current_dir(env.pipeline_file.parent().unwrap_or(Path::new("/")))
        .env("WARREN_STAGE", stage)
        .env("WARREN_WORKER", index.to_string())
        .env(report::RATE_SHARE_ENV, rate_share.to_string())
        .env(logging::FORMAT_ENV, env.log_format)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(socket) = &env.socket {
        command.env(report::SOCKET_ENV, socket);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", env.log_filter);
    }
    die_with_parent(&mut command, Signal::TERM);
    let mut child = command.spawn().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot start {}: {error}", launch.program.display()),
        )
    })?;
    let pid = child.id().unwrap_or_default();
    let tail = Tail::default();
    let mut relays = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        relays.push(tokio::spawn(relay(
            stderr,
            stage.to_string(),
            index,
            tail.clone(),
        )));
    }
    if let Some(stdout) = child.stdout.take() {
        relays.push(tokio::spawn(relay(
            stdout,
            stage.to_string(),
            index,
            tail.clone(),
        )));
    }
    tokio::spawn(async move {
        let (how, misconfigured) = match child.wait().await {
            Ok(status) => (
                describe(status),
                status.code() == Some(i32::from(warren::exit::CONFIG)),
            ),
            Err(error) => (format!("lost track of it: {error}"), false),
        };
        // What it started and left behind in its group (it was killed, or
        // did not wait for its children) goes with it.
        signal_group(pid, Signal::KILL);
        // Its last words, once its pipes are read to the end.
        for relay in relays {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), relay).await;
        }
        let last: Vec<String> = tail.lock().expect("tail").iter().cloned().collect();
        let how = if last.is_empty() {
            how
        } else {
            format!("{how}: {}", last.join(" / "))
        };
        let _ = exits.send(Exited {
            pid,
            how,
            misconfigured,
        });
    });
    Ok(pid)
}

/// `exit code N` or `killed by signal N`.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// Longest line of a worker's output relayed as one (a longer one comes
/// in pieces).
const MAX_LINE: usize = 64 * 1024;

/// Re-emits a worker's output lines in the supervisor's log, keeping the
/// level the worker logged them at.
async fn relay(output: impl AsyncRead + Unpin, stage: String, worker: u32, tail: Tail) {
    lines::relay(output, MAX_LINE, |line| {
        {
            let mut tail = tail.lock().expect("tail");
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(warren::message::one_line(line, 300));
        }
        let trimmed = line.trim_start();
        let (level, text) = match trimmed.split_once(' ') {
            Some(("ERROR", rest)) => (Level::ERROR, rest),
            Some(("WARN", rest)) => (Level::WARN, rest),
            Some(("INFO", rest)) => (Level::INFO, rest),
            Some(("DEBUG", rest)) => (Level::DEBUG, rest),
            Some(("TRACE", rest)) => (Level::TRACE, rest),
            _ => (Level::INFO, trimmed),
        };
        let text = text.trim_start();
        match level {
            Level::ERROR => error!(%stage, worker, "{text}"),
            Level::WARN => warn!(%stage, worker, "{text}"),
            Level::INFO => info!(%stage, worker, "{text}"),
            Level::DEBUG => debug!(%stage, worker, "{text}"),
            _ => trace!(%stage, worker, "{text}"),
        }
    })
    .await;
}
