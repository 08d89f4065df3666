//! Batch crawls end to end: `warren run` on the grading example against the
//! fake API (errors, an outage, refusals, a rate limit), resuming after
//! Ctrl-C, dead-letter replay, `warren send` and `warren drain`.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// The fake grading API, on a port of its own.
struct Api {
    _child: ChildGuard,
    port: u16,
}

impl Api {
    fn start(args: &[&str]) -> Api {
        // Build the worker first: the API's clock (an outage window) starts
        // with it, and a build can take a while.
        example_bin("grading-worker");
        let mut child = Command::new(example_bin("fake-grading-api"))
            .args(["--port", "0"])
            .args(args)
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
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Api {
            _child: ChildGuard(child),
            port,
        }
    }

    /// `(requests, most requests in one second)`.
    fn stats(&self) -> (u64, u64) {
        let stats = self.all_stats();
        (
            stats["requests"].as_u64().unwrap(),
            stats["max_per_second"].as_u64().unwrap(),
        )
    }

    /// Everything `/stats` says (`graded`: gradings made once per key).
    fn all_stats(&self) -> Value {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{}/stats", self.port)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }
}

/// The grading pipeline against `port`, writing results in the test's
/// directory.
fn grading(prefix: &str, port: u16, grade_settings: &str) -> PipelineFile {
    let file = PipelineFile::new(prefix, "");
    write_grading(&file, port, grade_settings);
    file
}

fn write_grading(file: &PipelineFile, port: u16, grade_settings: &str) {
    let yaml = format!(
        "
pipeline: {name}
defaults:
  prefetch: 20
  concurrency: 10
  timeout: 10s
  retry: {{ attempts: 6, backoff: [1s, 5s, 15s, 30s] }}
  scale: {{ min: 1, max: 1 }}
stages:
  lookup:
    command: [{worker}]
    outputs: [grade]
  grade:
    http: {{ method: POST, url: \"http://127.0.0.1:{port}/grade\", timeout: 5s, emit: merge }}
    outputs: [results]
{grade_settings}
  results:
    sink: {{ path: {results} }}
",
        name = file.name,
        worker = example_bin("grading-worker").display(),
        results = file.file("out/grades.jsonl").display(),
    );
    std::fs::write(&file.path, yaml).unwrap();
}

/// The first `n` companies of the example's input, in the test directory.
fn companies(file: &PipelineFile, n: usize, poison: &[usize]) -> PathBuf {
    let all = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grading/companies.jsonl"),
    )
    .unwrap();
    let lines: Vec<String> = all
        .lines()
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            if poison.contains(&(i + 1)) {
                let mut v: Value = serde_json::from_str(line).unwrap();
                v["company"] = Value::String(format!("Poison {}", v["company"].as_str().unwrap()));
                v.to_string()
            } else {
                line.to_string()
            }
        })
        .collect();
    let path = file.file("companies.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `warren run` in the test directory.
fn run(file: &PipelineFile, input: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "run",
            file.path.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
        .args(extra)
        .current_dir(file.dir.path())
        .env("AMQP_URL", amqp_url())
        .output()
        .expect("warren run")
}

/// Result lines per input id.
fn results(file: &PipelineFile) -> HashMap<u64, u32> {
    let mut counts = HashMap::new();
    let text = std::fs::read_to_string(file.file("out/grades.jsonl")).unwrap_or_default();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        assert!(v["grade"].is_u64() && v["website"].is_string(), "{line}");
        *counts.entry(v["id"].as_u64().unwrap()).or_default() += 1;
    }
    counts
}

fn cleanup(file: &PipelineFile) -> Cleanup {
    Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)])
}

fn assert_every_input_once(file: &PipelineFile, n: u64) {
    let counts = results(file);
    let missing: Vec<u64> = (1..=n).filter(|id| !counts.contains_key(id)).collect();
    let doubled: Vec<(&u64, &u32)> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(missing.is_empty(), "missing from the results: {missing:?}");
    assert!(doubled.is_empty(), "written more than once: {doubled:?}");
    assert_eq!(counts.len() as u64, n);
}

