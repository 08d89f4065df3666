//! The README and the user guide (`docs/`) stay true:
//!
//! - every relative link in README.md and docs/**/*.md names a file that
//!   exists, and every `#anchor` a heading of that file (GitHub's slugs);
//! - SUMMARY.md, the book's table of contents, lists every chapter;
//! - the tutorial's marked blocks (see `docs/tutorial.rs`) run, in a new
//!   temporary directory, against the real broker, with this build's
//!   `warren` first on `PATH`, and print what the page says they print.
//!
//! To run here, the tutorial is changed in three ways and no other: its
//! pipeline `hello` gets a name of its own (in its files and in the expected
//! outputs), `~/warren` (where the reader cloned warren) is this checkout,
//! and the Rust tutorial's git dependencies on warren are this checkout's
//! folders (built offline, its `target` folder linked to one kept under
//! this build's target directory, so that a second run does not compile
//! every dependency again). What the tutorial declared on the broker is
//! deleted afterwards.

mod common;
#[path = "docs/links.rs"]
mod links;
#[path = "docs/tutorial.rs"]
mod tutorial;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Cleanup, amqp_url, broker_queues, unique_name};
use tutorial::Block;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// README.md and every Markdown file under docs/.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|e| e == "md") {
                into.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let problems = links::check(&root(), &documents());
    assert!(
        problems.is_empty(),
        "{} broken links:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_summary_lists_every_chapter() {
    let docs = root().join("docs");
    let summary = std::fs::read_to_string(docs.join("SUMMARY.md")).unwrap();
    let listed: Vec<PathBuf> = links::links(&summary)
        .into_iter()
        .filter_map(|l| l.target.ok())
        .map(|t| docs.join(t))
        .collect();
    let missing: Vec<String> = documents()
        .into_iter()
        .filter(|f| f.starts_with(&docs) && !f.ends_with("SUMMARY.md"))
        .filter(|f| !listed.contains(f))
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "not in docs/SUMMARY.md: {missing:?}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines; it keeps to 250");
}

#[test]
fn the_python_tutorial_runs() {
    run_tutorial("python");
}

#[test]
fn the_php_tutorial_runs() {
    run_tutorial("php");
}

#[test]
fn the_rust_tutorial_runs() {
    run_tutorial("rust");
}

/// Runs `docs/tutorial-{name}.md` and checks its expected outputs.
fn run_tutorial(name: &str) {
    let page = root().join(format!("docs/tutorial-{name}.md"));
    let markdown = std::fs::read_to_string(&page).unwrap();
    let blocks = tutorial::blocks(&markdown, name).unwrap_or_else(|e| panic!("{page:?}: {e}"));
    assert!(
        blocks.iter().any(|b| matches!(b, Block::Run(_))),
        "{page:?} marks no commands"
    );
    let pipeline = blocks
        .iter()
        .find_map(|b| match b {
            Block::File { text, .. } => text
                .lines()
                .find_map(|l| l.strip_prefix("pipeline: "))
                .map(str::trim),
            _ => None,
        })
        .expect("the tutorial writes a pipeline file")
        .to_string();
    let unique = unique_name(&pipeline);
    let blocks: Vec<Block> = blocks
        .into_iter()
        .map(|block| adapt(block, &pipeline, &unique))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tutorial.sh");
    std::fs::write(&script, tutorial::script(&blocks)).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let (stdout, stderr, status) = run_script(&script, &work);
    // Whatever happened, what the tutorial declared goes.
    let _cleanup = Cleanup {
        exchange: unique.clone(),
        queues: broker_queues(&format!("{unique}.")),
    };
    assert!(
        status,
        "the {name} tutorial failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- script\n{}",
        std::fs::read_to_string(&script).unwrap()
    );
    let outputs = tutorial::outputs(&stdout);
    for (run, expected) in tutorial::expected(&blocks).unwrap() {
        let got = outputs.get(run).map_or("", String::as_str);
        assert_eq!(
            got.trim_end(),
            expected.trim_end(),
            "the {name} tutorial's block {run} printed something else than the page says\n--- stderr\n{stderr}"
        );
    }
}

/// A block made to run here (see the top of this file).
fn adapt(block: Block, pipeline: &str, unique: &str) -> Block {
    let checkout = root().display().to_string();
    match block {
        Block::Run(commands) => Block::Run(commands.replace("~/warren/", &format!("{checkout}/"))),
        Block::Expect(text) => Block::Expect(tutorial::replace_word(&text, pipeline, unique)),
        Block::File { path, text } if path.ends_with("Cargo.toml") => Block::File {
            text: common::cargo_toml_from_checkout(&text),
            path,
        },
        Block::File { path, text } if path.ends_with(".yaml") => Block::File {
            text: tutorial::replace_word(&text, pipeline, unique),
            path,
        },
        other => other,
    }
}

/// Runs `script` with bash in `work`, in its own process group (which is
/// ended afterwards, background commands included): stdout, stderr, and
/// whether it succeeded.
fn run_script(script: &Path, work: &Path) -> (String, String, bool) {
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let bin = warren.parent().unwrap();
    let target = bin.parent().unwrap().join("tutorial");
    std::fs::create_dir_all(&target).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `cargo new` gets a `target` folder that lives on between runs.
    let preamble = format!(
        "cargo() {{ command cargo \"$@\"; if [ \"$1\" = new ]; then for last in \"$@\"; do :; done; ln -s '{}' \"$last/target\"; fi; }}\n",
        target.display()
    );
    let body = std::fs::read_to_string(script).unwrap();
    std::fs::write(script, format!("{preamble}{body}")).unwrap();
    let out_path = work.with_file_name("stdout");
    let err_path = work.with_file_name("stderr");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .current_dir(work)
        .env("PATH", path)
        .env("AMQP_URL", amqp_url())
        .env("CARGO_NET_OFFLINE", "true")
        // CI runs as root; Composer asks a root user to confirm.
        .env("COMPOSER_ALLOW_SUPERUSER", "1")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("WARREN_") {
            command.env_remove(key);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("run bash");
    // Generous: the Rust tutorial compiles its dependencies the first time.
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    end_group(child.id());
    let _ = child.wait();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut stderr = read(&err_path);
    if status.is_none() {
        stderr.push_str("\n(the tutorial did not finish within 30 minutes and was stopped)");
    }
    (read(&out_path), stderr, status.is_some_and(|s| s.success()))
}

/// SIGTERM to the process group `pgid` (a supervisor left running drains its
/// workers), then SIGKILL to what is left after a while.
fn end_group(pgid: u32) {
    let group = format!("-{pgid}");
    let alive = || {
        Command::new("kill")
            .args(["-0", "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _ = Command::new("kill")
        .args(["-TERM", "--", &group])
        .stderr(Stdio::null())
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    while alive() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
}
