//! Sets `WARREN_VERSION`, the text of `warren --version` after the name:
//! `0.2.0 (abc1234 2026-12-05)`, the package version and the commit it was
//! built from (short hash and commit date).
//!
//! The commit comes from git. A build without a repository (a source
//! tarball, a vendored crate) takes `WARREN_COMMIT` and `WARREN_COMMIT_DATE`
//! from the environment, else says `unknown`. Self-contained (std only) so it
//! moves with the binary crate when that is renamed.

use std::{path::PathBuf, process::Command};

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let from_env = |name: &str| {
        println!("cargo:rerun-if-env-changed={name}");
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    // Where git looks (watched so that a build that could not see the
    // repository runs this again when it can).
    from_env("GIT_DIR");
    let env_commit = from_env("WARREN_COMMIT");
    let env_date = from_env("WARREN_COMMIT_DATE");
    let git_commit = git(&["log", "-1", "--format=%h %cs", "--abbrev=7"]);
    let (commit, date) = match (env_commit, git_commit) {
        (Some(commit), _) => (commit, env_date),
        (None, Some(line)) => match line.split_once(' ') {
            Some((hash, date)) => (hash.to_owned(), Some(date.to_owned())),
            None => (line, None),
        },
        (None, None) => ("unknown".to_owned(), env_date),
    };
    let described = match date {
        Some(date) => format!("{version} ({commit} {date})"),
        None => format!("{version} ({commit})"),
    };
    println!("cargo:rustc-env=WARREN_VERSION={described}");
    watch_git();
}

/// The trimmed output of a git command run in this crate's directory, if
/// git is there and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Asks cargo to run this script again when the commit changes: when HEAD
/// moves to another branch, when the branch gets a commit, or when refs are
/// packed. Outside a repository only the environment is watched.
fn watch_git() {
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = PathBuf::from(path);
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            // A missing file makes cargo run this again on every build:
            // right for a branch whose ref is only in packed-refs (its next
            // commit writes the file), needless for an absent packed-refs.
            if path.exists() || name != "packed-refs" {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
