//! The HTTP front door's figures (README, *HTTP*; BENCHMARKS.md):
//!
//! ```sh
//! cargo bench -p warren-command --bench serve      # --messages 200000
//! ```
//!
//! Against `warren serve` (release build) on this machine, a pipeline of
//! one quorum stage without workers, the queue purged between runs:
//!
//! 1. NDJSON batches of 500 from 16 concurrent clients: messages accepted
//!    (202, after the broker's confirms) per second;
//! 2. `warren send` of the same lines, for comparison;
//! 3. single-message POSTs from 64 concurrent keep-alive clients: latency
//!    median and p99, and requests per second;
//! 4. the bare lapin client publishing the same single messages, 64 at
//!    once, each waiting for its confirm: the broker's floor under 3;
//! 5. RabbitMQ's management API publish (`POST /api/exchanges/.../publish`)
//!    of single messages from 16 concurrent clients, for comparison.

#[path = "../args.rs"]
mod args;
use args::value;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;

/// Ready messages of `queue`, then purged.
async fn purge(url: &str, queue: &str) -> u32 {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("the broker");
    let channel = connection.create_channel().await.expect("a channel");
    let purged = channel
        .queue_purge(queue.into(), Default::default())
        .await
        .expect("purge");
    let _ = connection.close(200, "".into()).await;
    purged
}

async fn ndjson(base: &str, stage: &str, lines: &[String], clients: usize) -> f64 {
    let client = reqwest::Client::new();
    let batches: Vec<String> = lines.chunks(500).map(|c| c.concat()).collect();
    let started = Instant::now();
    let answers = futures_util::stream::iter(batches.into_iter().map(|batch| {
        let client = client.clone();
        let url = format!("{base}/v1/stages/{stage}/messages");
        async move {
            let answer = client
                .post(url)
                .header("Content-Type", "application/x-ndjson")
                .body(batch)
                .send()
                .await
                .expect("an answer");
            assert_eq!(answer.status().as_u16(), 202, "{:?}", answer.text().await);
        }
    }))
    .buffer_unordered(clients)
    .collect::<Vec<()>>()
    .await;
    drop(answers);
    lines.len() as f64 / started.elapsed().as_secs_f64()
}

async fn singles(
    base: &str,
    stage: &str,
    count: usize,
    clients: usize,
) -> (Duration, Duration, f64) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut times: Vec<Duration> = futures_util::stream::iter((0..count).map(|n| {
        let client = client.clone();
        let url = format!("{base}/v1/stages/{stage}/messages");
        async move {
            let sent = Instant::now();
            let answer = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(format!("{{\"n\": {n}}}"))
                .send()
                .await
                .expect("an answer");
            assert_eq!(answer.status().as_u16(), 202);
            sent.elapsed()
        }
    }))
    .buffer_unordered(clients)
    .collect()
    .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100], rate)
}

/// The floor under single POSTs: the bare lapin client publishing single
/// persistent messages to the same queue, `clients` at once, each waiting
/// for its own confirm (no HTTP). Latency median and p99, and messages/s.
async fn bare_singles(
    url: &str,
    queue: &str,
    count: usize,
    clients: usize,
) -> (Duration, Duration, f64) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("the broker");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let started = Instant::now();
    let mut times: Vec<Duration> = futures_util::stream::iter((0..count).map(|n| {
        let channel = channel.clone();
        async move {
            let sent = Instant::now();
            let body = format!("{{\"n\": {n}}}");
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    lapin::options::BasicPublishOptions::default(),
                    body.as_bytes(),
                    lapin::BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await
                .expect("publish")
                .await
                .expect("a confirm");
            assert!(confirm.is_ack(), "the broker refused a message");
            sent.elapsed()
        }
    }))
    .buffer_unordered(clients)
    .collect()
    .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let _ = connection.close(200, "".into()).await;
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100], rate)
}

async fn management(exchange: &str, stage: &str, count: usize, clients: usize) -> f64 {
    let client = reqwest::Client::new();
    let url = format!("http://guest:guest@127.0.0.1:15672/api/exchanges/%2f/{exchange}/publish");
    let started = Instant::now();
    futures_util::stream::iter((0..count).map(|n| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let body = serde_json::json!({
                "properties": {"delivery_mode": 2, "content_type": "application/json"},
                "routing_key": stage,
                "payload": format!("{{\"n\": {n}}}"),
                "payload_encoding": "string",
            });
            let answer = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("an answer");
            assert!(answer.status().is_success(), "{:?}", answer.text().await);
        }
    }))
    .buffer_unordered(clients)
    .collect::<Vec<()>>()
    .await;
    count as f64 / started.elapsed().as_secs_f64()
}

/// Publishes `count` messages straight to `queue`, confirmed: message n
/// with id `{prefix}{n}`, the header `x-warren-error: reason(n)` if given.
async fn fill(
    url: &str,
    queue: &str,
    count: usize,
    prefix: &str,
    reason: Option<&dyn Fn(usize) -> String>,
) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("the broker");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let mut confirms = Vec::new();
    for n in 0..count {
        let mut headers = lapin::types::FieldTable::default();
        if let Some(reason) = reason {
            headers.insert(
                "x-warren-error".into(),
                lapin::types::AMQPValue::LongString(reason(n).into()),
            );
        }
        let props = lapin::BasicProperties::default()
            .with_message_id(format!("{prefix}{n}").into())
            .with_headers(headers)
            .with_delivery_mode(2);
        let body = format!("{{\"company\": {n}}}");
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    Default::default(),
                    body.as_bytes(),
                    props,
                )
                .await
                .expect("publish"),
        );
    }
    for confirm in confirms {
        confirm.await.expect("confirmed");
    }
    let _ = connection.close(200, "".into()).await;
}