#[test]
fn a_crawl_through_errors_and_a_20_second_outage_writes_every_input_once() {
    let api = Api::start(&[
        "--latency",
        "20ms",
        "--error-rate",
        "0.05",
        "--outage",
        "3s..23s",
    ]);
    let file = grading("outage", api.port, "    rate_limit: 100/s");
    let _cleanup = cleanup(&file);
    let input = companies(&file, 400, &[]);
    let started = Instant::now();
    let out = run(&file, &input, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() > Duration::from_secs(20),
        "the run should have waited out the outage"
    );
    assert_every_input_once(&file, 400);
    assert!(
        stdout.contains("400 inputs (400 sent by this run)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("pausing consumption"),
        "the breaker paused the stage:\n{stderr}"
    );
    let (requests, _) = api.stats();
    assert!(requests > 400, "errors were retried ({requests} requests)");
    let dead = queue_state_blocking(&format!("{}.grade.dead", file.name));
    assert_eq!(dead, Some((0, 0)), "nothing dead-lettered");
}

#[test]
fn a_bad_input_line_exits_65_with_its_number_and_sends_nothing() {
    let file = grading("badline", 1, "");
    let _cleanup = cleanup(&file);
    let input = file.file("input.jsonl");
    std::fs::write(&input, "{\"id\": 1, \"company\": \"Acme\"}\n{\"id\": 2, \"company\": \"Bolt\"}\n{\"id\": 3, \"company\": \"Cut\n{\"id\": 4}\n").unwrap();
    let out = run(&file, &input, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("input.jsonl:3: not valid JSON"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(
        queue_state_blocking(&format!("{}.lookup", file.name)),
        None,
        "not even declared"
    );
}

#[test]
fn dead_letters_replayed_after_the_api_is_fixed_reach_the_results() {
    let api = Api::start(&["--latency", "5ms", "--reject", "Poison"]);
    let file = grading("replay", api.port, "");
    let _cleanup = cleanup(&file);
    let input = companies(&file, 60, &[3, 17, 30, 44, 59]);
    let out = run(&file, &input, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("5 messages were dead-lettered"), "{stderr}");
    assert!(
        stderr.contains(&format!("warren dlq {} grade list", file.path.display())),
        "{stderr}"
    );
    assert_eq!(results(&file).len(), 55);

    let listed = warren(&["dlq", file.path.to_str().unwrap(), "grade", "list"]);
    let (listing, _) = text(&listed);
    assert!(
        listing.starts_with(&format!("5 dead letters in {}.grade.dead", file.name)),
        "{listing}"
    );
    assert_eq!(
        listing.matches("HTTP 422 from http://127.0.0.1:").count(),
        5,
        "{listing}"
    );
    assert!(listing.contains("cannot grade Poison"), "{listing}");

    // The API is fixed (no more refusals), on another port.
    drop(api);
    let fixed = Api::start(&["--latency", "5ms"]);
    write_grading(&file, fixed.port, "");
    let replayed = warren(&["dlq", file.path.to_str().unwrap(), "grade", "replay"]);
    assert!(
        text(&replayed).0.contains("replayed 5 dead letters"),
        "{:?}",
        text(&replayed)
    );
    assert_eq!(
        queue_state_blocking(&format!("{}.grade.dead", file.name)),
        Some((0, 0))
    );
    let again = run(&file, &input, &[]);
    let (stdout, stderr) = text(&again);
    assert_eq!(again.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("(0 sent by this run)"),
        "nothing was sent again: {stdout}"
    );
    assert_every_input_once(&file, 60);
}

#[test]
fn an_interrupted_run_resumes_without_redoing_finished_work() {
    let api = Api::start(&["--latency", "150ms"]);
    let file = grading("resume", api.port, "    concurrency: 4");
    let _cleanup = cleanup(&file);
    let input = companies(&file, 120, &[]);
    let mut first = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "run",
                file.path.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ])
            .current_dir(file.dir.path())
            .env("AMQP_URL", amqp_url())
            .stdout(Stdio::null())
            .stderr(log_file(&file.file("first.log")))
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while results(&file).len() < 30 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    first.signal("INT");
    let status = first.wait();
    let log = std::fs::read_to_string(file.file("first.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "interrupted after sending 120 of 120 inputs; run the same command again to resume"
        ),
        "{log}"
    );
    let done_first = results(&file).len();
    assert!(done_first < 120, "interrupted too late to prove anything");

    let out = run(&file, &input, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("(0 sent by this run)"), "{stdout}");
    assert_every_input_once(&file, 120);
    // Finished work was not done again: one grading call per company.
    assert_eq!(api.stats().0, 120);
}

#[test]
fn the_rate_limit_is_shared_by_the_workers_of_a_stage() {
    let api = Api::start(&["--latency", "5ms"]);
    let file = grading(
        "ratelimit",
        api.port,
        "    rate_limit: 20/s\n    scale: { min: 2, max: 2 }",
    );
    let _cleanup = cleanup(&file);
    let input = companies(&file, 120, &[]);
    let out = run(&file, &input, &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_every_input_once(&file, 120);
    let (requests, busiest) = api.stats();
    assert_eq!(requests, 120);
    // Two workers at 20/s each would reach 40 in a second.
    assert!(
        busiest <= 25,
        "{busiest} requests in one second for a limit of 20/s"
    );
}

#[test]
fn a_fresh_run_of_the_same_input_writes_nothing_twice() {
    let api = Api::start(&["--latency", "5ms"]);
    let file = grading("fresh", api.port, "");
    let _cleanup = cleanup(&file);
    let input = companies(&file, 50, &[]);
    assert_eq!(run(&file, &input, &[]).status.code(), Some(0));
    let again = run(&file, &input, &["--fresh"]);
    let (stdout, _) = text(&again);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stdout.contains("50 inputs (50 sent by this run)"),
        "{stdout}"
    );
    assert_every_input_once(&file, 50);
}

#[test]
fn send_refuses_a_file_with_bad_lines_or_skips_them_when_asked() {
    let file = PipelineFile::new(
        "send",
        "
pipeline: {name}
stages:
  first:
    command: [unused]
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let input = file.file("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\": \"a\"}\n{\"key\": \"b\"}\nnot json\n\n{\"nokey\": 1}\n{\"key\": 7}\n",
    )
    .unwrap();
    let path = file.path.to_str().unwrap();
    let refused = warren(&[
        "send",
        path,
        "first",
        input.to_str().unwrap(),
        "--id-field",
        "key",
    ]);
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("in.jsonl:3: not valid JSON"), "{stderr}");
    assert!(
        stderr.contains("in.jsonl:5: has no `key` field"),
        "{stderr}"
    );
    let queue = format!("{}.first", file.name);
    assert_eq!(
        queue_state_blocking(&queue),
        None,
        "nothing declared, nothing sent"
    );

    let skipped = warren(&[
        "send",
        path,
        "first",
        input.to_str().unwrap(),
        "--id-field",
        "key",
        "--skip-bad",
    ]);
    let (stdout, stderr) = text(&skipped);
    assert!(skipped.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("sent 3 messages to {queue}")),
        "{stdout}"
    );
    let ids: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        drain_queue(&connect().await, &queue)
            .await
            .iter()
            .map(|m| {
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string()
            })
            .collect()
    });
    assert_eq!(ids, vec!["a", "b", "7"]);

    let unknown = warren(&["send", path, "nowhere", input.to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(2));
}

