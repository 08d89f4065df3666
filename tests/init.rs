//! `warren init DIR [--lang rust|python|php]` (DESIGN.md, "Command line"):
//!
//! - for each language the new folder passes `warren validate` as made;
//! - a folder that is not empty, or a file, is refused (exit 2) and left
//!   as it was;
//! - the Python and PHP folders run end to end against the real broker by
//!   the commands of their README (the package installed from this
//!   checkout as the README says: `~/warren` is this checkout);
//! - the Rust folder, a crate outside this workspace that depends on the
//!   framework by path (its git dependencies turned into this checkout's
//!   folders, as tests/docs.rs does for the tutorial), builds, passes its
//!   own tests, runs by its README, and keeps message ids that are not
//!   UTF-8 (the `[patch.crates-io]` lines it carries): each handled under a
//!   stable id of its own.
//!
//! Every pipeline gets a name of its own (from its folder's name, or
//! written into the Rust folder's file) and what it declared is deleted.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::*;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `warren init DIR --lang LANG`, which must succeed.
fn init(dir: &Path, lang: &str) {
    let out = warren(&["init", dir.to_str().unwrap(), "--lang", lang]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "warren init --lang {lang}: {stderr}");
    assert!(
        stdout.contains("warren run pipeline.yaml --input names.jsonl"),
        "warren init does not say how to run it: {stdout}"
    );
}

/// The first `sh` block of the folder's README, `~/warren/` made this
/// checkout.
fn readme_commands(dir: &Path) -> String {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a sh block");
    block.replace("~/warren/", &format!("{}/", root().display()))
}

/// Runs `script` with bash in `dir`, this build's `warren` first on `PATH`,
/// with the tests' broker, offline for cargo: its output, which must say
/// it succeeded.
fn run_script(dir: &Path, script: &str) -> Output {
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let path = format!(
        "{}:{}",
        warren.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("AMQP_URL", amqp_url())
        .env("CARGO_NET_OFFLINE", "true")
        // CI runs as root; Composer asks a root user to confirm.
        .env("COMPOSER_ALLOW_SUPERUSER", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("WARREN_") {
            command.env_remove(key);
        }
    }
    let out = command.output().expect("run bash");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "in {dir:?}:\n{script}\nfailed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    out
}

/// The greetings the sink wrote, sorted.
fn greetings(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("out/greetings.jsonl")).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["greeting"].as_str().unwrap().to_owned()
        })
        .collect();
    lines.sort();
    lines
}

/// Deletes, when dropped, every queue whose name starts with `{name}.`
/// (those the file declares and the supervisors' presence queue) and the
/// exchange `name`.
struct Forget(String);

impl Drop for Forget {
    fn drop(&mut self) {
        drop(Cleanup {
            exchange: self.0.clone(),
            queues: broker_queues(&format!("{}.", self.0)),
        });
    }
}

const HELLOS: [&str; 3] = ["Hello, Ada!", "Hello, Grace!", "Hello, Linus!"];

