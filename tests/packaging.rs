//! What the packages rely on (packaging/): `warren --version` names the
//! version and the commit it was built from, the version is set in one
//! place, and the man pages and shell completions come from the command
//! line's own definition. The packages themselves are tested end to end by
//! packaging/test-deb.sh and packaging/build-image.sh.

mod common;

use std::{path::Path, process::Command};

use common::{text, warren};

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `git log -1 --format=%h %cs` in the repository, if git and a repository
/// are there.
fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["log", "-1", "--format=%h %cs", "--abbrev=7"])
        .current_dir(repository())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    // A build without a repository says `unknown` (or WARREN_COMMIT).
    let commit = head_commit().expect("this test runs in a git checkout");
    let expected = format!("warren {} ({commit})\n", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["-V"], &["supervise", "--version"]] {
        let out = warren(args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "warren {args:?}: {stderr}");
        // Subcommands print their own name (`warren-supervise 0.2.0 ...`).
        let expected = match args {
            ["supervise", ..] => expected.replacen("warren", "warren-supervise", 1),
            _ => expected.clone(),
        };
        assert_eq!(stdout, expected, "warren {args:?}");
    }
}

#[test]
fn the_version_is_set_once_for_the_workspace() {
    let root = std::fs::read_to_string(repository().join("Cargo.toml")).unwrap();
    let workspace = root.split("[workspace.package]").nth(1).unwrap();
    let version_line = workspace
        .lines()
        .find(|line| line.starts_with("version"))
        .expect("[workspace.package] has a version");
    assert!(
        version_line.contains(&format!("\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{version_line}"
    );
    for crate_dir in ["framework", "ops", "serve", "command"] {
        let manifest =
            std::fs::read_to_string(repository().join(crate_dir).join("Cargo.toml")).unwrap();
        assert!(
            manifest
                .lines()
                .any(|line| line == "version.workspace = true"),
            "{crate_dir}/Cargo.toml sets its own version"
        );
    }
}

/// The commands `warren --help` lists (without `help`).
fn listed_commands() -> Vec<String> {
    let (help, _) = text(&warren(&["--help"]));
    let commands = help
        .split("Commands:\n")
        .nth(1)
        .expect("--help lists commands");
    commands
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = warren(&["man", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let commands = listed_commands();
    assert!(commands.len() >= 10, "{commands:?}");
    let mut pages = vec!["warren.1".to_owned()];
    pages.extend(commands.iter().map(|name| format!("warren-{name}.1")));
    for page in &pages {
        let path = dir.path().join(page);
        let content = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{page}: {error}; written: {stdout}"));
        assert!(content.contains(".TH "), "{page} is not a man page");
        assert!(
            content.contains(env!("CARGO_PKG_VERSION")),
            "{page} does not carry the version"
        );
    }
    // Nothing else: hidden commands (man, completions) have no page.
    let written = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(written, pages.len(), "{stdout}");
    // The top page lists every command.
    let top = std::fs::read_to_string(dir.path().join("warren.1")).unwrap();
    for name in &commands {
        assert!(
            top.contains(&format!("warren\\-{name}(1)")),
            "warren.1 lacks {name}"
        );
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_know_every_command() {
    let commands = listed_commands();
    for shell in ["bash", "zsh", "fish"] {
        let out = warren(&["completions", shell]);
        let (script, stderr) = text(&out);
        assert!(out.status.success(), "{shell}: {stderr}");
        for name in &commands {
            assert!(script.contains(name.as_str()), "{shell} lacks {name}");
        }
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warren.bash");
    std::fs::write(&file, warren(&["completions", "bash"]).stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", text(&check).1);
    // An unknown shell is wrong usage.
    let out = warren(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
}
