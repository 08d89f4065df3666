//! Bad input of every kind, against the real broker: each bad pipeline file
//! (tests/bad_pipelines, plus a 10 MB file, a directory, binary bytes and a
//! missing file) is refused by every command that reads one, with exit 78,
//! its path, no panic, and nothing declared; each bad command line or input
//! file gets its exit code and a message that says what and where, and
//! nothing is sent.

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::*;

/// Queue and exchange names on the broker.
fn broker_objects() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for what in ["list_queues", "list_exchanges"] {
        let out = Command::new("rabbitmqctl")
            .args([what, "name", "-q", "--no-table-headers"])
            .output()
            .expect("rabbitmqctl");
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string()),
        );
    }
    names
}

/// The bad pipeline files: the corpus and a few made here.
fn bad_files(dir: &Path) -> Vec<PathBuf> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad_pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let big = dir.join("big.yaml");
    std::fs::write(&big, "#".repeat(10 * 1024 * 1024)).unwrap();
    let binary = dir.join("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let folder = dir.join("folder.yaml");
    std::fs::create_dir(&folder).unwrap();
    files.extend([big, binary, folder, dir.join("missing.yaml")]);
    files
}

#[test]
fn every_command_refuses_every_bad_file_and_declares_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = bad_files(dir.path());
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, "{\"n\": 1}\n").unwrap();
    let input = input.to_str().unwrap();
    let before = broker_objects();
    let mut failures = Vec::new();
    for file in &files {
        let path = file.to_str().unwrap();
        let commands: [&[&str]; 15] = [
            &["validate", path],
            &["declare", path],
            &["run", path, "--input", input],
            &["send", path, "a", input],
            &["supervise", path],
            &["status", path],
            &["drain", path, "--timeout", "1s"],
            &["dlq", path, "a", "list"],
            &["worker", path, "--stage", "a"],
            &["job", path, "some-id"],
            &["schedule", path],
            &["pause", path, "a"],
            &["resume", path, "a"],
            &["restart", path, "a"],
            &["restart", path],
        ];
        for args in commands {
            // The file's own broker URL, not the tests' AMQP_URL, applies.
            let out = warren_env(args, &[("AMQP_URL", "")]);
            let (_, stderr) = text(&out);
            if out.status.code() != Some(78)
                || !stderr.contains(path)
                || stderr.contains("panicked")
            {
                failures.push(format!(
                    "warren {}: exit {:?}\n{}",
                    args.join(" "),
                    out.status.code(),
                    &stderr[..stderr.len().min(600)]
                ));
            }
        }
    }
    let after = broker_objects();
    // Other tests of this binary declare only `t`-prefixed pipelines.
    let declared: Vec<&String> = after
        .difference(&before)
        .filter(|name| !name.starts_with('t'))
        .collect();
    assert!(declared.is_empty(), "declared by bad files: {declared:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const PIPELINE: &str = "
pipeline: {name}
stages:
  first:
    command: [/bin/true]
    outputs: [out]
  out:
    sink: { path: out.jsonl }
";

/// Runs `warren args` with `stdin` as its input.
fn warren_with_stdin(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env("AMQP_URL", amqp_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start warren");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("wait for warren")
}

#[tokio::test]
async fn bad_command_lines_and_inputs_get_their_exit_code_and_send_nothing() {
    let file = PipelineFile::new("badcli", PIPELINE);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    declare(&warren::config::load(&file.path).unwrap()).await;
    let write = |name: &str, bytes: &[u8]| {
        let path = file.file(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let good = write("good.jsonl", b"{\"id\": \"a\"}\n");
    let bad = write("bad.jsonl", b"{\"a\": 1}\n{\"a\": 2\n{\"a\": 3}\n");
    let binary = write("binary.jsonl", b"{\"a\": 1}\n\xff\xfe\n");
    let not_objects = write("objects.jsonl", b"[1, 2]\n\"text\"\n");
    let dir = file.dir.path().to_str().unwrap().to_string();
    let missing = file.file("missing.jsonl").to_str().unwrap().to_string();
    let p = file.path.to_str().unwrap();
    // (arguments, stdin, exit code, what the message must say)
    let cases: Vec<(Vec<&str>, &[u8], i32, &str)> = vec![
        (vec![], b"", 2, "Usage"),
        (vec!["frobnicate"], b"", 2, "unrecognized subcommand"),
        (vec!["validate"], b"", 2, "required"),
        (vec!["run", p], b"", 2, "--input"),
        (vec!["run", p, "--input"], b"", 2, "a value is required"),
        (
            vec!["run", p, "--input", &bad],
            b"",
            65,
            "bad.jsonl:2: not valid JSON",
        ),
        (
            vec!["run", p, "--input", &binary],
            b"",
            65,
            "binary.jsonl:2: is not UTF-8",
        ),
        (
            vec!["run", p, "--input", &missing],
            b"",
            65,
            "missing.jsonl: cannot read it",
        ),
        (vec!["run", p, "--input", &dir], b"", 65, "is a directory"),
        (
            vec!["run", p, "--input", &good, "--stage", "nosuch"],
            b"",
            2,
            "no stage `nosuch`",
        ),
        (
            vec!["run", p, "--input", &good, "--id-field"],
            b"",
            2,
            "a value is required",
        ),
        (vec!["send", p, "first", &bad], b"", 65, "nothing was sent"),
        (
            vec!["send", p, "nosuch", &good],
            b"",
            2,
            "no stage `nosuch`",
        ),
        (
            vec!["send", p, "first", &not_objects, "--id-field", "id"],
            b"",
            65,
            "objects.jsonl:1: has no `id` field",
        ),
        (vec!["send", p, "first", &dir], b"", 65, "is a directory"),
        (
            vec!["send", p, "first", "-"],
            b"not json\n",
            65,
            "stdin:1: not valid JSON",
        ),
        (
            vec!["send", p, "first"],
            b"\n{oops\n{\"a\": 1}\n",
            65,
            "stdin:2: not valid JSON",
        ),
        (
            vec!["supervise", p, "--poll", "abc"],
            b"",
            2,
            "`abc` is not a duration",
        ),
        (
            vec!["supervise", p, "--stages", "nosuch"],
            b"",
            2,
            "no stage `nosuch`",
        ),
        (
            vec!["drain", p, "--timeout", "soon"],
            b"",
            2,
            "is not a duration",
        ),
        (
            vec!["dlq", p, "first", "frobnicate"],
            b"",
            2,
            "possible values",
        ),
        (
            vec!["dlq", p, "nosuch", "list"],
            b"",
            2,
            "no stage `nosuch`",
        ),
        (
            vec!["dlq", p, "first", "list", "--limit", "-5"],
            b"",
            2,
            "'-5'",
        ),
        (vec!["status", p, "--jsn"], b"", 2, "--json"),
        (
            vec!["job", p, "some-id", "--wait", "soon"],
            b"",
            2,
            "is not a duration",
        ),
        (
            vec!["worker", p, "--stage", "nosuch"],
            b"",
            2,
            "no stage `nosuch`",
        ),
        (
            vec!["worker", p, "--stage", "first"],
            b"",
            2,
            "runs built-in stages only",
        ),
        (vec!["declare", p, "--dry-rn"], b"", 2, "--dry-run"),
        (vec!["pause", p, "nosuch"], b"", 2, "no stage `nosuch`"),
        (vec!["resume", p, "nosuch"], b"", 2, "no stage `nosuch`"),
        (vec!["restart", p, "nosuch"], b"", 2, "no stage `nosuch`"),
        (vec!["pause", p], b"", 2, "<STAGE>"),
    ];
    let mut failures = Vec::new();
    for (args, stdin, code, fragment) in &cases {
        let out = warren_with_stdin(args, stdin);
        let (_, stderr) = text(&out);
        if out.status.code() != Some(*code)
            || !stderr.contains(fragment)
            || stderr.contains("panicked")
        {
            failures.push(format!(
                "warren {}: exit {:?}, wanted {code} and `{fragment}`:\n{stderr}",
                args.join(" "),
                out.status.code()
            ));
        }
    }
    // Nothing of the refused inputs reached the broker.
    let conn = connect().await;
    let queue = format!("{}.first", file.name);
    assert_eq!(queue_state(&conn, &queue).await.map(|q| q.0), Some(0));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
