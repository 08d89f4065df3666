//! Shared by the integration tests: unique pipelines, the `warren` binary,
//! and broker access. Every test gets its own pipeline name and deletes what
//! it declared, so tests run in parallel against one broker.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};

/// The broker the tests use: `AMQP_URL`, unless this test binary chose
/// another with [`use_broker`].
pub fn amqp_url() -> String {
    if let Some((urls, _)) = BROKER.get() {
        return urls.clone();
    }
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The management API's URLs chosen with [`use_broker`], if any.
pub fn management_url() -> Option<String> {
    BROKER.get().map(|(_, management)| management.clone())
}

static BROKER: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// How `rabbitmqctl` reaches the broker chosen with [`use_own_broker`].
static CTL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// `rabbitmqctl` for the tests' broker: the system's, or the first node of
/// the broker of this test binary's own ([`use_own_broker`]).
pub fn ctl_command() -> Command {
    match CTL.get() {
        Some(prefix) => {
            let mut command = Command::new(&prefix[0]);
            command.args(&prefix[1..]);
            command
        }
        None => Command::new("rabbitmqctl"),
    }
}

/// Makes `broker` the broker of every helper here (`rabbitmqctl` included)
/// and of the `warren` processes they start, for the rest of this test
/// binary: a test that stops, alarms or cuts its broker does it to its own,
/// and runs beside the others.
/// (Choosing again the same broker, started again in the same place, is
/// allowed.)
pub fn use_own_broker(broker: &OwnBroker) {
    let chosen = (broker.urls("127.0.0.1"), broker.management());
    let ctl = vec![
        own_broker_script().display().to_string(),
        "ctl".into(),
        broker.dir.display().to_string(),
        "1".into(),
    ];
    assert_eq!(
        BROKER.get_or_init(|| chosen.clone()),
        &chosen,
        "the broker is chosen once"
    );
    assert_eq!(
        CTL.get_or_init(|| ctl.clone()),
        &ctl,
        "the broker is chosen once"
    );
}

fn own_broker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/cluster.sh")
}

/// A RabbitMQ of a test binary's own, from the installed `rabbitmq-server`
/// (`tests/support/cluster.sh`: its own node names, ports, data, logs and
/// Erlang cookie; the broker on 5672 is never touched): `nodes` nodes,
/// node i listening on `base + i` (management on `base + 10000 + i`),
/// clustered when there are several. Stopped and removed when dropped.
pub struct OwnBroker {
    pub dir: PathBuf,
    pub base: u16,
    pub nodes: usize,
}