/// A one-stage pipeline without workers, with `lines` sent to its stage
/// `first` (the pipeline is removed when the cleanup drops).
fn sent_to_first(prefix: &str, lines: &str) -> (PipelineFile, Cleanup) {
    let file = PipelineFile::new(
        prefix,
        "
pipeline: {name}
stages:
  first:
    command: [unused]
",
    );
    let cleanup = Cleanup::pipeline(&file.path, &[]);
    let input = file.file("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let path = file.path.to_str().unwrap();
    assert!(
        warren(&["send", path, "first", input.to_str().unwrap()])
            .status
            .success()
    );
    (file, cleanup)
}

#[test]
fn drain_waits_for_an_empty_pipeline_and_times_out_with_what_is_left() {
    let (file, _cleanup) = sent_to_first("drain", "{}\n{}\n{}\n");
    let path = file.path.to_str().unwrap();
    let started = Instant::now();
    let waited = warren(&["drain", path, "--timeout", "2s"]);
    let (_, stderr) = text(&waited);
    assert_eq!(waited.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        stderr.contains("3 messages left (first: 3 ready"),
        "{stderr}"
    );
    assert!(warren(&["dlq", path, "first", "purge"]).status.success());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { drain_queue(&connect().await, &format!("{}.first", file.name)).await });
    let done = warren(&["drain", path, "--timeout", "10s"]);
    assert!(done.status.success(), "{:?}", text(&done));
    assert!(text(&done).0.contains("is drained"));
}