/// Asks for `page` three times (`between` apart), checks each answer holds
/// `expected`, and prints the times after `what`.
async fn time_page(page: &str, expected: &str, between: Duration, what: &str) {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(between).await;
        let asked = Instant::now();
        let answer = client.get(page).send().await.expect("an answer");
        assert!(answer.status().is_success(), "{page}: {}", answer.status());
        let html = answer.text().await.expect("a page");
        assert!(html.contains(expected), "{page} says {expected:?}");
        times.push(asked.elapsed());
    }
    println!(
        "dashboard, {what}: page in {} ms",
        times
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" / ")
    );
}

/// The dashboard's pages over 10,000 messages: a dead-letter group of
/// 10,000, a dead-letter page of 10,000 causes, and a peek at a queue of
/// 10,000 waiting messages.
async fn dashboard_pages(url: &str, base: &str, name: &str) {
    let dead = format!("{name}.ingest.dead");
    let one_cause = |n: usize| format!("HTTP 404 for /company/{n}");
    fill(url, &dead, 10_000, "d", Some(&one_cause)).await;
    time_page(
        &format!("{base}/stages/ingest/dead?group=HTTP%20%23%20for%20%2Fcompany%2F%23"),
        "10000 messages",
        Duration::ZERO,
        "a dead-letter group of 10,000 messages",
    )
    .await;
    purge(url, &dead).await;
    // Words without hex digits, so that no two causes mask alike.
    let word = |mut n: usize| {
        let mut word = String::new();
        loop {
            word.push((b'g' + (n % 20) as u8) as char);
            n /= 20;
            if n == 0 {
                return word;
            }
        }
    };
    let own_cause = |n: usize| format!("refused by the {} service", word(n));
    fill(url, &dead, 10_000, "c", Some(&own_cause)).await;
    time_page(
        &format!("{base}/stages/ingest/dead"),
        ", 10000 causes.",
        Duration::ZERO,
        "dead letters of 10,000 causes",
    )
    .await;
    purge(url, &dead).await;
    let queue = format!("{name}.ingest");
    fill(url, &queue, 10_000, "w", None).await;
    // Each peek gives back what it held a second later.
    time_page(
        &format!("{base}/stages/ingest/waiting"),
        "messages were ready; the first 50",
        warren::waiting::GIVE_BACK + Duration::from_millis(500),
        "a peek at the first 50 of 10,000 waiting messages",
    )
    .await;
    tokio::time::sleep(warren::waiting::GIVE_BACK * 2).await;
    let held = purge(url, &queue).await;
    assert_eq!(held, 10_000, "the peeks gave back what they held");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages = value(&args, "--messages", 200_000) as usize;
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let warren = env!("CARGO_BIN_EXE_warren");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let name = format!("bench_serve_{}", std::process::id());
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}\nserve: {{ max_backlog: 100000000 }}\nstages:\n  ingest:\n    command: [unused]\n"
        ),
    )
    .expect("write the pipeline");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    /// Stops the server, also when the benchmark panics.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
    let server = Server(
        Command::new(warren)
            .args([
                "serve",
                file.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("AMQP_URL", &url)
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("warren serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queue = format!("{name}.ingest");
    let lines: Arc<Vec<String>> = Arc::new(
        (0..messages)
            .map(|n| format!("{{\"n\": {n}, \"body\": \"{}\"}}\n", "x".repeat(64)))
            .collect(),
    );
    println!("{messages} messages of about 90 bytes, one quorum queue, 2 cores");

    let rate = ndjson(&base, "ingest", &lines, 16).await;
    let held = purge(&url, &queue).await;
    println!(
        "warren serve, NDJSON batches of 500, 16 clients: {rate:.0} messages/s accepted ({held} in the queue)"
    );

    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines.concat()).expect("write the input");
    let started = Instant::now();
    let status = Command::new(warren)
        .args([
            "send",
            file.to_str().unwrap(),
            "ingest",
            input.to_str().unwrap(),
        ])
        .env("AMQP_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("warren send");
    assert!(status.success());
    let send_rate = messages as f64 / started.elapsed().as_secs_f64();
    purge(&url, &queue).await;
    println!(
        "warren send of the same lines: {send_rate:.0} messages/s; serve/send = {:.2}x",
        rate / send_rate
    );

    let singles_count = (messages / 10).max(1000);
    let (p50, p99, single_rate) = singles(&base, "ingest", singles_count, 64).await;
    purge(&url, &queue).await;
    println!(
        "warren serve, single-message POSTs, 64 keep-alive clients, {singles_count} requests: p50 {:.2} ms, p99 {:.2} ms, {single_rate:.0} requests/s",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );

    let (p50, p99, bare_rate) = bare_singles(&url, &queue, singles_count, 64).await;
    purge(&url, &queue).await;
    println!(
        "bare lapin client, single persistent messages, 64 at once each awaiting its confirm (no HTTP), {singles_count} messages: p50 {:.2} ms, p99 {:.2} ms, {bare_rate:.0} messages/s",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );

    let management_count = (messages / 40).max(1000);
    let management_rate = management(&name, "ingest", management_count, 16).await;
    purge(&url, &queue).await;
    println!(
        "RabbitMQ management API publish, single messages, 16 clients, {management_count} requests: {management_rate:.0} messages/s; warren serve NDJSON = {:.1}x, single POSTs = {:.1}x",
        rate / management_rate,
        single_rate / management_rate
    );

    dashboard_pages(&url, &base, &name).await;

    drop(server);
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("the broker");
    let pipeline = warren::config::load(&file).expect("the pipeline");
    let topology = warren::Topology::plan(&pipeline);
    let _ = topology.delete(&connection).await;
    let _ = connection.close(200, "".into()).await;
}
