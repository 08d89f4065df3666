//! The latency-bound crawl: inputs through two http stages that each call a
//! local server answering after 100 ms. Its limit: each stage needs
//! inputs / its concurrency rounds of calls, and the stages are a
//! pipeline, so the last answer can come no sooner than the rounds plus
//! one per further stage, times the latency (the second stage has nothing
//! to call during the first round, the first nothing during the last).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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
    /// Rounds of calls each stage needs.
    pub fn rounds(&self) -> u64 {
        self.inputs.div_ceil(self.concurrency / self.stages)
    }

    /// The limit: (rounds + stages - 1) x latency.
    pub fn limit(&self) -> f64 {
        (self.rounds() + self.stages - 1) as f64 * self.latency
    }

    /// The limit as first given: inputs x stages x latency / total
    /// concurrency, which leaves out filling and emptying the pipeline.
    pub fn flat_limit(&self) -> f64 {
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
    crate::run::remove_sink(&sink);
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
    let mut run = crate::run::Declared::new(url, &file).await;
    run.supervise(warren, url, &[]);
    // Workers ready on every stage before the clock starts.
    for stage in ["first", "second", "done"] {
        run.wait_for_consumers(stage, 1, Duration::from_millis(10))
            .await;
    }
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    let started = Instant::now();
    let sends = (0..inputs).map(|i| {
        let producer = producer.clone();
        async move {
            let body = serde_json::json!({"id": i, "company": format!("c{i}"), "website": format!("https://c{i}.example")});
            producer.send_with_id("first", &format!("i{i}"), &body).await.unwrap();
        }
    });
    futures_util::future::join_all(sends).await;
    let mut lines = crate::LineCounter::new(sink.clone());
    while lines.count() < inputs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close().await;
    run.tear_down().await;
    let _ = server.kill();
    let _ = server.wait();
    Crawl {
        inputs,
        stages: 2,
        latency: 0.1,
        concurrency: concurrency * 2,
        seconds,
    }
}