#[test]
fn drain_counts_a_message_held_by_a_consumer_that_is_not_this_boxs_worker() {
    // A consumer the supervisors do not know of (another box, a script)
    // holds a message unacknowledged: the queues look empty, and only the
    // management API can tell. Drain must ask it, not decide from the
    // workers' reports.
    let (file, _cleanup) = sent_to_first("drainheld", "{}\n");
    let path = file.path.to_str().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let queue = format!("{}.first", file.name);
    let (conn, _channel, _consumer, _delivery) = runtime.block_on(async {
        use futures_util::StreamExt;
        let conn = connect().await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .basic_qos(1, lapin::options::BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "holder".into(),
                lapin::options::BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        let delivery = consumer.next().await.unwrap().unwrap();
        (conn, channel, consumer, delivery)
    });
    // Longer than the 10 s a drain decided by the management API waits, so
    // only a wrong decision could end it drained.
    let waited = warren(&["drain", path, "--timeout", "12s"]);
    let (_, stderr) = text(&waited);
    assert_eq!(waited.status.code(), Some(1), "{stderr}");
    // The API counted it, or (on a loaded broker) its figures did not
    // catch up with the live counts: either way, not drained.
    assert!(
        stderr.contains("1 messages left (first: 0 ready, 0 retrying, 1 in flight)")
            || stderr.contains("(first: 0 ready, 0 retrying, 0 in flight (the management API's figures are not current yet))"),
        "{stderr}"
    );
    runtime.block_on(async { drop(conn) });
}

/// `queue_state` for tests without a runtime.
fn queue_state_blocking(queue: &str) -> Option<(u32, u32)> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { queue_state(&connect().await, queue).await })
}

/// A PHP or Python app publishes jobs without a message id; workers are
/// killed while they hold them. Each job must keep one id (its results
/// written once) and reach the API with one Idempotency-Key (graded once).
#[test]
fn id_less_messages_under_kills_reach_the_sink_once_and_the_api_once_per_key() {
    let api = Api::start(&["--latency", "300ms"]);
    let file = PipelineFile::new("idless", "");
    let yaml = format!(
        "
pipeline: {name}
defaults:
  prefetch: 10
  concurrency: 5
  timeout: 10s
  retry: {{ attempts: 10, backoff: [200ms] }}
stages:
  grade:
    http: {{ url: \"http://127.0.0.1:{port}/grade\", timeout: 5s, emit: merge }}
    scale: {{ min: 2, max: 2 }}
    outputs: [results]
  results:
    sink: {{ path: {results} }}
",
        name = file.name,
        port = api.port,
        results = file.file("out/grades.jsonl").display(),
    );
    std::fs::write(&file.path, yaml).unwrap();
    let _cleanup = cleanup(&file);
    let pipeline = warren::config::load(&file.path).unwrap();
    let jobs = 300u64;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        declare(&pipeline).await;
        let conn = connect().await;
        for n in 0..jobs {
            let body = json!({"n": n, "company": format!("C{n}"), "website": format!("https://c{n}.example")});
            publish_raw(&conn, &file.name, "grade", body.to_string().as_bytes(), None).await;
        }
    });
    let mut supervisor = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", file.path.to_str().unwrap(), "--poll", "500ms"])
            .current_dir(file.dir.path())
            .env("AMQP_URL", amqp_url())
            .stdout(Stdio::null())
            .stderr(log_file(&file.file("supervisor.log")))
            .spawn()
            .unwrap(),
    );
    let written = || {
        let text = std::fs::read_to_string(file.file("out/grades.jsonl")).unwrap_or_default();
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            *counts.entry(v["n"].as_u64().unwrap()).or_default() += 1;
        }
        counts
    };
    let started = Instant::now();
    let mut kills = 0;
    let mut next_kill = Duration::from_millis(1500);
    // Twenty kills, then the run finishes: every kill sends what its
    // worker held to be handled alone, one at a time, so kills without
    // end (51 in 180 s on a loaded machine) can outpace the isolation
    // queue and the run never ends in time.
    const KILLS: usize = 20;
    while written().len() < jobs as usize && started.elapsed() < Duration::from_secs(180) {
        if kills < KILLS && started.elapsed() >= next_kill {
            let workers = processes_of(&file.path);
            if let Some(pid) = workers.get(kills % workers.len().max(1)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                kills += 1;
            }
            next_kill += Duration::from_millis(1500);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A moment for late duplicates to show.
    std::thread::sleep(Duration::from_secs(2));
    supervisor.signal("TERM");
    supervisor.wait();
    let counts = written();
    let missing: Vec<u64> = (0..jobs).filter(|n| !counts.contains_key(n)).collect();
    let doubled: Vec<(&u64, &u32)> = counts.iter().filter(|(_, c)| **c != 1).collect();
    let log = std::fs::read_to_string(file.file("supervisor.log")).unwrap_or_default();
    assert!(
        kills >= 3,
        "only {kills} kills: the run was too short to prove anything"
    );
    assert!(missing.is_empty(), "missing: {missing:?}\n{log}");
    assert!(doubled.is_empty(), "written twice: {doubled:?}");
    let stats = api.all_stats();
    assert_eq!(
        stats["graded"].as_u64(),
        Some(jobs),
        "each job graded once ({kills} kills): {stats}"
    );
}

/// Crawls grow by appending lines: the lines sent before keep their ids
/// and are not sent again; only the new ones are.
#[test]
fn lines_appended_to_an_input_are_sent_alone_and_the_others_keep_their_ids() {
    let api = Api::start(&["--latency", "5ms"]);
    let file = grading("append", api.port, "");
    let _cleanup = cleanup(&file);
    let input = companies(&file, 40, &[]);
    let first = run(&file, &input, &[]);
    assert_eq!(first.status.code(), Some(0), "{:?}", text(&first));
    let all = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grading/companies.jsonl"),
    )
    .unwrap();
    let more: Vec<&str> = all.lines().skip(40).take(20).collect();
    let mut grown = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    std::io::Write::write_all(&mut grown, (more.join("\n") + "\n").as_bytes()).unwrap();
    let second = run(&file, &input, &[]);
    let (stdout, stderr) = text(&second);
    assert_eq!(second.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("60 inputs (20 sent by this run)"),
        "{stdout}"
    );
    assert_every_input_once(&file, 60);
    assert_eq!(api.stats().0, 60, "the first 40 were not graded again");
    // Even sent again in full, the old lines are the same messages.
    let fresh = run(&file, &input, &["--fresh"]);
    assert_eq!(fresh.status.code(), Some(0), "{:?}", text(&fresh));
    assert_every_input_once(&file, 60);
}

