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
use warren::report::{Reply, StageCounts, WorkerReport};

/// A supervisor's state, as `warren status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    /// The supervisor's process id.
    pub pid: u32,
    /// The pipeline it supervises.
    pub pipeline: String,
    /// Its stages.
    pub stages: Vec<StageStatus>,
}

/// One stage of a supervisor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// `running`, `failing` (crash loop) or `stopping`.
    pub state: String,
    /// Worker processes running (draining ones excluded).
    pub workers: u32,
    /// Workers the scaling policy wants on this box.
    pub target: u32,
    /// Unexpected exits since the supervisor started.
    pub restarts: u32,
    /// Messages in flight now, and done, retried and dead-lettered since
    /// the supervisor started (by its workers).
    pub counts: StageCounts,
    /// Each worker process.
    pub processes: Vec<ProcessStatus>,
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
    /// Its last report.
    pub counts: StageCounts,
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

/// Opens this supervisor's socket.
pub fn listen(pipeline: &str) -> std::io::Result<(UnixListener, PathBuf)> {
    let dir = socket_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
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

/// Asks every supervisor of `pipeline` on this box for its state. Sockets
/// of supervisors that are gone are removed.
pub async fn query_all(pipeline: &str) -> Vec<SupervisorStatus> {
    let Ok(entries) = std::fs::read_dir(socket_dir()) else {
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
            Some(status) => found.push(status),
            None => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    found.sort_by_key(|s| s.pid);
    found
}

async fn query(path: &Path) -> Option<SupervisorStatus> {
    let ask = async {
        let mut stream = UnixStream::connect(path).await.ok()?;
        stream.write_all(b"status\n").await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        serde_json::from_str(&line).ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), ask)
        .await
        .ok()
        .flatten()
}
