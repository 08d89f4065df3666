//! What the exec protocol costs warren per message: a stage whose child
//! (benches/exec/noop.py) answers `done` at once, M messages waiting in its
//! queue before `warren worker` starts; the worker's CPU seconds when the
//! queue is empty, divided by M. That includes consuming and acknowledging,
//! which every stage pays.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use lapin::options::QueueDeclareOptions;

use crate::rss;

/// The measured CPU per message, in microseconds.
pub async fn overhead(url: &str, dir: &Path, warren: &Path, messages: u64) -> f64 {
    let name = "bench_exec_overhead";
    let file = dir.join(format!("{name}.yaml"));
    let noop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/exec/noop.py");
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}
stages:
  noop:
    exec: [python3, {}]
    prefetch: 500
    concurrency: 500
    queue: {{ type: classic }}
",
            noop.display()
        ),
    )
    .unwrap();
    let run = crate::run::Declared::new(url, &file).await;
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    crate::send_all(
        &producer,
        "noop",
        (0..messages).map(|i| (format!("m{i}"), serde_json::json!({"n": i}))),
    )
    .await;
    producer.close().await;

    let mut worker = Command::new(warren)
        .args(["worker", file.to_str().unwrap(), "--stage", "noop"])
        .env("AMQP_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start warren worker");
    let queue = format!("{name}.noop");
    loop {
        let left = run
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(u32::MAX);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last prefetched window is answered and acknowledged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = rss::cpu_seconds(worker.id()).map_or(f64::NAN, |(cpu, _)| cpu);
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    run.tear_down().await;
    cpu * 1e6 / messages as f64
}
