//! Starting and signalling worker processes.
//!
//! A worker gets the environment of DESIGN.md (`WARREN_PIPELINE`,
//! `WARREN_STAGE`, `WARREN_WORKER`, and `AMQP_URL` where set), the socket it
//! reports to, and a log format the supervisor can re-emit. It runs in its
//! own process group (a Ctrl-C in the terminal reaches only the supervisor,
//! which drains the workers in order) and gets SIGTERM when the supervisor
//! dies, even by SIGKILL, so no worker outlives it. Its stdout and stderr
//! lines go into the supervisor's log with the stage and worker index.

use std::{
    io,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::mpsc,
};
use tracing::{Level, debug, error, info, trace, warn};
use warren::{
    logging,
    pipeline::{Stage, StageKind},
    report,
};

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
            StageKind::Http(_) | StageKind::Sink(_) => Launch {
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
    /// How it ended, in words (`exit code 1`, `killed by signal 9`).
    pub how: String,
}

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
    die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot start {}: {error}", launch.program.display()),
        )
    })?;
    let pid = child.id().unwrap_or_default();
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(relay(stderr, stage.to_string(), index));
    }
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(relay(stdout, stage.to_string(), index));
    }
    tokio::spawn(async move {
        let how = match child.wait().await {
            Ok(status) => describe(status),
            Err(error) => format!("lost track of it: {error}"),
        };
        let _ = exits.send(Exited { pid, how });
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

/// Re-emits a worker's output lines in the supervisor's log, keeping the
/// level the worker logged them at.
async fn relay(output: impl AsyncRead + Unpin, stage: String, worker: u32) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
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
    }
}

/// Asks the kernel to send SIGTERM to the child when the supervisor dies.
/// The supervisor runs on a single-threaded runtime, so the thread that
/// forks lives as long as the process (the signal follows the thread).
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one async-signal-safe system call.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` (SIGTERM, SIGKILL) to a worker. False if it is gone.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid only signals that process.
    unsafe { libc::kill(pid, signal) == 0 }
}