impl OwnBroker {
    /// Starts the nodes (named `{prefix}1@localhost`...) and joins them.
    pub fn start(prefix: &str, base: u16, nodes: usize) -> OwnBroker {
        let dir = std::env::temp_dir().join(format!("warren-{prefix}-{}", std::process::id()));
        let broker = OwnBroker { dir, base, nodes };
        let out = Command::new(own_broker_script())
            .args([
                "up",
                broker.dir.to_str().unwrap(),
                prefix,
                &base.to_string(),
            ])
            .env("N", nodes.to_string())
            .output()
            .expect("run tests/support/cluster.sh");
        assert!(
            out.status.success(),
            "the test's own broker did not come up:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        broker
    }

    /// The AMQP URLs of the nodes, on `host` (127.0.0.1, or 127.0.0.2 for
    /// a box that can be cut off), separated by commas.
    pub fn urls(&self, host: &str) -> String {
        (0..self.nodes)
            .map(|i| format!("amqp://guest:guest@{host}:{}/%2f", self.base + i as u16))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The management APIs of the nodes, separated by commas.
    pub fn management(&self) -> String {
        (0..self.nodes)
            .map(|i| format!("http://127.0.0.1:{}", self.base + 10_000 + i as u16))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `rabbitmqctl` against node `node` (0-based); its standard output.
    pub fn ctl(&self, node: usize, args: &[&str]) -> String {
        let out = Command::new(own_broker_script())
            .args(["ctl", self.dir.to_str().unwrap(), &(node + 1).to_string()])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts node `node` (0-based) again after a SIGKILL.
    pub fn start_node(&self, node: usize) {
        let status = Command::new(own_broker_script())
            .args([
                "start-node",
                self.dir.to_str().unwrap(),
                &(node + 1).to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("start a node");
        assert!(status.success(), "node {} did not start again", node + 1);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(own_broker_script())
            .args(["down", self.dir.to_str().unwrap()])
            .status();
    }
}

/// Makes `urls` (one URL, or a cluster's separated by commas) and its
/// management API (`management`, the same way) the broker of every helper
/// here and of the `warren` processes they start, for the rest of this
/// test binary.
pub fn use_broker(urls: &str, management: &str) {
    BROKER
        .set((urls.to_string(), management.to_string()))
        .expect("the broker is chosen once");
}

/// Loads a pipeline file as the `warren` processes started here would: its
/// broker the tests' broker ([`amqp_url`]).
pub fn load(path: &Path) -> warren::Pipeline {
    let mut env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k != "AMQP_URL").collect();
    env.push(("AMQP_URL".into(), amqp_url()));
    warren::config::load_with_env(path, &env).expect("a valid pipeline file")
}

/// A Cargo.toml written for users (the framework and the parser patch
/// from the project's git repository) made to build against this checkout:
/// both git dependencies become paths into it.
pub fn cargo_toml_from_checkout(text: &str) -> String {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let git = "git = \"https://github.com/warren-rs/warren\"";
    let mut replaced = 0;
    let text = text
        .lines()
        .map(|line| {
            let folder = match line.split_once(" = ") {
                Some(("warren", value)) if value.contains(git) => "framework",
                Some(("amq-protocol-types", value)) if value.contains(git) => {
                    "vendor/amq-protocol-types"
                }
                _ => return format!("{line}\n"),
            };
            replaced += 1;
            let path = format!("path = \"{}/{folder}\"", checkout.display());
            format!("{}\n", line.replace(git, &path))
        })
        .collect();
    assert_eq!(replaced, 2, "Cargo.toml's git dependencies were not found");
    text
}

/// A pipeline name no other test uses: `{prefix}_{random}`.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("t{prefix}_{}", &id[id.len() - 10..])
}

/// A pipeline file in its own temporary directory.
pub struct PipelineFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub name: String,
}

impl PipelineFile {
    /// Writes `yaml`, with `{name}` replaced by a unique pipeline name.
    pub fn new(prefix: &str, yaml: &str) -> PipelineFile {
        let name = unique_name(prefix);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, yaml.replace("{name}", &name)).expect("write pipeline");
        PipelineFile { dir, path, name }
    }

    /// A path inside the pipeline's temporary directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs the `warren` binary.
pub fn warren(args: &[&str]) -> Output {
    warren_env(args, &[])
}

/// Runs the `warren` binary with extra environment variables (an empty
/// value removes the variable).
pub fn warren_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    command.args(args).env("AMQP_URL", amqp_url());
    for (key, value) in env {
        if value.is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    command.output().expect("run warren")
}

/// Stdout and stderr of a finished command, for assertions.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Opens a plain client connection.
pub async fn connect() -> Connection {
    try_connect()
        .await
        .expect("the tests need RabbitMQ on AMQP_URL (default 127.0.0.1:5672)")
}

/// Opens a plain client connection to the first node that answers.
pub async fn try_connect() -> Option<Connection> {
    for url in amqp_url().split(',') {
        if let Ok(conn) = Connection::connect(url.trim(), ConnectionProperties::default()).await {
            return Some(conn);
        }
    }
    None
}

/// Ready messages and consumers of a queue, or `None` if it does not exist.
pub async fn queue_state(conn: &Connection, queue: &str) -> Option<(u32, u32)> {
    let channel = conn.create_channel().await.ok()?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = channel.close(200, "".into()).await;
    declared
        .ok()
        .map(|q| (q.message_count(), q.consumer_count()))
}

/// A queue's state once its consumers are gone (waiting up to 10 s: the
/// broker drops a closed connection's consumers a moment after the
/// process exits, later on a loaded machine). With no consumer, a message
/// that was delivered and not acknowledged counts as ready again, so
/// `Some((0, 0))` means everything was acknowledged.
pub async fn state_once_unconsumed(conn: &Connection, queue: &str) -> Option<(u32, u32)> {
    let start = std::time::Instant::now();
    loop {
        let state = queue_state(conn, queue).await;
        if !matches!(state, Some((_, consumers)) if consumers > 0)
            || start.elapsed() > Duration::from_secs(10)
        {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `rabbitmqctl list_queues name` filtered by prefix.
pub fn broker_queues(prefix: &str) -> Vec<String> {
    let out = ctl_command()
        .args(["list_queues", "name", "-q", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Deletes queues and the exchanges of a pipeline (its own and its delay
/// cascade's, named after `exchange`) when dropped, even when the test
/// panics.
pub struct Cleanup {
    pub exchange: String,
    pub queues: Vec<String>,
}

impl Cleanup {
    /// Cleans up everything the pipeline file declares, plus `extra` queues.
    pub fn pipeline(file: &Path, extra: &[String]) -> Cleanup {
        let pipeline = warren::config::load(file).expect("valid pipeline");
        let topology = warren::Topology::plan(&pipeline);
        let mut queues: Vec<String> = topology.queues.iter().map(|q| q.name.clone()).collect();
        // The supervisors' presence queue, durable: left behind otherwise
        // by every test that starts a supervisor.
        let presence = warren::names::presence_queue(&pipeline.name);
        if !extra.contains(&presence) {
            queues.push(presence);
        }
        queues.extend(extra.iter().cloned());
        Cleanup {
            exchange: topology.exchange,
            queues,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchange = std::mem::take(&mut self.exchange);
        // A thread of its own: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let conn = connect().await;
                let channel = conn.create_channel().await.unwrap();
                for queue in &queues {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), Default::default())
                        .await;
                }
                // The pipeline's exchange and its delay cascade's.
                let delays = (0..warren::delay::LEVELS)
                    .map(|level| warren::names::delay_level(&exchange, level))
                    .chain([warren::names::delay_due(&exchange)]);
                let mut channel = channel;
                for name in std::iter::once(exchange.clone()).chain(delays) {
                    let deleted = channel
                        .exchange_delete(name.as_str().into(), Default::default())
                        .await;
                    if deleted.is_err() {
                        channel = conn.create_channel().await.unwrap();
                    }
                }
                let _ = conn.close(200, "".into()).await;
            });
        })
        .join();
    }
}

/// Waits until `check` is true, polling; false after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A program built from the examples (or tests/support) of this workspace,
/// built now if needed: `cargo test --test X` does not rebuild examples.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let dir = warren.parent().unwrap();
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cargo.args(["build", "-q", "-p", "warren-command", "--example", name]);
        if dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo");
        assert!(status.success(), "cargo build --example {name} failed");
        built.push(name.to_string());
    }
    dir.join("examples").join(name)
}

/// A worker running inside the test process.
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), warren::Error>>,
}

/// Starts `worker` in this process; [`InProcess::stop`] drains it.
pub fn spawn_worker(worker: warren::Worker) -> InProcess {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    InProcess {
        stop: Some(stop),
        handle,
    }
}

impl InProcess {
    /// Drains the worker and returns how it ended.
    pub async fn stop(mut self) -> Result<(), warren::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("worker task")
    }
}

