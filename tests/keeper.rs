//! The job keeper (DESIGN.md, *Jobs*) against the real broker, with
//! `warren supervise` processes: gather stages release each job's items
//! once (1, 100 and 10,000 of them; through a SIGKILL of the gather worker;
//! with a failed branch), and completion callbacks reach a server that
//! fails, once per job, with the job id as `Idempotency-Key`, also when the
//! keeper is SIGKILLed and another supervisor takes over.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use warren::{Context, Failure, Producer, Worker};

const GATHERING: &str = "
pipeline: {name}
jobs: { track: true, keep: 1h }
defaults:
  prefetch: 200
  concurrency: 50
  timeout: 60s
  retry: { attempts: 2, backoff: [1s] }
stages:
  split:
    command: [unused]
    outputs: [query]
  query:
    command: [unused]
    outputs: [sum]
  sum:
    gather: {}
    outputs: [results]
  results:
    sink: { path: results.jsonl }
";

/// `split` emits `{"n": i}` for i below the body's `parts`, marking those
/// in `dead` to be dead-lettered; `query` answers `{"total": n}` after
/// `sleep_ms`.
fn gathering_worker(pipeline: &warren::Pipeline) -> Worker {
    Worker::new()
        .pipeline(pipeline.clone())
        .stage("split", |body: Value, ctx: Context| async move {
            let dead = body["dead"].as_array().cloned().unwrap_or_default();
            for n in 0..body["parts"].as_u64().unwrap_or(0) {
                let part = json!({"n": n, "dead": dead.contains(&json!(n)), "sleep_ms": body["sleep_ms"], "pad_kb": body["pad_kb"]});
                ctx.emit(&part).await?;
            }
            Ok(())
        })
        .stage("query", |part: Value, ctx: Context| async move {
            if part["dead"] == json!(true) {
                return Err(Failure::dead("no such database"));
            }
            if let Some(ms) = part["sleep_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match part["pad_kb"].as_u64() {
                Some(kb) => {
                    let pad = "x".repeat(kb as usize * 1024);
                    ctx.emit(&json!({"total": part["n"], "pad": pad})).await?;
                }
                None => ctx.emit(&json!({"total": part["n"]})).await?,
            }
            Ok(())
        })
}

/// The gathered messages the sink wrote, by job.
fn gathered(results: &Path) -> HashMap<String, Vec<Value>> {
    let mut by_job: HashMap<String, Vec<Value>> = HashMap::new();
    for line in std::fs::read_to_string(results).unwrap_or_default().lines() {
        let value: Value = serde_json::from_str(line).expect("a JSON line");
        let job = value["job"].as_str().expect("a job id").to_string();
        by_job.entry(job).or_default().push(value);
    }
    by_job
}

