//! Input as a stream: `warren send -` sends the lines of an endless pipe as
//! they arrive and stops on SIGINT with the exact count; a bad line in a
//! pipe stops it after what came before (or is skipped); `warren run`
//! sends while its workers already work, and an interrupted run resumes
//! without sending anything twice.

mod common;

use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

const QUEUE_ONLY: &str = "
pipeline: {name}
stages:
  first:
    command: [unused]
";

/// `warren send FILE first -` with a pipe the test writes to.
fn send_from_pipe(file: &PipelineFile, extra: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["send", file.path.to_str().unwrap(), "first", "-"])
            .args(extra)
            .env("AMQP_URL", amqp_url())
            .stdin(Stdio::piped())
            .stdout(log_file(&file.file("send.out")))
            .stderr(log_file(&file.file("send.err")))
            .spawn()
            .expect("start warren send"),
    )
}

/// Messages ready in the stage's queue.
async fn ready(file: &PipelineFile) -> u32 {
    let conn = connect().await;
    let state = queue_state(&conn, &format!("{}.first", file.name)).await;
    let _ = conn.close(200, "".into()).await;
    state.map_or(0, |(ready, _)| ready)
}

/// Waits until the queue holds `n` messages; false after 30 s.
async fn reaches(file: &PipelineFile, n: u32) -> bool {
    eventually(Duration::from_secs(30), || async { ready(file).await == n }).await
}

fn output(file: &PipelineFile) -> String {
    let out = std::fs::read_to_string(file.file("send.out")).unwrap_or_default();
    let err = std::fs::read_to_string(file.file("send.err")).unwrap_or_default();
    format!("{out}{err}")
}

#[tokio::test]
async fn an_endless_pipe_is_sent_as_it_arrives_and_sigint_reports_the_exact_count() {
    let file = PipelineFile::new("pipe", QUEUE_ONLY);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let mut send = send_from_pipe(&file, &[]);
    let mut pipe = send.0.stdin.take().unwrap();
    let mut written = 0;
    // Lines arrive over seconds, the pipe stays open: each one is in the
    // queue before the next is written.
    for round in 0..4 {
        for _ in 0..=round {
            written += 1;
            writeln!(pipe, "{{\"n\": {written}}}").unwrap();
        }
        pipe.flush().unwrap();
        assert!(
            reaches(&file, written).await,
            "{written} lines written, {} in the queue\n{}",
            ready(&file).await,
            output(&file)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    send.signal("INT");
    let status = send.wait();
    let said = output(&file);
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "interrupted: {written} messages were sent to {}.first, each confirmed by the broker",
            file.name
        )),
        "{said}"
    );
    assert_eq!(ready(&file).await, written);
    drop(pipe);
}

#[tokio::test]
async fn a_bad_line_in_a_pipe_stops_it_after_the_lines_before_or_is_skipped() {
    let file = PipelineFile::new("pipebad", QUEUE_ONLY);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let lines = b"{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3\n{\"n\": 4}\n";

    let mut send = send_from_pipe(&file, &[]);
    send.0.stdin.take().unwrap().write_all(lines).unwrap();
    let status = send.wait();
    let said = output(&file);
    assert_eq!(status.code(), Some(65), "{said}");
    assert!(said.contains("stdin:3: not valid JSON"), "{said}");
    assert!(
        said.contains("stdin:3 is not a message; the 2 lines before it were sent"),
        "{said}"
    );
    assert_eq!(
        ready(&file).await,
        2,
        "the lines after the bad one stay unsent"
    );

    std::fs::remove_file(file.file("send.err")).unwrap();
    let mut send = send_from_pipe(&file, &["--skip-bad"]);
    send.0.stdin.take().unwrap().write_all(lines).unwrap();
    let status = send.wait();
    let said = output(&file);
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(said.contains("stdin:3: not valid JSON"), "{said}");
    assert_eq!(ready(&file).await, 2 + 3);
}

/// `stage id attempt` records per id.
fn handled(path: &std::path::Path) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for (_, id, _) in records(path) {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[test]
fn a_run_interrupted_mid_send_resumes_without_sending_twice() {
    const LINES: usize = 60_000;
    let worker = example_bin("test-worker");
    let file = PipelineFile::new(
        "midsend",
        &format!(
            "
pipeline: {{name}}
defaults: {{ prefetch: 100, concurrency: 20, timeout: 10s }}
stages:
  first:
    command: [{}, first]
",
            worker.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let input = file.file("input.jsonl");
    let text: String = (0..LINES).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let record = file.file("record.txt");
    let run = |log: &str| {
        ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_warren"))
                .args(["run", file.path.to_str().unwrap(), "--input"])
                .arg(&input)
                .current_dir(file.dir.path())
                .env("AMQP_URL", amqp_url())
                .env("WARREN_TEST_RECORD", &record)
                .stdout(log_file(&file.file(log)))
                .stderr(log_file(&file.file(log)))
                .spawn()
                .expect("start warren run"),
        )
    };

    // The workers start at once: messages are handled while the input is
    // still being sent. Interrupt then.
    let mut first = run("first.log");
    let started = Instant::now();
    while handled(&record).is_empty() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    first.signal("INT");
    assert_eq!(first.wait().code(), Some(1));
    let log = std::fs::read_to_string(file.file("first.log")).unwrap();
    let sent_first: usize = log
        .split("interrupted after sending ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of what was sent:\n{log}"));
    assert!(
        sent_first > 0 && sent_first < LINES,
        "interrupted after {sent_first} of {LINES}: not mid-send\n{log}"
    );

    let mut second = run("second.log");
    let status = second.wait();
    let log = std::fs::read_to_string(file.file("second.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let sent_second = LINES - sent_first;
    assert!(
        log.contains(&format!("({sent_second} sent by this run)")),
        "the first run sent {sent_first}, the second should send the other {sent_second}:\n{log}"
    );
    // Every line was handled exactly once: none was sent twice.
    let counts = handled(&record);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(counts.len(), LINES);
    eprintln!("first run sent {sent_first}, the second {sent_second}");
}
