//! The supervisor's local socket: workers send their reports on it, and
//! `warren status` asks it for the supervisor's state (one line `status`,
//! one JSON line back). It is a unix socket, so only this box can reach it,
//! in a directory only this user can open: `$XDG_RUNTIME_DIR/warren`, else
//! `/tmp/warren-$USER`, named `{pipeline}.{pid}.sock`.

use std::{
    collections::BTreeMap,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};
use warren::{
    report::{Reply, StageCounts, WorkerReport},
    running::Running,
};

/// A supervisor's state, as `warren status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    /// The supervisor's process id.
    pub pid: u32,
    /// The pipeline it supervises.
    pub pipeline: String,
    /// Its stages.
    pub stages: Vec<StageStatus>,
    /// The job keeper, while this supervisor is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<KeeperStatus>,
}

/// What `warren status` shows of the keeper.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// This supervisor holds the token.
    pub leader: bool,
    /// Callbacks answered with a 2xx since it took over.
    pub callbacks_delivered: u64,
    /// Callback attempts that failed since it took over (each attempt
    /// counts).
    #[serde(default)]
    pub callbacks_failed: u64,
    /// Jobs whose callback failed and waits for another attempt.
    pub callbacks_failing: u64,
    /// The last callback failure: the job and why.
    pub last_failure: Option<String>,
    /// Gather stages released since it took over.
    pub gathers_released: u64,
    /// Schedule ticks fired since it took over, by schedule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ticks_fired: BTreeMap<String, u64>,
}

/// One stage of a supervisor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// What its workers are doing.
    pub state: StageState,
    /// Worker processes running (draining ones excluded).
    pub workers: u32,
    /// Workers the scaling policy wants on this box.
    pub target: u32,
    /// Unexpected exits since the supervisor started.
    pub restarts: u32,
    /// How the last unexpected exit ended, with the worker's last lines.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// A roll of its workers under way or stopped (a deploy, `warren
    /// restart`), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    /// Messages in flight now, and done, retried and dead-lettered since
    /// the supervisor started (by its workers).
    pub counts: StageCounts,
    /// Each worker process.
    pub processes: Vec<ProcessStatus>,
}

/// What a stage's workers on this box are doing, worst first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StageState {
    /// Consuming and handling.
    #[default]
    #[serde(rename = "running")]
    Running,
    /// An operator paused the stage (`warren pause`): its workers take no
    /// message and keep their connections.
    #[serde(rename = "paused")]
    Paused,
    /// A worker's circuit breaker is open: it pauses and probes.
    #[serde(rename = "calls failing")]
    CallsFailing,
    /// The broker blocks publishing (a memory or disk alarm).
    #[serde(rename = "blocked")]
    Blocked,
    /// Its workers are being drained (the supervisor stops or scales down).
    #[serde(rename = "stopping")]
    Stopping,
    /// Its workers crash in a loop.
    #[serde(rename = "failing")]
    Failing,
}

impl StageState {
    /// The word shown for it.
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Running => "running",
            StageState::Paused => "paused",
            StageState::CallsFailing => "calls failing",
            StageState::Blocked => "blocked",
            StageState::Stopping => "stopping",
            StageState::Failing => "failing",
        }
    }
}

/// One worker process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Its index within the stage (`WARREN_WORKER`).
    pub index: u32,
    /// Process id (0 while waiting to restart).
    pub pid: u32,
    /// `running`, `draining` or `restarting`.
    pub state: String,
    /// When it started (milliseconds since the epoch; 0 while waiting to
    /// restart, or draining).
    #[serde(default)]
    pub started_ms: u64,
    /// Its last report.
    pub counts: StageCounts,
    /// The handlings running in it, as of its last report (the longest
    /// running, `warren::running::REPORTED` at most).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<Running>,
}

/// The directory of supervisor sockets.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("warren"),
        _ => {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            std::env::temp_dir().join(format!("warren-{user}"))
        }
    }
}