/// A stage whose workers cannot start fails the run with the reason,
/// instead of waiting for ever.
#[test]
fn a_run_stops_with_the_reason_when_a_stage_is_failing() {
    let file = PipelineFile::new(
        "failing",
        "
pipeline: {name}
stages:
  broken:
    command: [sh, -c, \"echo 'cannot find my settings' >&2; exit 78\"]
",
    );
    let _cleanup = cleanup(&file);
    let input = file.file("in.jsonl");
    std::fs::write(&input, "{}\n{}\n").unwrap();
    let out = run(&file, &input, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stage `broken` is failing")
            && stderr.contains("exit code 78")
            && stderr.contains("cannot find my settings"),
        "{stderr}"
    );
}

/// With workers running, messages dead-lettered again at once come back to
/// the dead-letter queue during a replay: it takes what was there when it
/// started, and ends.
#[test]
fn a_replay_takes_only_what_the_dead_letter_queue_held_when_it_started() {
    let file = PipelineFile::new(
        "replayonce",
        &format!(
            "
pipeline: {{name}}
stages:
  strict:
    command: [{}, strict]
",
            example_bin("test-worker").display()
        ),
    );
    let _cleanup = cleanup(&file);
    let path = file.path.to_str().unwrap();
    let input = file.file("in.jsonl");
    std::fs::write(&input, "{\"n\": 1, \"dead\": true}\n".repeat(5)).unwrap();
    let out = run(&file, &input, &[]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let mut supervisor = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["supervise", path, "--poll", "500ms"])
            .env("AMQP_URL", amqp_url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut replay = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["dlq", path, "strict", "replay"])
        .env("AMQP_URL", amqp_url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ended = loop {
        if let Some(status) = replay.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = replay.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    supervisor.signal("TERM");
    supervisor.wait();
    let status =
        ended.expect("the replay went round for a minute: it took its own dead letters again");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut replay.stdout.take().unwrap(), &mut said).unwrap();
    assert!(status.success(), "{said}");
    assert!(said.contains("replayed 5 dead letters"), "{said}");
}