#[test]
fn every_language_makes_a_folder_that_validates() {
    let tmp = tempfile::tempdir().unwrap();
    for lang in ["python", "php", "rust"] {
        let dir = tmp.path().join(format!("shop-{lang}"));
        init(&dir, lang);
        let out = warren(&["validate", dir.join("pipeline.yaml").to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{lang}: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!("pipeline `shop-{lang}` with 2 stages")),
            "{lang}: {stdout}"
        );
        assert!(dir.join("README.md").is_file() && dir.join("names.jsonl").is_file());
    }
    // Python is the default; an empty folder that exists is used.
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    let out = warren(&["init", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(dir.join("greet.py").is_file());
}

#[test]
fn a_folder_that_is_not_empty_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("pipeline.yaml"), "mine\n").unwrap();
    let out = warren(&["init", dir.to_str().unwrap(), "--lang", "php"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is not empty", dir.display()))
            && stderr.contains("pipeline.yaml"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap(),
        "mine\n"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = warren(&["init", file.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a folder"), "{stderr}");

    let out = warren(&[
        "init",
        tmp.path().join("x").to_str().unwrap(),
        "--lang",
        "go",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// `warren init --lang LANG` in a folder named after a pipeline of its own,
/// then the README's commands; the sink must hold each greeting once.
fn runs_end_to_end(lang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let name = unique_name(&format!("init_{lang}"));
    let dir = tmp.path().join(&name);
    init(&dir, lang);
    let _forget = Forget(name.clone());
    let out = run_script(&dir, &readme_commands(&dir));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!("pipeline `{name}` with 2 stages")),
        "{stdout}"
    );
    assert_eq!(greetings(&dir), HELLOS, "{stdout}");
}

#[test]
fn the_python_folder_runs_by_its_readme() {
    runs_end_to_end("python");
}

#[test]
fn the_php_folder_runs_by_its_readme() {
    runs_end_to_end("php");
}

/// The Rust folder's `Cargo.toml` with its git dependencies on warren made
/// this checkout's folders (the framework and the patched parser).
fn adapt_cargo_toml(dir: &Path) {
    let file = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(file, cargo_toml_from_checkout(&text)).unwrap();
}

/// Item 4 of issue 31: a crate outside this workspace that depends on the
/// framework keeps message ids that are not UTF-8 with the two lines
/// `warren init --lang rust` writes (and the guide asks for).
#[tokio::test(flavor = "multi_thread")]
async fn the_rust_folder_builds_runs_and_keeps_ids_that_are_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    // A fixed folder name (the crate's name) so that builds are reused; the
    // pipeline's name of its own is written into the file.
    let dir = tmp.path().join("hello-init");
    init(&dir, "rust");
    adapt_cargo_toml(&dir);
    let name = unique_name("init_rust");
    let file = dir.join("pipeline.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains("\npipeline: hello-init\n"), "{yaml}");
    std::fs::write(
        &file,
        yaml.replace("\npipeline: hello-init\n", &format!("\npipeline: {name}\n")),
    )
    .unwrap();
    let _forget = Forget(name.clone());
    // The crate's `target` is one kept under this build's target directory
    // and shared with the Rust tutorial's crate (tests/docs.rs), so that
    // the framework is compiled once, not on every run.
    let warren_bin = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    let shared = warren_bin
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("tutorial");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, dir.join("target")).unwrap();

    // Its own tests (no broker), then the README's commands.
    run_script(&dir, "cargo test --quiet");
    let out = run_script(&dir, &readme_commands(&dir));
    assert_eq!(greetings(&dir), HELLOS, "{}", text(&out).0);

    // Messages whose message-id property holds bytes that are not UTF-8,
    // published as a PHP app does. This test links the patched parser,
    // whose `wire` writes each `\xNN` of an id as the octet NN (a backslash
    // doubled as one backslash): the ids on the wire are 100 octets 0xff,
    // the 100-octet text `\xff\xff...` that spells the escape of 25 such
    // octets, and those 25 octets; the first is published twice.
    let raw_100 = "\\xff".repeat(100);
    let spelled = "\\\\xff".repeat(25);
    let raw_25 = "\\xff".repeat(25);
    let dead = "\\xfe".repeat(8);
    let supervisor_log = tmp.path().join("supervise.log");
    let mut supervisor = ChildGuard(
        Command::new(&warren_bin)
            .args(["supervise", file.to_str().unwrap()])
            .current_dir(&dir)
            .env("AMQP_URL", amqp_url())
            .stdout(Stdio::null())
            .stderr(log_file(&supervisor_log))
            .spawn()
            .unwrap(),
    );
    let conn = connect().await;
    for (id, body) in [
        (&raw_100, r#"{"name": "Alan"}"#),
        (&spelled, r#"{"name": "Barbara"}"#),
        (&raw_25, r#"{"name": "Claude"}"#),
        (&raw_100, r#"{"name": "Alan"}"#),
        (&dead, r#"{"nom": "Dennis"}"#),
    ] {
        publish_raw(&conn, &name, "greet", body.as_bytes(), Some(id)).await;
    }
    let dead_queue = format!("{name}.greet.dead");
    let arrived = eventually(Duration::from_secs(120), || async {
        greetings(&dir).len() >= 6 && queue_state(&conn, &dead_queue).await == Some((1, 0))
    })
    .await;
    let log = || std::fs::read_to_string(&supervisor_log).unwrap_or_default();
    assert!(
        arrived,
        "the worker did not handle the messages with ids that are not UTF-8: greetings {:?}, dead letters {:?}\n--- supervisor log\n{}",
        greetings(&dir),
        queue_state(&conn, &dead_queue).await,
        log()
    );
    supervisor.signal("TERM");
    assert!(supervisor.wait().success(), "{}", log());
    // Each id handled under an id of its own, the same on its second
    // delivery: one greeting each (the sink writes each id once), and
    // the ids that differ only in how they spell 0xff stay apart.
    let mut wanted: Vec<String> = HELLOS.iter().map(|s| s.to_string()).collect();
    wanted.extend(["Hello, Alan!", "Hello, Barbara!", "Hello, Claude!"].map(String::from));
    wanted.sort();
    assert_eq!(greetings(&dir), wanted, "{}", log());
    // The dead letter is listed under its id as read from the wire: octets
    // 0xfe, shown as `\xfe` (text that spelled it would show `\\xfe`).
    let out = run_script(&dir, "warren dlq pipeline.yaml greet list");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("\\xfe\\xfe") && !stdout.contains("\\\\xfe"),
        "{stdout}"
    );
    assert!(stdout.contains("missing field `name`"), "{stdout}");
    let _ = conn.close(200, "".into()).await;
}
