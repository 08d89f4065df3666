//! What the warren benchmarks share: a pipeline declared afresh, a
//! supervisor on it, waiting for consumers, and tearing it all down.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use lapin::{
    Channel, Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable,
};

/// Removes a sink's data file and its index (`.keys`, `.log`), as a
/// fresh run needs.
pub fn remove_sink(path: &Path) {
    let _ = std::fs::remove_file(path);
    // Earlier formats' indexes too (an earlier build's run, with
    // `WARREN_BENCH_BEFORE`, leaves them, and the sink would import them).
    for index in [
        "keys",
        "log",
        "ids",
        "ids.imported",
        "index",
        "index.imported",
    ] {
        let _ = std::fs::remove_file(format!("{}.{index}", path.display()));
    }
}

/// A pipeline file declared on the broker (anything left from an earlier
/// run deleted first), with a supervisor once [`Declared::supervise`] ran.
pub struct Declared {
    pub pipeline: warren::Pipeline,
    pub conn: Connection,
    pub channel: Channel,
    file: PathBuf,
    topology: warren::Topology,
    supervisor: Option<Child>,
}

impl Declared {
    /// Loads `file` and declares its topology afresh, on `url` (one URL,
    /// or a cluster's separated by commas: then through the first node).
    pub async fn new(url: &str, file: &Path) -> Declared {
        let mut pipeline = warren::config::load(file).unwrap();
        pipeline.broker.urls = warren::BrokerUrls::parse(url).unwrap();
        let first = url.split(',').next().unwrap_or(url).trim();
        let conn = Connection::connect(first, ConnectionProperties::default())
            .await
            .unwrap();
        let topology = warren::Topology::plan(&pipeline);
        let _ = topology.delete(&conn).await;
        topology.declare(&conn).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        Declared {
            pipeline,
            conn,
            channel,
            file: file.to_path_buf(),
            topology,
            supervisor: None,
        }
    }

    /// Starts `warren supervise` on the file, with `env`; returns its pid.
    pub fn supervise(&mut self, warren: &Path, url: &str, env: &[(&str, String)]) -> u32 {
        self.supervise_under(&[], warren, url, env)
    }

    /// [`Declared::supervise`] under `wrapper` (a program and its
    /// arguments, such as valgrind; none when empty).
    pub fn supervise_under(
        &mut self,
        wrapper: &[String],
        warren: &Path,
        url: &str,
        env: &[(&str, String)],
    ) -> u32 {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(warren);
                command
            }
            None => Command::new(warren),
        };
        // In the pipeline file's folder: what the supervisor keeps under
        // `.warren/` (a tracked pipeline's job store) goes there too.
        if let Some(dir) = self.file.parent() {
            command.current_dir(dir);
        }
        let child = command
            .args(["supervise", self.file.to_str().unwrap()])
            .env("AMQP_URL", url)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start warren supervise");
        let pid = child.id();
        self.supervisor = Some(child);
        pid
    }

    /// Consumers of `{pipeline}.{stage}` now (0 if it cannot tell).
    pub async fn consumers(&self, stage: &str) -> u32 {
        let queue = format!("{}.{stage}", self.pipeline.name);
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.consumer_count())
            .unwrap_or(0)
    }

    /// Waits until `stage` has at least `wanted` consumers, looking every
    /// `poll`.
    pub async fn wait_for_consumers(&self, stage: &str, wanted: u32, poll: Duration) {
        while self.consumers(stage).await < wanted {
            tokio::time::sleep(poll).await;
        }
    }

    /// Stops the supervisor (it drains its workers), deletes what was
    /// declared and the file.
    pub async fn tear_down(mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &supervisor.id().to_string()])
                .status();
            let _ = supervisor.wait();
        }
        let _ = self.topology.delete(&self.conn).await;
        let presence = format!("{}.supervisors", self.pipeline.name);
        let _ = self
            .channel
            .queue_delete(presence.as_str().into(), Default::default())
            .await;
        let _ = self.conn.close(200, "done".into()).await;
        let _ = std::fs::remove_file(&self.file);
    }
}
