//! One-at-a-time publish latency of the framework's producer, and how fast
//! the supervisor reacts to a backlog.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// p50 and p99 of `Producer::send_with_id`, one at a time, in ms.
pub async fn publish(url: &str, dir: &Path, sends: usize) -> (f64, f64) {
    let name = "bench_publish";
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!("pipeline: {name}\nstages:\n  target: {{ command: [unused] }}\n"),
    )
    .unwrap();
    let run = crate::run::Declared::new(url, &file).await;
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    let body = serde_json::json!({"company": "Acme", "website": "https://acme.example"});
    for i in 0..200 {
        producer
            .send_with_id("target", &format!("warm{i}"), &body)
            .await
            .unwrap();
    }
    let mut times = Vec::with_capacity(sends);
    for i in 0..sends {
        let started = Instant::now();
        producer
            .send_with_id("target", &format!("m{i}"), &body)
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    producer.close().await;
    run.tear_down().await;
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

/// Seconds from a backlog appearing to `max` workers consuming, with the
/// default poll of 1 s. The stage calls the fake API, which takes 1 s per
/// answer, so the backlog lasts.
pub async fn reaction(url: &str, dir: &Path, warren: &Path, api: &Path) -> f64 {
    let (mut server, port) = crate::crawl::start_api(api, "1s");
    let name = "bench_reaction";
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}
stages:
  slow:
    http: {{ url: \"http://127.0.0.1:{port}/grade\", timeout: 5s }}
    prefetch: 1
    concurrency: 1
    scale: {{ min: 1, max: 4, backlog_per_worker: 10 }}
"
        ),
    )
    .unwrap();
    let mut run = crate::run::Declared::new(url, &file).await;
    run.supervise(warren, url, &[]);
    run.wait_for_consumers("slow", 1, Duration::from_millis(20))
        .await;
    // Let a poll or two pass with the single worker idle.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let producer = warren::Producer::connect(&run.pipeline).await.unwrap();
    let started = Instant::now();
    let body = serde_json::json!({"website": "https://acme.example"});
    for i in 0..200 {
        producer
            .send_with_id("slow", &format!("r{i}"), &body)
            .await
            .unwrap();
    }
    run.wait_for_consumers("slow", 4, Duration::from_millis(10))
        .await;
    let seconds = started.elapsed().as_secs_f64();
    producer.close().await;
    run.tear_down().await;
    let _ = server.kill();
    let _ = server.wait();
    seconds
}