/// Reads (and removes) every message of a queue.
pub async fn drain_queue(conn: &Connection, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let channel = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        out.push(message);
    }
    out
}

/// Publishes a raw body like any AMQP client would (no warren headers).
pub async fn publish_raw(
    conn: &Connection,
    exchange: &str,
    key: &str,
    body: &[u8],
    id: Option<&str>,
) {
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut props = lapin::BasicProperties::default();
    if let Some(id) = id {
        props = props.with_message_id(id.into());
    }
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.is_ack() && confirm.take_message().is_none(),
        "unroutable publish to {exchange}/{key}"
    );
    let _ = channel.close(200, "".into()).await;
}

/// A text header of a message.
pub fn header(props: &lapin::BasicProperties, name: &str) -> Option<String> {
    warren::message::text_header(props, name)
}

/// Lines of a record file written by the test worker, `stage id attempt`.
pub fn records(path: &Path) -> Vec<(String, String, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Declares a pipeline's topology, as `warren declare` does.
pub async fn declare(pipeline: &warren::Pipeline) {
    let conn = connect().await;
    warren::Topology::plan(pipeline)
        .declare(&conn)
        .await
        .expect("declare");
    let _ = conn.close(200, "".into()).await;
}

/// A file to send a child process's output to (appending), for reading
/// after a failure; a pipe nobody reads would block the child.
pub fn log_file(path: &Path) -> std::process::Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
        .into()
}