/// The sorted totals of a gathered message.
fn totals(message: &Value) -> Vec<u64> {
    let mut totals: Vec<u64> = message["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["total"].as_u64().expect("a total"))
        .collect();
    totals.sort_unstable();
    totals
}

/// A GATHERING pipeline at work: `warren supervise` for `sum` and
/// `results` in `dir`, the in-process worker for `split` and `query`, and
/// a producer.
struct Gathering {
    file: PipelineFile,
    dir: std::path::PathBuf,
    producer: Producer,
    worker: InProcess,
    _supervisor: ChildGuard,
    _cleanup: Cleanup,
}

impl Gathering {
    async fn start(prefix: &str) -> Gathering {
        let file = PipelineFile::new(prefix, GATHERING);
        let cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
        let pipeline = warren::config::load(&file.path).unwrap();
        declare(&pipeline).await;
        let dir = file.file("box");
        std::fs::create_dir_all(&dir).unwrap();
        let supervisor = supervise_in(&file, &dir, "supervisor.log", &["--stages", "sum,results"]);
        let worker = spawn_worker(gathering_worker(&pipeline));
        let producer = Producer::connect(&pipeline).await.unwrap();
        Gathering {
            file,
            dir,
            producer,
            worker,
            _supervisor: supervisor,
            _cleanup: cleanup,
        }
    }
}

#[tokio::test]
async fn a_gather_releases_each_job_once_with_all_its_items() {
    let gathering = Gathering::start("gather").await;
    let (file, dir, producer) = (&gathering.file, &gathering.dir, &gathering.producer);
    for parts in [1u64, 100, 10_000] {
        producer
            .send_with_id("split", &format!("g{parts}"), &json!({ "parts": parts }))
            .await
            .unwrap();
    }
    let results = file.file("results.jsonl");
    let all_there = eventually(Duration::from_secs(240), || async {
        gathered(&results).len() == 3
    })
    .await;
    assert!(all_there, "gathered: {:?}", gathered(&results).keys());
    for parts in [1u64, 100, 10_000] {
        let id = format!("g{parts}");
        let (code, view) = warren_job(file, dir, &id, &["--wait", "60s"]).await;
        assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
        assert_eq!(view["stages"]["sum"]["done"], parts, "{view}");
        assert_eq!(view["stages"]["results"]["done"], 1, "{view}");
        let messages = &gathered(&results)[&id];
        assert_eq!(messages.len(), 1, "{id} written once");
        assert_eq!(totals(&messages[0]), (0..parts).collect::<Vec<_>>(), "{id}");
        assert_eq!(messages[0]["dead_letters"], json!([]));
    }
    // Nothing more comes: each job was released once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gathered(&results).values().map(Vec::len).sum::<usize>(), 3);
    let status = status_json(file);
    let keeper = status["supervisors"][0]["keeper"].clone();
    assert_eq!(keeper["leader"], true, "{status}");
    assert_eq!(keeper["gathers_released"], 3, "{status}");
    gathering.worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_gather_survives_a_killed_worker_and_a_failed_branch_still_releases() {
    let gathering = Gathering::start("gatherkill").await;
    let (file, dir, producer) = (&gathering.file, &gathering.dir, &gathering.producer);
    producer
        .send_with_id(
            "split",
            "k",
            &json!({"parts": 400, "dead": [7, 8], "sleep_ms": 1000}),
        )
        .await
        .unwrap();
    // Kill the gather worker once it holds some of the items.
    let holding = eventually(Duration::from_secs(60), || async {
        warren_job(file, dir, "k", &[]).await.1["stages"]["sum"]["held"]
            .as_u64()
            .unwrap_or(0)
            >= 50
    })
    .await;
    assert!(holding, "the gather stage never held 50 items");
    let gatherers: Vec<u32> = processes_of(&file.path)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("sum"))
        })
        .collect();
    assert!(!gatherers.is_empty(), "no gather worker found");
    for pid in &gatherers {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let (code, view) = warren_job(file, dir, "k", &["--wait", "120s"]).await;
    assert_eq!(
        (code, view["state"].as_str()),
        (1, Some("failed")),
        "{view}"
    );
    let messages = &gathered(&file.file("results.jsonl"))["k"];
    assert_eq!(messages.len(), 1, "released once");
    let expected: Vec<u64> = (0..400).filter(|n| *n != 7 && *n != 8).collect();
    assert_eq!(totals(&messages[0]), expected);
    let dead: Vec<&str> = messages[0]["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(dead, ["k.7", "k.8"], "{}", messages[0]["dead_letters"]);
    assert_eq!(messages[0]["dead_letters"][0]["stage"], "query");
    gathering.worker.stop().await.unwrap();
}

/// What a callback server saw: per path, (Idempotency-Key, body, status
/// answered).
type Seen = Arc<Mutex<HashMap<String, Vec<(String, Value, u16)>>>>;

/// A callback server on a free port: `/flaky` answers 503 twice, then 200;
/// `/down` answers 500 while `down` is set; `/slow` is seen at once (status
/// 0) and answers 200 after 3 s, or notes 499 when the client went away
/// meanwhile (the server drops the handling of a closed connection); any
/// other path 200.
async fn callback_server(down: Arc<AtomicBool>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let app = axum::Router::new().fallback({
        let seen = seen.clone();
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            answer(
                seen.clone(),
                down.clone(),
                // The request target, query included.
                uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
                headers,
                body,
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

/// One callback POST, as `callback_server` answers it.
async fn answer(
    seen: Seen,
    down: Arc<AtomicBool>,
    path: String,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = if path == "/slow" {
        let at = {
            let mut seen = seen.lock().unwrap();
            let requests = seen.entry(path.clone()).or_default();
            requests.push((key, body, 0));
            requests.len() - 1
        };
        // 499 unless the client is still there when the first POST is let
        // go (the test lets it go once it closed the keeper's connection,
        // however long that takes on a loaded machine), or after 3 s.
        let mut answered = Answered {
            seen: seen.clone(),
            path: path.clone(),
            at,
            status: 499,
        };
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(3)
            || (at == 0
                && HOLD_FIRST_SLOW.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(60))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answered.status = 200;
        200
    } else {
        let mut seen = seen.lock().unwrap();
        let earlier = seen.get(&path).map_or(0, Vec::len);
        let status = match path.as_str() {
            "/flaky" if earlier < 2 => 503,
            "/down" if down.load(Ordering::SeqCst) => 500,
            _ => 200,
        };
        seen.entry(path).or_default().push((key, body, status));
        status
    };
    axum::http::StatusCode::from_u16(status).unwrap()
}

/// While set, the first POST to `/slow` is held (60 s at most).
static HOLD_FIRST_SLOW: AtomicBool = AtomicBool::new(false);

/// Notes the status of a slow POST when its handling ends, answered or
/// dropped with its connection.
struct Answered {
    seen: Seen,
    path: String,
    at: usize,
    status: u16,
}

impl Drop for Answered {
    fn drop(&mut self) {
        if let Ok(mut seen) = self.seen.lock()
            && let Some(request) = seen.get_mut(&self.path).and_then(|r| r.get_mut(self.at))
        {
            request.2 = self.status;
        }
    }
}

/// A pipeline whose jobs end at a sink, with `callback` as `jobs.callback`.
fn calling(callback: &str) -> String {
    format!(
        "
pipeline: {{name}}
jobs: {{ track: true, keep: 1h, callback: \"{callback}\" }}
defaults:
  retry: {{ attempts: 2, backoff: [1s] }}
stages:
  split:
    command: [unused]
    outputs: [results]
  results:
    sink: {{ path: results.jsonl }}
"
    )
}

/// `split` emits its body once.
fn passing_worker(pipeline: &warren::Pipeline) -> Worker {
    Worker::new().pipeline(pipeline.clone()).stage(
        "split",
        |body: Value, ctx: Context| async move {
            ctx.emit(&body).await?;
            Ok(())
        },
    )
}

/// The requests a path got.
fn requests(seen: &Seen, path: &str) -> Vec<(String, Value, u16)> {
    seen.lock().unwrap().get(path).cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_callback_that_fails_twice_is_posted_until_answered_once() {
    let (port, seen) = callback_server(Arc::default()).await;
    let file = PipelineFile::new(
        "callback",
        &calling(&format!("http://127.0.0.1:{port}/flaky")),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    let _supervisor = supervise_in(&file, &dir, "supervisor.log", &["--stages", "results"]);
    let worker = spawn_worker(passing_worker(&pipeline));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("split", "cb", &json!({"n": 1}))
        .await
        .unwrap();
    // The producer's own URL wins over jobs.callback.
    let own = format!("http://127.0.0.1:{port}/own?token=s3cret");
    producer
        .publish_with("split", "own", br#"{"n": 2}"#, Some(&own))
        .await
        .unwrap()
        .confirmed()
        .await
        .unwrap();
    let answered = eventually(Duration::from_secs(60), || async {
        requests(&seen, "/flaky").iter().any(|r| r.2 == 200)
            && !requests(&seen, "/own?token=s3cret").is_empty()
    })
    .await;
    assert!(answered, "callbacks: {:?}", seen.lock().unwrap());
    // Nothing more comes once answered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let flaky = requests(&seen, "/flaky");
    assert_eq!(
        flaky.iter().map(|r| r.2).collect::<Vec<_>>(),
        [503, 503, 200],
        "{flaky:?}"
    );
    assert!(flaky.iter().all(|r| r.0 == "cb"), "{flaky:?}");
    assert_eq!(flaky[2].1["id"], "cb");
    assert_eq!(flaky[2].1["state"], "done");
    assert_eq!(flaky[2].1["stages"]["results"]["done"], 1);
    let own = requests(&seen, "/own?token=s3cret");
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].0, "own");

    let (code, view) = warren_job(&file, &dir, "cb", &[]).await;
    assert_eq!(code, 0, "{view}");
    let callback_done = eventually(Duration::from_secs(10), || async {
        warren_job(&file, &dir, "cb", &[]).await.1["callback"]["state"] == "delivered"
    })
    .await;
    assert!(
        callback_done,
        "{}",
        warren_job(&file, &dir, "cb", &[]).await.1
    );
    let (_, view) = warren_job(&file, &dir, "cb", &[]).await;
    assert_eq!(view["callback"]["failed_attempts"], 2, "{view}");
    let status = warren(&["status", file.path.to_str().unwrap()]);
    let (stdout, _) = text(&status);
    assert!(
        stdout.contains("callbacks delivered 2, failing 0"),
        "{stdout}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn another_supervisor_takes_over_the_callbacks_of_a_killed_keeper() {
    let down = Arc::new(AtomicBool::new(true));
    let (port, seen) = callback_server(down.clone()).await;
    let file = PipelineFile::new(
        "takeover",
        &calling(&format!("http://127.0.0.1:{port}/down")),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (box_a, box_b) = (file.file("a"), file.file("b"));
    std::fs::create_dir_all(&box_a).unwrap();
    std::fs::create_dir_all(&box_b).unwrap();
    let mut first = supervise_in(&file, &box_a, "a.log", &["--stages", "results"]);
    let mut second = supervise_in(&file, &box_b, "b.log", &["--stages", "results"]);
    let worker = spawn_worker(passing_worker(&pipeline));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("split", "x", &json!({"n": 1}))
        .await
        .unwrap();
    let failing = eventually(Duration::from_secs(60), || async {
        requests(&seen, "/down").len() >= 2
    })
    .await;
    assert!(failing, "{:?}", seen.lock().unwrap());
    // The failures show in `warren status`.
    let shown = eventually(Duration::from_secs(10), || async {
        let (stdout, _) = text(&warren(&["status", file.path.to_str().unwrap()]));
        stdout.contains("failing 1 (last failure: job x: POST http://127.0.0.1")
            && stdout.contains("/down: HTTP 500")
    })
    .await;
    assert!(
        shown,
        "{}",
        text(&warren(&["status", file.path.to_str().unwrap()])).0
    );
    let status = status_json(&file);
    let leader = status["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["keeper"]["leader"] == true)
        .unwrap_or_else(|| panic!("no keeper: {status}"))["pid"]
        .as_u64()
        .unwrap() as u32;
    let (killed, survivor, follower_box) = if first.0.id() == leader {
        (&mut first, &mut second, &box_b)
    } else {
        (&mut second, &mut first, &box_a)
    };
    // The follower keeps its keeper store folded while the other leads, so
    // that it takes over without reading the whole stream first.
    let store = follower_box
        .join(".warren")
        .join(format!("{}.keeper.redb", file.name));
    assert!(store.exists(), "the follower has no keeper store");
    killed.signal("KILL");
    killed.wait();
    down.store(false, Ordering::SeqCst);
    let answered = eventually(Duration::from_secs(60), || async {
        requests(&seen, "/down").iter().any(|r| r.2 == 200)
    })
    .await;
    assert!(answered, "{:?}", requests(&seen, "/down"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down_requests = requests(&seen, "/down");
    assert!(
        down_requests.iter().all(|r| r.0 == "x"),
        "{down_requests:?}"
    );
    assert_eq!(
        down_requests.iter().filter(|r| r.2 == 200).count(),
        1,
        "{down_requests:?}"
    );
    assert!(survivor.running());
    let status = status_json(&file);
    assert_eq!(
        status["supervisors"][0]["keeper"]["callbacks_delivered"], 1,
        "{status}"
    );
    worker.stop().await.unwrap();
}

/// A gathered message over the broker's size limit (16 MiB on RabbitMQ 4)
/// is refused before it is built: the gather's items are dead-lettered with
/// the reason (in the stage's dead-letter queue), the job fails, and the
/// keeper goes on with other jobs.
#[tokio::test]
async fn a_gather_over_the_size_limit_fails_its_job_and_the_keeper_goes_on() {
    let gathering = Gathering::start("gatherbig").await;
    let (file, dir, producer) = (&gathering.file, &gathering.dir, &gathering.producer);
    // 20 items of 1 MiB: 20 MiB gathered.
    producer
        .send_with_id("split", "big", &json!({"parts": 20, "pad_kb": 1024}))
        .await
        .unwrap();
    let (code, view) = warren_job(file, dir, "big", &["--wait", "180s"]).await;
    assert_eq!(
        (code, view["state"].as_str()),
        (1, Some("failed")),
        "{}",
        &view.to_string()[..view.to_string().len().min(2000)]
    );
    let dead = view["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 20, "{dead:?}");
    assert!(dead.iter().all(|d| d["stage"] == "sum"), "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("MiB"), "{reason}");
    // Each item is in the stage's dead-letter queue, to be listed and
    // replayed like any dead letter.
    let pipeline = warren::config::load(&file.path).unwrap();
    let letters = warren::dead_letters::list(&pipeline, "sum", 100)
        .await
        .unwrap();
    let mut ids: Vec<&str> = letters.iter().map(|l| l.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = dead.iter().map(|d| d["id"].as_str().unwrap()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == reason && l.body_len > 1024 * 1024)
    );
    // The keeper goes on: another job gathers.
    producer
        .send_with_id("split", "small", &json!({"parts": 3}))
        .await
        .unwrap();
    let results = file.file("results.jsonl");
    let gathered_small = eventually(Duration::from_secs(60), || async {
        gathered(&results).contains_key("small")
    })
    .await;
    assert!(gathered_small, "{:?}", gathered(&results).keys());
    assert_eq!(totals(&gathered(&results)["small"][0]), [0, 1, 2]);
    // What the big job's downstream got: its dead letters, no items.
    let big = &gathered(&results)["big"];
    assert_eq!(big.len(), 1);
    assert_eq!(big[0]["items"], json!([]));
    assert_eq!(big[0]["dead_letters"].as_array().unwrap().len(), 20);
    gathering.worker.stop().await.unwrap();
}

/// A keeper whose store writes take seconds (a disk under heavy I/O; here
/// every fold waits 6 s) keeps its connections: the writes run beside the
/// thread that sends the heartbeats (2 s here, so the broker closes a
/// connection silent for about 4 s), and the job gathers through them.
#[tokio::test]
async fn a_keeper_whose_store_is_slow_keeps_its_connections() {
    let file = PipelineFile::new("slowstore", GATHERING);
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    let _supervisor = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", file.path.to_str().unwrap(), "--poll", "500ms"])
            .args(["--stages", "sum,results"])
            .env("AMQP_URL", format!("{}?heartbeat=2", amqp_url()))
            .env("WARREN_TEST_STORE_PAUSE_MS", "6000")
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file("supervisor.log")))
            .spawn()
            .expect("start warren supervise"),
    );
    let keeper = format!("warren job keeper {}", file.name);
    // The management API lists a new connection a few seconds late.
    let found = eventually(Duration::from_secs(60), || async {
        !connections_named(&keeper).await.is_empty()
    })
    .await;
    assert!(found, "no connection named {keeper}");
    let first = connections_named(&keeper).await;
    let worker = spawn_worker(gathering_worker(&pipeline));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("split", "slow", &json!({"parts": 3}))
        .await
        .unwrap();
    let results = file.file("results.jsonl");
    let done = eventually(Duration::from_secs(240), || async {
        gathered(&results).contains_key("slow")
    })
    .await;
    let log = std::fs::read_to_string(file.file("supervisor.log")).unwrap_or_default();
    assert!(done, "not gathered; the supervisor said:\n{log}");
    assert_eq!(totals(&gathered(&results)["slow"][0]), [0, 1, 2]);
    // The same connection as before the job: never closed and opened again.
    assert_eq!(connections_named(&keeper).await, first, "{log}");
    worker.stop().await.unwrap();
}

/// The management API's names of the connections whose client name
/// contains `name`.
async fn connections_named(name: &str) -> Vec<String> {
    let management = "http://guest:guest@127.0.0.1:15672/api/connections";
    let Ok(answer) = reqwest::get(management).await else {
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

/// Closes the connections whose client name contains `name`; how many.
async fn close_connections_named(name: &str) -> usize {
    let mut closed = 0;
    for id in connections_named(name).await {
        let id: String = id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("http://guest:guest@127.0.0.1:15672/api/connections/{id}");
        if reqwest::Client::new().delete(url).send().await.is_ok() {
            closed += 1;
        }
    }
    closed
}

/// A keeper term that ends while a callback is in flight (its connection
/// closed by the broker, no crash) ends that POST with it: the next term
/// POSTs again, and only one POST is answered.
#[tokio::test]
async fn a_callback_in_flight_ends_with_its_keeper_term() {
    HOLD_FIRST_SLOW.store(true, Ordering::SeqCst);
    let (port, seen) = callback_server(Arc::default()).await;
    let file = PipelineFile::new("cbterm", &calling(&format!("http://127.0.0.1:{port}/slow")));
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    let _supervisor = supervise_in(&file, &dir, "supervisor.log", &["--stages", "results"]);
    let worker = spawn_worker(passing_worker(&pipeline));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("split", "s", &json!({"n": 1}))
        .await
        .unwrap();
    let posted = eventually(Duration::from_secs(60), || async {
        !requests(&seen, "/slow").is_empty()
    })
    .await;
    assert!(posted, "no callback came");
    // The management API lists a new connection a few seconds late.
    let keeper = format!("warren job keeper {}", file.name);
    let closed = eventually(Duration::from_secs(30), || async {
        close_connections_named(&keeper).await > 0
    })
    .await;
    assert!(closed, "no connection named {keeper}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    HOLD_FIRST_SLOW.store(false, Ordering::SeqCst);
    let answered = eventually(Duration::from_secs(60), || async {
        requests(&seen, "/slow").iter().any(|r| r.2 == 200)
    })
    .await;
    assert!(answered, "{:?}", requests(&seen, "/slow"));
    // Nothing more comes once answered.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let slow = requests(&seen, "/slow");
    assert_eq!(
        slow.iter().filter(|r| r.2 == 200).count(),
        1,
        "answered more than once: {slow:?}"
    );
    let delivered = eventually(Duration::from_secs(20), || async {
        warren_job(&file, &dir, "s", &[]).await.1["callback"]["state"] == "delivered"
    })
    .await;
    assert!(delivered, "{}", warren_job(&file, &dir, "s", &[]).await.1);
    worker.stop().await.unwrap();
}

/// The keeper token can vanish (RabbitMQ 4's quorum queues drop a message
/// after 20 returns): here a stray consumer held the keeper queue while the
/// supervisors started, so none put a token in. Once it goes, a supervisor
/// mints one, one keeper leads (never two at once), and the callback goes
/// out once.
#[tokio::test]
async fn a_vanished_keeper_token_is_minted_again() {
    use lapin::{options::BasicConsumeOptions, types::FieldTable};
    let (port, seen) = callback_server(Arc::default()).await;
    let file = PipelineFile::new("token", &calling(&format!("http://127.0.0.1:{port}/ok")));
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let stray = connect().await;
    let channel = stray.create_channel().await.unwrap();
    let keeper_queue = warren::names::keeper_queue(&pipeline.name);
    let _consumer = channel
        .basic_consume(
            keeper_queue.as_str().into(),
            "stray".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (box_a, box_b) = (file.file("a"), file.file("b"));
    std::fs::create_dir_all(&box_a).unwrap();
    std::fs::create_dir_all(&box_b).unwrap();
    let _a = supervise_in(&file, &box_a, "a.log", &["--stages", "results"]);
    let _b = supervise_in(&file, &box_b, "b.log", &["--stages", "results"]);
    let both = eventually(Duration::from_secs(30), || async {
        status_json(&file)["supervisors"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    })
    .await;
    assert!(both, "{}", status_json(&file));
    // Both keepers consume behind the stray consumer, which holds nothing
    // (the management API lists the waiting consumers too, a little late).
    let conn = connect().await;
    let waiting = eventually(Duration::from_secs(30), || async {
        let consumers: Value =
            match reqwest::get("http://guest:guest@127.0.0.1:15672/api/consumers").await {
                Ok(answer) => serde_json::from_slice(&answer.bytes().await.unwrap_or_default())
                    .unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
        let of_queue = consumers.as_array().map_or(0, |all| {
            all.iter()
                .filter(|c| c["queue"]["name"] == keeper_queue.as_str())
                .count()
        });
        of_queue >= 3
            && queue_state(&conn, &keeper_queue)
                .await
                .is_some_and(|(ready, _)| ready == 0)
    })
    .await;
    assert!(
        waiting,
        "{:?}\n{}",
        queue_state(&conn, &keeper_queue).await,
        std::fs::read_to_string(file.file("a.log")).unwrap_or_default()
    );
    let worker = spawn_worker(passing_worker(&pipeline));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("split", "t", &json!({"n": 1}))
        .await
        .unwrap();
    let (code, view) = warren_job(&file, &box_a, "t", &["--wait", "60s"]).await;
    assert_eq!((code, view["state"].as_str()), (0, Some("done")), "{view}");
    let _ = stray.close(200, "".into()).await;
    let most_leaders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = eventually(Duration::from_secs(240), || async {
        let status = status_json(&file);
        let leaders = status["supervisors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["keeper"]["leader"] == true)
            .count();
        most_leaders.fetch_max(leaders, Ordering::SeqCst);
        requests(&seen, "/ok").iter().any(|r| r.2 == 200)
    })
    .await;
    assert!(answered, "no keeper led again: {:?}", status_json(&file));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        requests(&seen, "/ok").len(),
        1,
        "{:?}",
        requests(&seen, "/ok")
    );
    assert!(
        most_leaders.load(Ordering::SeqCst) <= 1,
        "two keepers at once"
    );
    let status = status_json(&file);
    let leaders = status["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keeper"]["leader"] == true)
        .count();
    assert_eq!(leaders, 1, "{status}");
    worker.stop().await.unwrap();
}
