//! The latency-bound crawl: inputs through two http stages that each call a
//! local server answering after 100 ms. Its limit is
//! inputs x stages x latency / total concurrency.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};

/// The fake API on a free port, answering after `latency`.
pub fn start_api(program: &Path, latency: &str) -> (Child, u16) {
    let mut child = Command::new(program)
        .args(["--port", "0", "--latency", latency])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the fake API");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the API's port");
    (child, port)
}

/// What the crawl measured.
pub struct Crawl {
    pub inputs: u64,
    pub stages: u64,
    pub latency: f64,
    pub concurrency: u64,
    pub seconds: f64,
}

impl Crawl {
    /// The limit: inputs x stages x latency / total concurrency.
    pub fn limit(&self) -> f64 {
        self.inputs as f64 * self.stages as f64 * self.latency / self.concurrency as f64
    }
}

/// Runs the crawl with `concurrency` per stage (one worker each).
pub async fn run(
    url: &str,
    dir: &Path,
    warren: &Path,
    api: &Path,
    inputs: u64,
    concurrency: u64,
) -> Crawl {
    let (mut server, port) = start_api(api, "100ms");
    let name = "bench_crawl";
    let file = dir.join(format!("{name}.yaml"));
    let sink = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&sink);
    let _ = std::fs::remove_file(sink.with_extension("jsonl.ids"));
    let http = format!("{{ url: \"http://127.0.0.1:{port}/grade\", timeout: 5s, emit: merge }}");
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}
defaults:
  prefetch: {prefetch}
  concurrency: {concurrency}
  timeout: 10s
  scale: {{ min: 1, max: 1 }}
stages:
  first: {{ http: {http}, outputs: [second] }}
  second: {{ http: {http}, outputs: [done] }}
  done: {{ sink: {{ path: {sink} }} }}
",
            prefetch = concurrency * 2,
            sink = sink.display()
        ),
    )
    .unwrap();
    let pipeline = warren::config::load(&file).unwrap();
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let topology = warren::Topology::plan(&pipeline);
    let _ = topology.delete(&conn).await;
    topology.declare(&conn).await.unwrap();
    let mut supervisor = Command::new(warren)
        .args(["supervise", file.to_str().unwrap()])
        .env("AMQP_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Workers ready on every stage before the clock starts.
    let channel = conn.create_channel().await.unwrap();
    for stage in ["first", "second", "done"] {
        let queue = format!("{name}.{stage}");
        loop {
            let q = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            if q.consumer_count() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let producer = warren::Producer::connect(&pipeline).await.unwrap();
    let started = Instant::now();
    let sends = (0..inputs).map(|i| {
        let producer = producer.clone();
        async move {
            let body = serde_json::json!({"id": i, "company": format!("c{i}"), "website": format!("https://c{i}.example")});
            producer.send_with_id("first", &format!("i{i}"), &body).await.unwrap();
        }
    });
    futures_util::future::join_all(sends).await;
    let mut lines = crate::LineCounter::new(sink.with_extension("jsonl.ids"));
    while lines.count() < inputs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close().await;
    let _ = Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status();
    let _ = supervisor.wait();
    let _ = server.kill();
    let _ = server.wait();
    let _ = topology.delete(&conn).await;
    let _ = channel
        .queue_delete(
            format!("{name}.supervisors").as_str().into(),
            Default::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
    let _ = std::fs::remove_file(&file);
    Crawl {
        inputs,
        stages: 2,
        latency: 0.1,
        concurrency: concurrency * 2,
        seconds,
    }
}
