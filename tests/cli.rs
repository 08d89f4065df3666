//! `warren validate` and `warren declare` against real files and the real
//! broker.

mod common;

use std::path::Path;

use lapin::types::{AMQPValue, FieldTable};

use common::{
    Cleanup, PipelineFile, broker_queues, connect, queue_state, text, warren, warren_env,
};

/// Every file under tests/bad_pipelines is refused with exit 78, and each
/// `# expect:` fragment is in the output (`!fragment` must be absent).
#[test]
fn every_bad_pipeline_file_is_refused_with_its_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad_pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let content = std::fs::read_to_string(file).unwrap();
        let expect = content
            .lines()
            .find_map(|line| line.strip_prefix("# expect:"))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let out = warren_env(&["validate", file.to_str().unwrap()], &[("AMQP_URL", "")]);
        let (stdout, stderr) = text(&out);
        if out.status.code() != Some(78) {
            failures.push(format!(
                "{}: exit {:?}, stdout {stdout}",
                file.display(),
                out.status.code()
            ));
            continue;
        }
        for fragment in expect.split('|').map(str::trim) {
            let ok = match fragment.strip_prefix('!') {
                Some(absent) => !stderr.contains(absent),
                None => stderr.contains(fragment),
            };
            if !ok {
                failures.push(format!(
                    "{}: `{fragment}` expected in:\n{stderr}",
                    file.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn validate_prints_the_stage_graph_for_a_good_file() {
    let out = warren(&["validate", "../examples/grading/pipeline.yaml"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("OK, pipeline `grading`"), "{stdout}");
    assert!(stdout.contains("lookup (command) -> grade"), "{stdout}");
}

#[test]
fn files_that_are_not_pipelines_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(10 * 1024 * 1024)).unwrap();
    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let missing = dir.path().join("missing.yaml");
    for (path, fragment) in [
        (dir.path().to_path_buf(), "is a directory"),
        (big, "a pipeline file is at most"),
        (binary, "is not UTF-8"),
        (missing, "no such file"),
    ] {
        let out = warren(&["validate", path.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(78), "{}: {stderr}", path.display());
        assert!(stderr.contains(fragment), "{}: {stderr}", path.display());
    }
}

#[test]
fn wrong_usage_exits_2() {
    assert_eq!(warren(&["validate"]).status.code(), Some(2));
    assert_eq!(warren(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        warren(&["declare", "x.yaml", "--dry-rn"]).status.code(),
        Some(2)
    );
}

const PIPELINE: &str = "
pipeline: {name}
defaults:
  retry: { attempts: 3, backoff: [1s, 5s] }
stages:
  first:
    command: [worker]
    outputs: [second]
  second:
    command: [worker]
    queue: { type: classic }
    retry: { attempts: 1, backoff: [] }
";

#[tokio::test]
async fn declare_twice_creates_only_prefixed_objects() {
    let file = PipelineFile::new("declare", PIPELINE);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    for _ in 0..2 {
        let out = warren(&["declare", file.path.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        // Eight of the stages', the pause stream and the peek stream.
        assert!(stdout.contains("and 10 queues"), "{stdout}");
        assert!(stdout.contains("the delay cascade (25 levels)"), "{stdout}");
        assert!(!stdout.contains("guest:guest"), "{stdout}");
    }
    let mut expected = vec![
        format!("{}.first", file.name),
        format!("{}.first.retry.1s", file.name),
        format!("{}.first.retry.5s", file.name),
        format!("{}.first.isolated", file.name),
        format!("{}.first.dead", file.name),
        format!("{}.second", file.name),
        format!("{}.second.isolated", file.name),
        format!("{}.second.dead", file.name),
        format!("{}.control.pauses", file.name),
        format!("{}.control.peeks", file.name),
    ];
    // The delay cascade's levels.
    expected.extend((0..warren::delay::LEVELS).map(|n| warren::names::delay_level(&file.name, n)));
    expected.sort();
    let mut found = broker_queues(&format!("{}.", file.name));
    found.sort();
    assert_eq!(found, expected);

    // The binding routes `first` to its queue through the pipeline exchange.
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    channel
        .basic_publish(
            file.name.as_str().into(),
            "first".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"{}",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let first = format!("{}.first", file.name);
    assert_eq!(queue_state(&conn, &first).await, Some((1, 0)));
}

#[tokio::test]
async fn declare_reports_a_queue_with_other_arguments() {
    let file = PipelineFile::new("mismatch", PIPELINE);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    // Someone made the first stage's queue as a classic queue.
    let conn = connect().await;
    let channel = conn.create_channel().await.unwrap();
    let queue = format!("{}.first", file.name);
    let dead = format!("{queue}.dead");
    let mut args = FieldTable::default();
    for (key, value) in [
        ("x-queue-type", "classic"),
        ("x-dead-letter-exchange", ""),
        ("x-dead-letter-routing-key", dead.as_str()),
    ] {
        args.insert(key.into(), AMQPValue::LongString(value.into()));
    }
    channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();

    let out = warren(&["declare", file.path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("queue `{queue}` already exists")),
        "{stderr}"
    );
    assert!(stderr.contains("x-queue-type"), "{stderr}");
    assert!(
        stderr.contains("= classic, but the pipeline wants quorum"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("rabbitmqctl delete_queue {queue}")),
        "{stderr}"
    );
    // The other objects were still declared.
    assert!(
        queue_state(&conn, &format!("{}.second", file.name))
            .await
            .is_some()
    );
}

#[test]
fn declare_dry_run_prints_the_plan_without_connecting() {
    let file = PipelineFile::new("dryrun", PIPELINE);
    let out = warren_env(
        &["declare", "--dry-run", file.path.to_str().unwrap()],
        &[("AMQP_URL", "amqp://app:hunter2@127.0.0.1:1/%2f")],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("exchange {} (direct, durable)", file.name)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("queue {}.first.retry.5s", file.name)),
        "{stdout}"
    );
    assert!(stdout.contains("x-message-ttl=5000"), "{stdout}");
    assert!(stdout.contains("app:***@127.0.0.1:1"), "{stdout}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
}

#[test]
fn an_unreachable_broker_exits_69_with_host_and_port_and_no_password() {
    let file = PipelineFile::new("unreachable", PIPELINE);
    let started = std::time::Instant::now();
    let out = warren_env(
        &["declare", file.path.to_str().unwrap()],
        &[
            ("AMQP_URL", "amqp://app:hunter2@127.0.0.1:1/%2f"),
            ("RUST_LOG", "debug"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("cannot reach the broker at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 20, "the retry is bounded");
}

#[test]
fn declare_refuses_a_bad_file_before_connecting() {
    let file = PipelineFile::new("badfile", "pipeline: {name}\nstages: {}\n");
    let out = warren_env(
        &["declare", file.path.to_str().unwrap()],
        &[("AMQP_URL", "amqp://127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(78));
}
