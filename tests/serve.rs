//! `warren serve` (DESIGN.md, *HTTP*) as a real process over TCP against the
//! real broker: every status code of ingest, a batch with bad lines, the
//! same `Idempotency-Key` twice making one job, tickets, `/metrics` parsed
//! by a Prometheus text parser, the token, the broker's connection closed
//! under load (503 saying what was confirmed), and SIGTERM with requests in
//! flight.

mod common;

use std::{collections::HashSet, process::Stdio, time::Duration};

use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "0123456789abcdef0123";

/// A tracked pipeline with a token, a small backlog limit, and no workers
/// (so messages stay in the queue where the test can count them).
fn pipeline(prefix: &str, max_backlog: u64) -> PipelineFile {
    PipelineFile::new(
        prefix,
        &format!(
            "
pipeline: {{name}}
jobs: {{ track: true }}
serve: {{ token: \"{TOKEN}\", max_backlog: {max_backlog} }}
stages:
  a:
    command: [unused]
    outputs: [b]
  b:
    command: [unused]
"
        ),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs `body` to stage `stage` with the token: (status, JSON answer).
async fn post(
    base: &str,
    stage: &str,
    query: &str,
    body: Vec<u8>,
    ndjson: bool,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client()
        .post(format!("{base}/v1/stages/{stage}/messages{query}"))
        .bearer_auth(TOKEN)
        .header(
            "Content-Type",
            if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        )
        .body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let answer = request.send().await.expect("an answer");
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let json =
        serde_json::from_slice(&answer.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    (status, json, headers)
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("an answer");
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Ready messages of a stage queue.
async fn ready(file: &PipelineFile, stage: &str) -> u32 {
    let conn = connect().await;
    let (messages, _) = queue_state(&conn, &format!("{}.{stage}", file.name))
        .await
        .expect("the queue");
    let _ = conn.close(200, "".into()).await;
    messages
}

#[tokio::test]
async fn ingest_answers_after_confirms_and_names_what_it_refuses() {
    let file = pipeline("serve", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (_server, base) = serve(&file).await;

    // The token: everything but /healthz needs it.
    assert_eq!(get(&base, "/healthz", None).await.0, 200);
    assert_eq!(get(&base, "/readyz", None).await.0, 401);
    assert_eq!(
        get(&base, "/metrics", Some("wrong-token-0000000")).await.0,
        401
    );
    // Ready once the ticket follower caught up with the job stream.
    let caught_up = eventually(Duration::from_secs(20), || async {
        get(&base, "/readyz", Some(TOKEN)).await.0 == 200
    })
    .await;
    assert!(caught_up, "{}", serve_log(&file));

    // One message, with an Idempotency-Key, twice: one job.
    for _ in 0..2 {
        let (status, answer, _) =
            post(&base, "a", "", br#"{"n": 1}"#.to_vec(), false, Some("k1")).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["ids"], json!(["k1"]));
        assert_eq!(answer["job"], "k1");
    }
    let (status, job) = get(&base, "/v1/jobs/k1", Some(TOKEN)).await;
    let job: Value = serde_json::from_str(&job).unwrap();
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("queued")),
        "{job}"
    );
    assert_eq!(
        job["stages"]["a"]["waiting"], 1,
        "one job, one message: {job}"
    );

    // A batch with ids from a field.
    let batch = b"{\"id\": \"b1\"}\n{\"id\": \"b2\"}\n\n{\"id\": 3}\n".to_vec();
    let (status, answer, _) = post(&base, "a", "?id_field=id", batch, true, None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["ids"], json!(["b1", "b2", "3"]));
    assert!(
        eventually(Duration::from_secs(10), || async {
            ready(&file, "a").await == 5
        })
        .await,
        "2 + 3 messages in the queue, not {}",
        ready(&file, "a").await
    );

    // Bad lines: each named, nothing sent.
    let bad = b"{\"id\": \"c1\"}\nnot json\n{\"id\": \"c3\"}\n{\"other\": 1}\n".to_vec();
    let (status, answer, _) = post(&base, "a", "?id_field=id", bad, true, None).await;
    assert_eq!(status, 400, "{answer}");
    let lines: Vec<u64> = answer["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 4], "{answer}");
    assert!(
        answer["lines"][1]["error"]
            .as_str()
            .unwrap()
            .contains("`id`")
    );
    // A key for a batch, a bad callback, an unknown stage, too much.
    let two = b"{}\n{}\n".to_vec();
    assert_eq!(post(&base, "a", "", two, true, Some("k")).await.0, 400);
    let (status, answer, _) =
        post(&base, "a", "?callback=ftp://x", b"{}".to_vec(), false, None).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer, _) = post(&base, "nosuch", "", b"{}".to_vec(), false, None).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["stages"], json!(["a", "b"]));
    let many = "{}\n".repeat(501).into_bytes();
    assert_eq!(post(&base, "a", "", many, true, None).await.0, 413);
    // Refused from its declared length: the server may answer 413 and
    // close before the client has written the body (the client then sees
    // its write fail); either way nothing of it is sent (checked below).
    let huge = format!("{{\"x\": \"{}\"}}", "y".repeat(6 * 1024 * 1024)).into_bytes();
    let answer = client()
        .post(format!("{base}/v1/stages/a/messages"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await;
    match answer {
        Ok(answer) => assert_eq!(answer.status().as_u16(), 413),
        Err(error) => assert!(error.is_request(), "{error}"),
    }
    assert_eq!(
        ready(&file, "a").await,
        5,
        "nothing of the refused requests was sent"
    );

    // Tickets: unknown is 404; failed jobs are listed (none yet).
    let (status, unknown) = get(&base, "/v1/jobs/never-sent", Some(TOKEN)).await;
    assert_eq!(status, 404, "{unknown}");
    assert!(unknown.contains("\"unknown\""), "{unknown}");
    let (status, failed) = get(&base, "/v1/jobs?state=failed", Some(TOKEN)).await;
    assert_eq!((status, failed.as_str()), (200, "{\"jobs\":[]}"));

    // Metrics: every series DESIGN.md names, parsed, each with the
    // pipeline's label; the queue's depth.
    let depth = format!(
        "warren_queue_ready{{pipeline=\"{}\",stage=\"a\"}} 5",
        file.name
    );
    let scraped = eventually(Duration::from_secs(10), || async {
        get(&base, "/metrics", Some(TOKEN)).await.1.contains(&depth)
    })
    .await;
    let (_, text) = get(&base, "/metrics", Some(TOKEN)).await;
    assert!(scraped, "{text}");
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parsed");
    let names: HashSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "warren_messages_total",
        "warren_handle_seconds",
        "warren_queue_wait_seconds",
        "warren_in_flight",
        "warren_queue_ready",
        "warren_dead_letters",
        "warren_workers",
        "warren_breaker_open",
        "warren_paused",
        "warren_broker_blocked",
        "warren_jobs",
        "warren_stage_failing",
        "warren_retrying",
        "warren_worker_restarts_total",
        "warren_callbacks_total",
        "warren_http_requests_total",
        "warren_build_info",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{text}");
    }
    for sample in &scrape.samples {
        assert_eq!(
            sample.labels.get("pipeline"),
            Some(file.name.as_str()),
            "{} has no pipeline label:\n{text}",
            sample.metric
        );
    }
    // (A route's braces are beyond prometheus-parse: read the line.)
    let posted = format!(
        "warren_http_requests_total{{pipeline=\"{}\",route=\"/v1/stages/{{stage}}/messages\",code=\"202\"}} ",
        file.name
    );
    let posted: Option<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix(posted.as_str()))
        .and_then(|n| n.parse().ok());
    assert!(
        posted.is_some_and(|n| n >= 1),
        "the accepted POSTs are counted: {text}"
    );
    let queued = scrape
        .samples
        .iter()
        .find(|s| s.metric == "warren_jobs" && s.labels.get("state") == Some("queued"))
        .expect("warren_jobs{state=queued}");
    assert!(
        matches!(queued.value, prometheus_parse::Value::Gauge(n) if n == 4.0),
        "k1, b1, b2, 3 are queued: {text}"
    );
    let log = serve_log(&file);
    assert!(!log.contains(TOKEN), "the token was logged");
    assert!(
        log.contains("route=\"/v1/stages/{stage}/messages\" status=202"),
        "{log}"
    );
}

#[tokio::test]
async fn a_stage_over_its_backlog_answers_429() {
    let file = pipeline("serve429", 3);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (_server, base) = serve(&file).await;
    let batch = "{}\n{}\n{}\n{}\n".as_bytes().to_vec();
    assert_eq!(post(&base, "a", "", batch, true, None).await.0, 202);
    // Once the refresher (every second) saw the backlog, `a` is refused.
    let refused = eventually(Duration::from_secs(20), || async {
        let (status, _, headers) = post(&base, "a", "", b"{}".to_vec(), false, None).await;
        status == 429 && headers.get("retry-after").is_some()
    })
    .await;
    assert!(refused, "{}", serve_log(&file));
    // Another stage, without a backlog, is not.
    let (status, answer, _) = post(&base, "b", "", b"{}".to_vec(), false, None).await;
    assert_eq!(status, 202, "{answer}");
}

/// The connection names the management API lists for `name`.
async fn close_connections_named(name: &str) -> usize {
    let mut closed = 0;
    for id in connections_named(name).await {
        let url = format!(
            "http://guest:guest@127.0.0.1:15672/api/connections/{}",
            percent(&id)
        );
        if client().delete(url).send().await.is_ok() {
            closed += 1;
        }
    }
    closed
}

/// The management API's names of the connections whose client name
/// contains `name`.
async fn connections_named(name: &str) -> Vec<String> {
    let management = "http://guest:guest@127.0.0.1:15672/api/connections";
    let Ok(answer) = client().get(management).send().await else {
        return Vec::new();
    };
    let connections: Value =
        serde_json::from_slice(&answer.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    connections
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            c["client_properties"]["connection_name"]
                .as_str()
                .is_some_and(|named| named.contains(name))
        })
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_lost_connection_answers_503_with_what_was_confirmed() {
    let file = pipeline("serve503", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (_server, base) = serve(&file).await;
    let producer_name = format!("warren producer {}", file.name);
    // The management API lists a connection some seconds after it opened.
    assert!(
        eventually(Duration::from_secs(30), || async {
            !connections_named(&producer_name).await.is_empty()
        })
        .await,
        "the management API never listed the producer's connection"
    );
    let mut claimed = Vec::new();
    let mut refused = 0;
    let mut closed = 0;
    for round in 0..40 {
        let batch: String = (0..200)
            .map(|i| format!("{{\"id\": \"r{round}-{i}\"}}\n"))
            .collect();
        let sending = post(&base, "a", "?id_field=id", batch.into_bytes(), true, None);
        let closing = async {
            if round % 8 == 3 {
                close_connections_named(&producer_name).await
            } else {
                0
            }
        };
        let ((status, answer, _), n) = tokio::join!(sending, closing);
        closed += n;
        match status {
            202 => claimed.extend(answer["ids"].as_array().unwrap().clone()),
            503 => {
                refused += 1;
                let confirmed = answer["confirmed"].as_array().expect("confirmed ids");
                claimed.extend(confirmed.iter().cloned());
            }
            other => panic!("status {other}: {answer}"),
        }
    }
    eprintln!("{closed} connections closed, {refused} answers 503");
    assert!(
        closed > 0,
        "the management API never listed the producer's connection"
    );
    // Every id claimed confirmed is in the queue.
    let conn = connect().await;
    let held: HashSet<String> = drain_queue(&conn, &format!("{}.a", file.name))
        .await
        .iter()
        .filter_map(|m| m.properties.message_id().as_ref().map(|id| id.to_string()))
        .collect();
    let _ = conn.close(200, "".into()).await;
    let missing: Vec<&Value> = claimed
        .iter()
        .filter(|id| !held.contains(id.as_str().unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "confirmed but not in the queue: {missing:?}"
    );
    assert!(claimed.len() >= 200, "most batches went through");
}

#[tokio::test]
async fn sigterm_answers_every_request_in_flight_then_exits_0() {
    let file = pipeline("serveterm", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (mut server, base) = serve(&file).await;
    assert_eq!(
        post(&base, "a", "", b"{}".to_vec(), false, Some("w"))
            .await
            .0,
        202
    );
    // The job's record is folded (the follower may lag on a loaded box).
    let known = eventually(Duration::from_secs(20), || async {
        get(&base, "/v1/jobs/w", Some(TOKEN)).await.0 == 200
    })
    .await;
    assert!(known, "job w never became known");
    // Long polls of a job that stays queued, and batches, all in flight.
    let mut requests = Vec::new();
    for n in 0..8 {
        let base = base.clone();
        requests.push(tokio::spawn(async move {
            let (status, _) = get(&base, "/v1/jobs/w?wait=10s", Some(TOKEN)).await;
            (format!("poll {n}"), status)
        }));
    }
    for n in 0..8 {
        let base = base.clone();
        requests.push(tokio::spawn(async move {
            let batch = "{}\n".repeat(500).into_bytes();
            let (status, answer, _) = post(&base, "a", "", batch, true, None).await;
            (format!("batch {n}: {answer}"), status)
        }));
    }
    // Time for every request to reach the server, also on a loaded box (a
    // connection the server has not read a request from yet is closed by
    // the shutdown, as it should be); the polls still have 8 s to wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.signal("TERM");
    for request in requests {
        let (what, status) = request.await.expect("an answer, not a dropped connection");
        assert!(status == 200 || status == 202, "{what}: {status}");
    }
    let exit = server.wait();
    assert_eq!(exit.code(), Some(0), "{}", serve_log(&file));
}

#[tokio::test]
async fn supervise_http_shows_its_workers_figures() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py");
    let file = PipelineFile::new(
        "servesup",
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    exec: [python3, {}]
    outputs: [results]
  results:
    sink: {{ path: results.jsonl }}
",
            script.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let (_supervisor, base) = supervise_http(&file).await;
    // No token: the routes are open (loopback).
    let batch: String = (0..20)
        .map(|n| format!("{{\"n\": {n}, \"sleep_ms\": 20, \"emit\": [{{\"n\": {n}}}]}}\n"))
        .collect();
    let answer = client()
        .post(format!("{base}/v1/stages/work/messages"))
        .header("Content-Type", "application/x-ndjson")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let of = |stage: &str| format!("pipeline=\"{}\",stage=\"{stage}\"", file.name);
    let counted = eventually(Duration::from_secs(60), || async {
        let (_, text) = get(&base, "/metrics", None).await;
        text.contains(&format!(
            "warren_messages_total{{{},outcome=\"done\"}} 20",
            of("work")
        )) && text.contains(&format!("warren_handle_seconds_count{{{}}} 20", of("work")))
            && text.contains(&format!(
                "warren_queue_wait_seconds_count{{{}}} 20",
                of("work")
            ))
            && text.contains(&format!(
                "warren_messages_total{{{},outcome=\"done\"}} 20",
                of("results")
            ))
    })
    .await;
    let (_, text) = get(&base, "/metrics", None).await;
    assert!(counted, "{text}");
    // The handlings slept 20 ms: none in the 5 ms bucket (how long they
    // took beyond that depends on the machine's load), all in +Inf; their
    // waits in the queue in the buckets of hours.
    assert!(
        text.contains(&format!(
            "warren_handle_seconds_bucket{{{},le=\"0.005\"}} 0",
            of("work")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "warren_handle_seconds_bucket{{{},le=\"+Inf\"}} 20",
            of("work")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "warren_queue_wait_seconds_bucket{{{},le=\"43200\"}} 20",
            of("work")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn the_php_snippet_enqueues_through_the_front_door_and_polls_its_ticket() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/support/exec_stage.py");
    let file = PipelineFile::new(
        "servephp",
        &format!(
            "
pipeline: {{name}}
jobs: {{ track: true }}
serve: {{ token: \"{TOKEN}\" }}
stages:
  lookup:
    exec: [python3, {}]
",
            script.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let (_supervisor, base) = supervise_http(&file).await;
    let mut php = tokio::process::Command::new("php")
        .arg(root.join("examples/grading/enqueue.php"))
        .args([&base, TOKEN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("php (Debian: php-cli php-curl; .ci/test installs them)");
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = php.stdin.take().unwrap();
    stdin
        .write_all(b"{\"id\": 1, \"company\": \"A\", \"sleep_ms\": 200}\n{\"id\": 2, \"company\": \"B\"}\n")
        .await
        .unwrap();
    drop(stdin);
    let out = php.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "accepted 2 companies\njob 1: done\n", "{stderr}");
}

#[tokio::test]
async fn slow_or_huge_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let file = pipeline("serveslow", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (_server, base) = serve(&file).await;
    let address = base.trim_start_matches("http://").to_string();
    // Headers trickled and never finished: the server closes the connection
    // (after its 10 s allowance; the limit here only keeps a failing test
    // from hanging).
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut buffer)).await;
    assert!(
        closed.is_ok(),
        "a connection that never finished its headers stayed open"
    );
    // 100 KB of headers: 431, not a buffer that grows.
    let mut huge = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(100 * 1024)
    );
    let _ = huge.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), huge.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The server still answers others.
    assert_eq!(get(&base, "/healthz", None).await.0, 200);
}

/// Tickets survive the broker: the follower's connection closed, then its
/// job stream deleted (while gone, `/readyz` says 503) and declared again;
/// every time, jobs accepted afterwards are answered.
#[tokio::test]
async fn tickets_follow_the_job_stream_through_a_lost_connection_and_a_new_stream() {
    let file = pipeline("servefollow", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    let (_server, base) = serve(&file).await;
    let accepted = |key: &'static str| {
        let base = base.clone();
        async move {
            let (status, answer, _) = post(&base, "a", "", b"{}".to_vec(), false, Some(key)).await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    let known = |key: &'static str| {
        let base = base.clone();
        async move { get(&base, &format!("/v1/jobs/{key}"), Some(TOKEN)).await.0 == 200 }
    };
    accepted("k1").await;
    assert!(
        eventually(Duration::from_secs(20), || known("k1")).await,
        "{}",
        serve_log(&file)
    );
    assert_eq!(get(&base, "/readyz", Some(TOKEN)).await.0, 200);

    // The follower's connection is closed by the broker.
    let follower = format!("warren job tracker {}", file.name);
    let closed = eventually(Duration::from_secs(10), || async {
        close_connections_named(&follower).await > 0
    })
    .await;
    assert!(closed, "no connection named {follower}");
    accepted("k2").await;
    assert!(
        eventually(Duration::from_secs(30), || known("k2")).await,
        "k2 never answered: {}",
        serve_log(&file)
    );

    // The job stream goes: not ready while the follower cannot follow.
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(
            warren::names::job_stream(&pipeline.name).as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    let behind = eventually(Duration::from_secs(20), || async {
        get(&base, "/readyz", Some(TOKEN)).await.0 == 503
    })
    .await;
    assert!(behind, "/readyz never said 503: {}", serve_log(&file));
    // Declared again: followed again from the new stream's start.
    declare(&pipeline).await;
    let _ = conn.close(200, "".into()).await;
    let ready = eventually(Duration::from_secs(30), || async {
        get(&base, "/readyz", Some(TOKEN)).await.0 == 200
    })
    .await;
    assert!(ready, "/readyz stayed 503: {}", serve_log(&file));
    accepted("k3").await;
    assert!(
        eventually(Duration::from_secs(30), || known("k3")).await,
        "k3 never answered: {}",
        serve_log(&file)
    );
    assert!(known("k1").await, "what was known stays known");
}

/// One request written by hand (any `Host`), answered on a fresh
/// connection: (status, body).
async fn raw_request(base: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Messages in a queue.
async fn held(queue: &str) -> u32 {
    let conn = connect().await;
    let (messages, _) = queue_state(&conn, queue).await.expect("the queue");
    let _ = conn.close(200, "".into()).await;
    messages
}

/// The default setup (loopback, no token) with `serve.allow_actions`: a
/// page of another site, or a name that rebinds to 127.0.0.1, can neither
/// purge dead letters nor ingest; the dashboard's own requests still can.
#[tokio::test]
async fn cross_site_and_rebound_requests_are_refused_and_change_nothing() {
    let file = PipelineFile::new(
        "servecsrf",
        "
pipeline: {name}
serve: { allow_actions: true }
stages:
  work:
    command: [unused]
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (_server, base) = serve(&file).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let dead_queue = format!("{}.work.dead", file.name);
    let queue = format!("{}.work", file.name);
    let conn = connect().await;
    for id in ["d1", "d2"] {
        publish_raw(&conn, "", &dead_queue, b"{\"n\": 1}", Some(id)).await;
    }
    let _ = conn.close(200, "".into()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let purge = [("action", "purge"), ("scope", "all"), ("confirmed", "yes")];
    let dead_route = format!("{base}/stages/work/dead");
    let ingest = format!("{base}/v1/stages/work/messages");

    // A form another site's page posts: its Origin, or (an old browser) none.
    let status = |r: reqwest::Response| r.status().as_u16();
    let cross = client
        .post(&dead_route)
        .header("Origin", "http://evil.example")
        .form(&purge);
    assert_eq!(cross.send().await.map(status).unwrap(), 403);
    let no_origin = client.post(&dead_route).form(&purge);
    assert_eq!(no_origin.send().await.map(status).unwrap(), 403);
    let fetched = client
        .post(&dead_route)
        .header("Sec-Fetch-Site", "cross-site")
        .form(&purge);
    assert_eq!(fetched.send().await.map(status).unwrap(), 403);
    assert_eq!(held(&dead_queue).await, 2, "nothing was purged");

    // Ingest takes JSON only: `text/plain` is what a form or a no-cors
    // fetch of another site can send.
    let plain = client
        .post(&ingest)
        .header("Origin", "http://evil.example")
        .header("Content-Type", "text/plain")
        .body("{\"n\": 1}");
    let refused = plain.send().await.map(status).unwrap();
    assert!(matches!(refused, 403 | 415), "{refused}");
    let plain = client
        .post(&ingest)
        .header("Content-Type", "text/plain")
        .body("{\"n\": 1}");
    let untyped = client.post(&ingest).body("{\"n\": 1}");
    let form = client.post(&ingest).form(&[("n", "1")]);
    let with_token = |r: reqwest::RequestBuilder| r.bearer_auth("no token is set");
    for request in [plain, untyped, form] {
        let refused = request
            .try_clone()
            .unwrap()
            .send()
            .await
            .map(status)
            .unwrap();
        assert!(matches!(refused, 403 | 415), "{refused}");
        // Not a browser's (it has a bearer token): JSON only all the same.
        let refused = with_token(request).send().await.map(status).unwrap();
        assert_eq!(refused, 415);
    }

    // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
    let (code, body) = raw_request(
        &base,
        &format!("GET / HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("serve.hosts"), "{body}");
    let (code, body) = raw_request(
        &base,
        &format!(
            "POST /v1/stages/work/messages HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{{\"n\":1}}"
        ),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(held(&queue).await, 0, "nothing was ingested");

    // The dashboard's own requests and API clients still work.
    let (code, body) = raw_request(
        &base,
        &format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let json = client
        .post(&ingest)
        .header("Content-Type", "application/json; charset=utf-8")
        .body("{\"n\": 1}");
    assert_eq!(json.send().await.map(status).unwrap(), 202);
    assert!(
        eventually(Duration::from_secs(10), || async {
            held(&queue).await == 1
        })
        .await
    );
    let own = client
        .post(&dead_route)
        .header("Origin", &base)
        .header("Sec-Fetch-Site", "same-origin")
        .form(&purge);
    assert_eq!(own.send().await.map(status).unwrap(), 303);
    let purged = eventually(Duration::from_secs(10), || async {
        held(&dead_queue).await == 0
    });
    assert!(purged.await, "the dashboard's own purge");
}

/// Request bodies held at once are bounded: past the budget a request is
/// answered 503 (with Retry-After) before its body is read, small requests
/// still go through, and the budget comes back when the requests holding
/// it end.
#[tokio::test]
async fn request_bodies_held_at_once_are_bounded() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let file = pipeline("servebudget", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (_server, base) = serve(&file).await;
    let address = base.trim_start_matches("http://").to_string();
    // Twenty requests of 5 MiB (the most one may be) whose bodies are slow
    // to come: together 100 MiB.
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /v1/stages/a/messages HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            5 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answers = answers.clone();
        held.push(tokio::spawn(async move {
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            let _ = answers.send(String::from_utf8_lossy(&answer).into_owned());
            // The connection stays open until the test ends or aborts it.
            std::future::pending::<()>().await;
        }));
    }
    let first = tokio::time::timeout(Duration::from_secs(60), answered.recv())
        .await
        .ok()
        .flatten();
    let first = first.expect("no request was refused: every body would be held");
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    assert!(
        first.to_ascii_lowercase().contains("retry-after"),
        "{first}"
    );
    assert!(first.contains("try again"), "{first}");
    // A small request still fits.
    let (status, answer, _) = post(&base, "a", "", b"{\"small\": 1}".to_vec(), false, None).await;
    assert_eq!(status, 202, "{answer}");
    // The requests holding the budget end: a large one goes through again.
    for request in &held {
        request.abort();
    }
    let large = format!("{{\"x\": \"{}\"}}", "y".repeat(4 * 1024 * 1024)).into_bytes();
    let through = eventually(Duration::from_secs(30), || async {
        post(&base, "a", "", large.clone(), false, None).await.0 == 202
    })
    .await;
    assert!(through, "the budget never came back\n{}", serve_log(&file));
}

/// A TCP proxy to the broker that a test can cut (every connection closed,
/// new ones closed at once) and restore.
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let (accepting, linked) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let target = target.clone();
                linked.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut broker) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                }));
            }
        });
        Proxy { port, open, links }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// When the broker is unreachable, a 503 names the ids the server made up
/// for the messages, so that sending them again with those ids makes the
/// same messages, not new ones.
#[tokio::test]
async fn a_503_names_the_ids_it_made_up_and_sending_them_again_makes_no_new_messages() {
    let file = pipeline("serveids", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let mut broker = url::Url::parse(&amqp_url()).unwrap();
    let target = format!(
        "{}:{}",
        broker.host_str().unwrap(),
        broker.port().unwrap_or(5672)
    );
    let proxy = Proxy::start(target).await;
    broker.set_port(Some(proxy.port)).unwrap();
    let port = free_port();
    let _server = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["serve", file.path.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("AMQP_URL", broker.as_str())
            .env("RUST_LOG", "info")
            .current_dir(file.dir.path())
            .stdout(Stdio::null())
            .stderr(log_file(&file.file("serve.log")))
            .spawn()
            .expect("start warren serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    assert!(up, "{}", serve_log(&file));
    let (status, answer, _) = post(&base, "a", "", b"{\"n\": 0}".to_vec(), false, None).await;
    assert_eq!(status, 202, "{answer}");
    let first_id = answer["ids"][0].as_str().unwrap().to_string();

    proxy.cut();
    // Every 503 names the ids of its messages (one, then a batch of three).
    let mut named: Vec<String> = Vec::new();
    let refused = |body: &[u8], ndjson: bool, lines: usize| {
        let base = base.clone();
        let body = body.to_vec();
        async move {
            let (status, answer, _) = post(&base, "a", "", body, ndjson, None).await;
            assert_eq!(status, 503, "{answer}");
            let ids: Vec<String> = answer["ids"]
                .as_array()
                .unwrap_or_else(|| panic!("a 503 without the ids it made up: {answer}"))
                .iter()
                .map(|id| id.as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.len(), lines, "{answer}");
            ids
        }
    };
    let one = refused(b"{\"n\": 1}", false, 1).await;
    let batch = refused(b"{\"n\": 2}\n{\"n\": 3}\n{\"n\": 4}\n", true, 3).await;
    named.extend(one.iter().cloned());
    named.extend(batch.iter().cloned());

    // Sent again with those ids once the broker is back: the same messages.
    proxy.restore();
    let again = eventually(Duration::from_secs(60), || async {
        post(&base, "a", "", b"{\"n\": 1}".to_vec(), false, Some(&one[0]))
            .await
            .0
            == 202
    })
    .await;
    assert!(again, "{}", serve_log(&file));
    let lines: String = batch
        .iter()
        .zip(2..)
        .map(|(id, n)| format!("{{\"n\": {n}, \"_id\": \"{id}\"}}\n"))
        .collect();
    let (status, answer, _) =
        post(&base, "a", "?id_field=_id", lines.into_bytes(), true, None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["ids"], json!(batch), "{answer}");
    let conn = connect().await;
    let ids: Vec<String> = drain_queue(&conn, &format!("{}.a", file.name))
        .await
        .iter()
        .filter_map(|m| m.properties.message_id().as_ref().map(|id| id.to_string()))
        .collect();
    let _ = conn.close(200, "".into()).await;
    for id in &ids {
        assert!(
            *id == first_id || named.contains(id),
            "a message under an id no answer named: {id} (named: {named:?})"
        );
    }
    for id in &named {
        assert!(ids.contains(id), "{id} never arrived: {ids:?}");
    }
}

/// A dead letter's headers on the dashboard never show a password held in a
/// URL (a producer's `x-warren-callback`, say), on its group page or on the
/// page of the message itself.
#[tokio::test]
async fn the_dead_letter_page_hides_passwords_in_header_urls() {
    use lapin::{
        BasicProperties,
        options::BasicPublishOptions,
        types::{AMQPValue, FieldTable},
    };
    let file = pipeline("servedeadpw", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "x-warren-callback".into(),
        AMQPValue::LongString("http://cbuser:hunter2secret@127.0.0.1:9/done?key=qk77".into()),
    );
    headers.insert(
        "x-warren-error".into(),
        AMQPValue::LongString("boom".into()),
    );
    headers.insert("x-warren-stage".into(), AMQPValue::LongString("a".into()));
    channel
        .basic_publish(
            "".into(),
            warren::names::dead_queue(&file.name, "a").as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default()
                .with_message_id("pw1".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = conn.close(200, "".into()).await;
    let (_server, base) = serve(&file).await;
    for page in ["/stages/a/dead?group=boom", "/stages/a/dead?id=pw1"] {
        let (status, html) = get(&base, page, Some(TOKEN)).await;
        assert_eq!(status, 200, "{page}: {html}");
        assert!(html.contains("cbuser:***@127.0.0.1"), "{page}: {html}");
        for secret in ["hunter2secret", "qk77"] {
            assert!(!html.contains(secret), "{page} shows {secret}: {html}");
        }
    }
}

/// The dashboard's overview shows a stage's isolated messages, from the
/// same view as `warren status`.
#[tokio::test]
async fn the_overview_shows_isolated_messages() {
    let file = pipeline("serveiso", 1_000_000);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    for _ in 0..2 {
        channel
            .basic_publish(
                "".into(),
                warren::names::isolation_queue(&file.name, "a")
                    .as_str()
                    .into(),
                Default::default(),
                b"{}",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    let _ = conn.close(200, "".into()).await;
    let (_server, base) = serve(&file).await;
    let shown = eventually(Duration::from_secs(20), || async {
        let (_, text) = get(&base, "/dashboard/overview.json", Some(TOKEN)).await;
        let overview: Value = serde_json::from_str(&text).unwrap_or_default();
        overview["stages"][0]["isolated"] == json!(2)
    })
    .await;
    let (_, text) = get(&base, "/dashboard/overview.json", Some(TOKEN)).await;
    assert!(shown, "{text}");
}

/// One `warren serve` of a folder holding two pipelines (`pipeline.yaml`,
/// with the token, and `second.yaml`, without a `serve:` section): each
/// under `/p/{pipeline}/` with its own pages (their links relative to that
/// base), the root listing both, one `/metrics` with both pipelines'
/// series, and the routes of `/v1/` at the root answered where they name
/// one pipeline. A third file with another token is refused at start.
#[tokio::test]
async fn one_server_serves_several_pipelines() {
    let first = pipeline("servemany", 1_000_000);
    let second = unique_name("servemany2");
    std::fs::write(
        first.file("second.yaml"),
        format!(
            "pipeline: {second}\njobs: {{ track: true }}\nstages:\n  a:\n    command: [unused]\n  c:\n    command: [unused]\n"
        ),
    )
    .unwrap();
    let _cleanup = Cleanup::pipeline(&first.path, &[]);
    let _cleanup_second = Cleanup::pipeline(&first.file("second.yaml"), &[]);
    let (_server, base) = serve_paths(&first, &[first.dir.path()]).await;
    let log = || serve_log(&first);
    let (one, two) = (first.name.as_str(), second.as_str());

    // Each pipeline's routes under its base; a stage only the second has
    // is answered at the root too; one both have is not.
    let (status, answer, _) = post(
        &format!("{base}/p/{one}"),
        "a",
        "",
        b"{\"n\":1}".to_vec(),
        false,
        None,
    )
    .await;
    assert_eq!(status, 202, "{answer} {}", log());
    let (status, answer, _) = post(&base, "c", "", b"{\"n\":2}".to_vec(), false, None).await;
    assert_eq!(status, 202, "{answer} {}", log());
    let job = answer["job"].as_str().expect("a job").to_string();
    let (status, answer, _) = post(&base, "a", "", b"{\"n\":3}".to_vec(), false, None).await;
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains(one) && error.contains(two), "{error}");
    let conn = connect().await;
    for (queue, n) in [
        (format!("{one}.a"), 1),
        (format!("{two}.c"), 1),
        (format!("{two}.a"), 0),
    ] {
        let held = queue_state(&conn, &queue).await.expect("the queue").0;
        assert_eq!(held, n, "{queue}");
    }
    let _ = conn.close(200, "".into()).await;

    // A job is found at the root in the pipeline whose store knows it.
    let known = eventually(Duration::from_secs(20), || async {
        get(&base, &format!("/v1/jobs/{job}"), Some(TOKEN)).await.0 == 200
    })
    .await;
    let (status, text) = get(&base, &format!("/v1/jobs/{job}"), Some(TOKEN)).await;
    assert!(known, "{status} {text}");
    assert_eq!(
        get(&base, "/v1/jobs/nobody-has-this", Some(TOKEN)).await.0,
        404
    );

    // The root lists both; each dashboard is its own, at its base.
    let (status, index) = get(&base, "/", Some(TOKEN)).await;
    assert_eq!(status, 200);
    for name in [one, two] {
        assert!(index.contains(&format!("href=\"/p/{name}/\"")), "{index}");
    }
    let (status, page) = get(&base, &format!("/p/{two}/"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("<base href=\"/p/{two}/\">")),
        "{page}"
    );
    assert!(
        page.contains(&format!("Pipeline {two}")) && page.contains("href=\"stages/c/dead\""),
        "{page}"
    );
    let (status, dead) = get(&base, &format!("/p/{two}/stages/c/dead"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{dead}");
    assert_eq!(
        get(&base, &format!("/p/{one}/stages/c/dead"), Some(TOKEN))
            .await
            .0,
        404
    );

    // One /metrics: every family once, with both pipelines' series.
    let (status, metrics) = get(&base, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        metrics.matches("# HELP warren_queue_ready ").count(),
        1,
        "{metrics}"
    );
    for series in [
        format!("warren_queue_ready{{pipeline=\"{one}\",stage=\"a\"}}"),
        format!("warren_queue_ready{{pipeline=\"{two}\",stage=\"c\"}}"),
    ] {
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    assert_eq!(get(&base, "/readyz", Some(TOKEN)).await.0, 200);

    // The first file's token guards every pipeline.
    assert_eq!(
        get(&base, &format!("/p/{two}/v1/jobs/{job}"), None).await.0,
        401
    );
    assert_eq!(get(&base, "/metrics", None).await.0, 401);

    // Another door in a later file is refused, naming it.
    let third = unique_name("servemany3");
    let other = first.file("other").join("third.yaml");
    std::fs::create_dir(first.file("other")).unwrap();
    std::fs::write(
        &other,
        format!("pipeline: {third}\nserve: {{ token: \"fedcba9876543210fedcba\" }}\nstages:\n  a:\n    command: [unused]\n"),
    )
    .unwrap();
    let refused = warren(&[
        "serve",
        first.path.to_str().unwrap(),
        other.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("third.yaml") && said.contains("one server has one door"),
        "{said}"
    );
}

/// The pids of the workers `/processes` shows as running, in its rows.
async fn running_pids(base: &str) -> Vec<u32> {
    let (_, page) = get(base, "/processes", None).await;
    page.split("<tr data-stage=\"work\" data-pid=\"")
        .skip(1)
        .filter(|row| row.contains("data-field=\"state\">running<"))
        .filter_map(|row| row.split('"').next()?.parse().ok())
        .collect()
}

/// `/processes` of `supervise --http`: each worker process with its pid
/// (a live `warren worker` of the stage), a worker killed shown as an
/// unexpected exit with its last lines, and the restart button (admin,
/// `allow_actions`, confirmed on a page of its own) replacing every
/// worker of the stage.
#[tokio::test]
async fn the_processes_page_shows_each_worker_and_restarts_them() {
    let file = PipelineFile::new(
        "serveprocs",
        "
pipeline: {name}
serve: { allow_actions: true }
stages:
  work:
    command: [unused]
    scale: { min: 2, max: 2 }
",
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py");
    std::fs::write(
        &file.path,
        std::fs::read_to_string(&file.path).unwrap().replace(
            "command: [unused]",
            &format!("exec: [python3, {}]", script.display()),
        ),
    )
    .unwrap();
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let (_supervisor, base) = supervise_http(&file).await;
    let two = eventually(Duration::from_secs(60), || async {
        running_pids(&base).await.len() == 2
    })
    .await;
    let (_, page) = get(&base, "/processes", None).await;
    assert!(two, "{page}");
    let first = running_pids(&base).await;
    for pid in &first {
        let command = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            command.contains("worker") && command.contains("work"),
            "{pid}: {command:?}"
        );
    }

    // A worker killed: an unexpected exit, its end shown.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status();
    let shown = eventually(Duration::from_secs(60), || async {
        let (_, page) = get(&base, "/processes", None).await;
        page.contains("<span data-field=\"restarts\">1</span>")
            && page.contains("class=\"last-exit\"")
    })
    .await;
    let (_, page) = get(&base, "/processes", None).await;
    assert!(shown, "{page}");
    assert!(
        page.contains("signal 9") || page.contains("SIGKILL"),
        "{page}"
    );

    // Restart: a confirmation page first, then every worker replaced.
    let form = |confirmed: bool| {
        let mut fields = vec![("action", "restart")];
        if confirmed {
            fields.push(("confirmed", "yes"));
        }
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{base}/stages/work/control"))
            .header("Origin", base.clone())
            .form(&fields)
    };
    let answer = form(false).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let text = answer.text().await.unwrap();
    assert!(text.contains("data-action=\"confirm-restart\""), "{text}");
    let answer = form(true).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/processes?done="), "{location}");
    let before = running_pids(&base).await;
    let replaced = eventually(Duration::from_secs(120), || async {
        let now = running_pids(&base).await;
        now.len() == 2 && now.iter().all(|pid| !before.contains(pid))
    })
    .await;
    let (_, page) = get(&base, "/processes", None).await;
    assert!(replaced, "{before:?}\n{page}");
}

/// `/busy` of `supervise --http`: the messages each worker handles right
/// now, longest first, with the worker's pid, their job and attempt; gone
/// once handled.
#[tokio::test]
async fn the_busy_page_shows_what_each_worker_handles_now() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py");
    let file = PipelineFile::new(
        "servebusy",
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    exec: [python3, {}]
    concurrency: 4
    scale: {{ min: 2, max: 2 }}
",
            script.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let (_supervisor, base) = supervise_http(&file).await;
    let two = eventually(Duration::from_secs(60), || async {
        running_pids(&base).await.len() == 2
    })
    .await;
    assert!(two, "{}", get(&base, "/processes", None).await.1);
    let pipeline = warren::config::load(&file.path).unwrap();
    let producer = warren::Producer::connect(&pipeline).await.unwrap();
    for id in ["b1", "b2", "b3"] {
        producer
            .send_with_id("work", id, &serde_json::json!({ "sleep_ms": 20_000 }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The rows of the busy table: (message id, pid).
    let rows = |page: &str| -> Vec<(String, u32)> {
        page.split("<tr data-id=\"")
            .skip(1)
            .filter_map(|row| {
                let mut fields = row.split('"');
                let id = fields.next()?.to_string();
                let pid = fields.nth(1)?.parse().ok()?;
                Some((id, pid))
            })
            .collect()
    };
    // The page that listed all three is the one checked (asking again
    // could come after the first was handled on a loaded machine).
    let listed = std::sync::Mutex::new(String::new());
    let all = eventually(Duration::from_secs(30), || async {
        let (_, page) = get(&base, "/busy", None).await;
        let three = rows(&page).len() == 3;
        *listed.lock().unwrap() = page;
        three
    })
    .await;
    let page = listed.into_inner().unwrap();
    assert!(all, "{page}");
    assert!(page.contains("3 message(s) being handled."), "{page}");
    let shown = rows(&page);
    let ids: Vec<&str> = shown.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["b1", "b2", "b3"], "longest running first");
    let pids = running_pids(&base).await;
    assert!(
        shown.iter().all(|(_, pid)| pids.contains(pid)),
        "{shown:?} {pids:?}"
    );
    let over = eventually(Duration::from_secs(60), || async {
        get(&base, "/busy", None)
            .await
            .1
            .contains("0 message(s) being handled.")
    })
    .await;
    assert!(over, "{}", get(&base, "/busy", None).await.1);
}