/// The socket directory, created if missing, after checking that it is
/// this user's and nobody else's: another local user who created it first
/// could otherwise read the status or impersonate a supervisor.
pub fn checked_socket_dir() -> std::io::Result<PathBuf> {
    let dir = socket_dir();
    own_private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (mode 0700) if missing, and checks that it is a directory
/// owned by this user, setting its mode back to 0700 if it was wider.
fn own_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by this user (uid {me}); remove it or set XDG_RUNTIME_DIR",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens this supervisor's socket.
pub fn listen(pipeline: &str) -> std::io::Result<(UnixListener, PathBuf)> {
    let dir = checked_socket_dir()?;
    let path = dir.join(format!("{pipeline}.{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    Ok((UnixListener::bind(&path)?, path))
}

/// Each rate-limited stage's share per worker: the limit divided among the
/// stage's consumers on every box.
pub type Shares = Arc<Mutex<BTreeMap<String, f64>>>;

/// Answers status requests, forwards worker reports and answers each with
/// the worker's rate shares, forever.
pub async fn serve(
    listener: UnixListener,
    status: Arc<Mutex<SupervisorStatus>>,
    reports: mpsc::UnboundedSender<WorkerReport>,
    shares: Shares,
) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(
            stream,
            status.clone(),
            reports.clone(),
            shares.clone(),
        ));
    }
}

async fn connection(
    stream: UnixStream,
    status: Arc<Mutex<SupervisorStatus>>,
    reports: mpsc::UnboundedSender<WorkerReport>,
    shares: Shares,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "status" {
            let snapshot = status.lock().expect("status").clone();
            let mut answer = serde_json::to_vec(&snapshot).expect("status encodes");
            answer.push(b'\n');
            let _ = write.write_all(&answer).await;
            return;
        }
        match serde_json::from_str::<WorkerReport>(&line) {
            Ok(report) => {
                let reply = {
                    let shares = shares.lock().expect("shares");
                    Reply {
                        shares: report
                            .stages
                            .keys()
                            .filter_map(|s| Some((s.clone(), *shares.get(s)?)))
                            .collect(),
                    }
                };
                let _ = reports.send(report);
                let mut line = serde_json::to_vec(&reply).expect("a reply encodes");
                line.push(b'\n');
                if write.write_all(&line).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Asks every supervisor of `pipeline` on this box for its state. The
/// socket of a supervisor that is gone (nothing listens: the connection is
/// refused) is removed; one that is slow to answer is left alone.
pub async fn query_all(pipeline: &str) -> Vec<SupervisorStatus> {
    let dir = match checked_socket_dir() {
        Ok(dir) => dir,
        Err(error) => {
            tracing::warn!("not asking this box's supervisors: {error}");
            return Vec::new();
        }
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{pipeline}.");
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".sock"))
        else {
            continue;
        };
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        match query(&entry.path()).await {
            Asked::Answered(status) => found.push(status),
            Asked::Gone => {
                let _ = std::fs::remove_file(entry.path());
            }
            Asked::Silent => {
                tracing::warn!(
                    "the supervisor with pid {pid} did not answer within 2 s; its workers are not counted"
                );
            }
        }
    }
    found.sort_by_key(|s| s.pid);
    found
}

/// What asking one supervisor gave.
enum Asked {
    Answered(SupervisorStatus),
    /// Nothing listens on the socket.
    Gone,
    /// It did not answer in time, or answered nonsense.
    Silent,
}

async fn query(path: &Path) -> Asked {
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Asked::Gone;
        }
        Err(_) => return Asked::Silent,
    };
    let ask = async {
        stream.write_all(b"status\n").await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        serde_json::from_str(&line).ok()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), ask).await {
        Ok(Some(status)) => Asked::Answered(status),
        _ => Asked::Silent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_directory_must_be_this_user_s_and_private() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("warren");
        own_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Opened up by someone: closed again.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        own_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // A file where the directory should be is refused.
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(own_private_dir(&file).is_err());
        // Created by another user first: refused (only root can make that
        // here, by handing it over).
        if rustix::process::geteuid().is_root() {
            let theirs = root.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let refused = own_private_dir(&theirs).unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("not a directory owned by this user"),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn only_a_socket_nobody_listens_on_counts_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.1.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Listening but never answering: slow, not gone.
        assert!(matches!(query(&path).await, Asked::Silent));
        drop(listener);
        assert!(matches!(query(&path).await, Asked::Gone));
    }
}
