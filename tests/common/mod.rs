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

/// The broker the tests use.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
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
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("the tests need RabbitMQ on AMQP_URL (default 127.0.0.1:5672)")
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

/// `rabbitmqctl list_queues name` filtered by prefix.
pub fn broker_queues(prefix: &str) -> Vec<String> {
    let out = Command::new("rabbitmqctl")
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

/// Deletes queues and the exchange of a pipeline when dropped, even when the
/// test panics.
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
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await;
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