/// Ready and consumer counts of every queue of the stages, and the test
/// worker's log if there is one: printed when a test fails.
pub async fn queue_report(file: &PipelineFile, stages: &[&str]) -> String {
    let conn = connect().await;
    let mut out = String::new();
    for stage in stages {
        for suffix in ["", ".retry.1s", ".retry.3s", ".dead", ".isolated"] {
            let queue = format!("{}.{stage}{suffix}", file.name);
            out.push_str(&format!(
                "{queue}: {:?}\n",
                queue_state(&conn, &queue).await
            ));
        }
    }
    let log = std::fs::read_to_string(file.file("record.log")).unwrap_or_default();
    format!("{out}worker log:\n{log}")
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves
/// no worker behind.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Sends `signal` (like `TERM` or `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args(["-s", signal, &self.0.id().to_string()])
            .status();
    }

    /// Waits for the process to end; panics (after killing it) when it
    /// still runs after five minutes, so a process that never exits fails
    /// its test by name instead of holding the run.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let limit = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = self.0.try_wait().expect("poll child") {
                return status;
            }
            if std::time::Instant::now() > limit {
                let _ = self.0.kill();
                panic!("process {} did not exit within 5 minutes", self.0.id());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.0.try_wait().expect("poll child").is_none()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes whose environment names this pipeline file (the workers).
pub fn processes_of(file: &Path) -> Vec<u32> {
    let wanted = format!(
        "WARREN_PIPELINE={}",
        std::fs::canonicalize(file).unwrap().display()
    );
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(environ) = std::fs::read(entry.path().join("environ"))
            && environ
                .split(|b| *b == 0)
                .any(|var| var == wanted.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// Runs `rabbitmqctl` with `args` against the tests' broker; panics if it
/// fails.
pub fn rabbitmqctl(args: &[&str]) {
    let status = ctl_command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

/// A pipeline of two stages for the test worker: `work` -> `last`.
pub const WORK_LAST: &str = "
pipeline: {name}
defaults:
  prefetch: 20
  concurrency: 10
  timeout: 10s
  retry: { attempts: 3, backoff: [1s] }
stages:
  work:
    command: [unused]
    outputs: [last]
  last:
    command: [unused]
";

/// Starts the test worker (`tests/support/test_worker.rs`) for `stages`
/// of `file`, recording to `record` (its log beside it, `.log`).
pub fn test_worker(file: &PipelineFile, stages: &[&str], record: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(example_bin("test-worker"))
            .args(stages)
            .env("WARREN_PIPELINE", &file.path)
            .env("WARREN_STAGE", stages.join(","))
            .env("WARREN_TEST_RECORD", record)
            .env("AMQP_URL", amqp_url())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&record.with_extension("log")))
            .spawn()
            .expect("start test-worker"),
    )
}

/// Starts `warren supervise FILE --poll 500ms EXTRA` in `dir` (where its
/// `.warren/` stores and relative sink files go), logging to `log` in the
/// pipeline file's directory.
pub fn supervise_in(file: &PipelineFile, dir: &Path, log: &str, extra: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", file.path.to_str().unwrap(), "--poll", "500ms"])
            .args(extra)
            .env("AMQP_URL", amqp_url())
            .env("WARREN_TEST_RECORD", file.file("record.txt"))
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file(log)))
            .spawn()
            .expect("start warren supervise"),
    )
}

/// `warren status FILE --json`.
pub fn status_json(file: &PipelineFile) -> serde_json::Value {
    let out = warren(&["status", file.path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out).1);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `warren serve` on a free port, ready to answer; its base URL.
pub async fn serve(file: &PipelineFile) -> (ChildGuard, String) {
    serve_paths(file, &[&file.path]).await
}

/// [`serve`] of `paths` (pipeline files or folders), logging to `file`'s
/// `serve.log`.
pub async fn serve_paths(file: &PipelineFile, paths: &[&Path]) -> (ChildGuard, String) {
    let port = free_port();
    let child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("serve")
            .args(paths)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .current_dir(file.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file("serve.log")))
            .spawn()
            .expect("start warren serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    assert!(up, "warren serve did not start: {}", serve_log(file));
    (child, base)
}

pub fn serve_log(file: &PipelineFile) -> String {
    std::fs::read_to_string(file.file("serve.log")).unwrap_or_default()
}

/// `warren job FILE ID --json MORE` run in `dir` (where its store is):
/// (exit code, the view). Awaited, so that a worker in this process goes on
/// meanwhile.
pub async fn warren_job(
    file: &PipelineFile,
    dir: &Path,
    id: &str,
    more: &[&str],
) -> (i32, serde_json::Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["job", file.path.to_str().unwrap(), id, "--json"])
        .args(more)
        .env("AMQP_URL", amqp_url())
        .current_dir(dir)
        .output()
        .await
        .expect("run warren job");
    let (stdout, stderr) = text(&out);
    let view = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not a job view ({e}): {stdout} / {stderr}"));
    (out.status.code().unwrap_or(-1), view)
}

/// `warren supervise FILE --http` on a free port, in a `box` directory of
/// its own, answering: the supervisor and the routes' base URL.
pub async fn supervise_http(file: &PipelineFile) -> (ChildGuard, String) {
    let port = free_port();
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    let supervisor = supervise_in(
        file,
        &dir,
        "supervisor.log",
        &["--http", &format!("127.0.0.1:{port}")],
    );
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    assert!(up, "no HTTP routes on the supervisor");
    (supervisor, base)
}
