//! The rules of ARCHITECTURE.md that a program can check, checked on the
//! code as it is:
//!
//! - no module cycle: within each crate, the files' imports (`use` trees
//!   and paths written in the code, tests left out) never lead back to the
//!   file they start from;
//! - arrows only go down between the crates (command -> serve -> ops ->
//!   warren), and each crate's dependencies keep its boundary: nothing
//!   below the binary knows clap, the library knows no sibling, ops knows
//!   no HTTP server, and serve starts and signals no process.
//!
//! ```sh
//! cargo test -p warren-command --test architecture
//! ```

#[path = "architecture/modules.rs"]
mod modules;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The crates of the workspace, by folder, top first.
const CRATES: [&str; 4] = ["command", "serve", "ops", "framework"];

#[test]
fn no_crate_has_a_module_cycle() {
    let mut found = Vec::new();
    for krate in CRATES {
        let tree = modules::Tree::read(&root().join(krate).join("src"));
        assert!(
            tree.len() > 5,
            "{krate}/src: only {} files read",
            tree.len()
        );
        for cycle in tree.cycles() {
            found.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        found.is_empty(),
        "module cycles (each file imports the next):\n{}",
        found.join("\n")
    );
}

/// The `[dependencies]` names of a crate's Cargo.toml.
fn dependencies(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside
            && !line.starts_with('#')
            && let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| !n.is_empty())
        {
            names.push(name.to_string());
        }
    }
    assert!(
        !names.is_empty(),
        "{krate}/Cargo.toml: no [dependencies] read"
    );
    names
}

#[test]
fn arrows_between_the_crates_only_go_down() {
    let siblings = ["warren", "warren-ops", "warren-serve", "warren-command"];
    let allowed: [(&str, &[&str]); 4] = [
        ("command", &["warren", "warren-ops", "warren-serve"]),
        ("serve", &["warren", "warren-ops"]),
        ("ops", &["warren"]),
        ("framework", &[]),
    ];
    for (krate, may) in allowed {
        let deps = dependencies(krate);
        for sibling in siblings {
            let has = deps.iter().any(|d| d == sibling);
            assert_eq!(
                has,
                may.contains(&sibling),
                "{krate} depends on {sibling}: {}",
                if has {
                    "it must not"
                } else {
                    "it is expected to"
                }
            );
        }
    }
}

#[test]
fn each_crate_keeps_its_boundary() {
    let refused: [(&str, &[&str]); 3] = [
        // reqwest only sends spans to an OTLP receiver (traces.rs).
        ("framework", &["clap", "axum", "hyper"]),
        ("ops", &["clap", "axum", "hyper", "hyper-util", "tower"]),
        ("serve", &["clap"]),
    ];
    for (krate, names) in refused {
        let deps = dependencies(krate);
        for name in names {
            assert!(
                !deps.iter().any(|d| d == name),
                "{krate} depends on {name}, which its boundary refuses (ARCHITECTURE.md)"
            );
        }
    }
    // serve never starts or signals a process; ops only asks who it runs as.
    for (krate, words) in [
        ("serve", &["Command::new", "kill(", "rustix::process"][..]),
        ("ops", &["Command::new", "kill("][..]),
    ] {
        let tree = modules::Tree::read(&root().join(krate).join("src"));
        for (file, text) in tree.code() {
            for word in words {
                assert!(
                    !text.contains(word),
                    "{krate}/src/{}: `{word}`, which its boundary refuses (ARCHITECTURE.md)",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_checker_finds_a_cycle_and_follows_every_kind_of_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "mod a;\nmod b;\npub use a::A;\n");
    write("a/mod.rs", "mod c;\npub struct A;\n");
    write(
        "a/c.rs",
        "use crate::b::{self, B};\n// super::nothing in a comment\nfn f() { let _ = \"super::x\"; }\n",
    );
    write(
        "b.rs",
        "pub struct B;\nfn g() -> super::a::A { crate::a::A }\n#[cfg(test)]\nmod tests {\n    use crate::a::c::C;\n}\n",
    );
    let tree = modules::Tree::read(src);
    assert_eq!(tree.len(), 4);
    // b -> a/mod.rs (two ways), a/c.rs -> b.rs; the test module's import
    // of a/c.rs does not count, so there is no cycle yet.
    assert_eq!(tree.cycles(), Vec::<Vec<String>>::new());
    write("a/mod.rs", "mod c;\npub struct A;\nuse c::helper;\n");
    write("b.rs", "pub struct B;\nuse super::a::A;\n");
    let tree = modules::Tree::read(src);
    // a/mod.rs -> a/c.rs -> b.rs -> a/mod.rs
    assert_eq!(tree.cycles(), [["a/c.rs", "b.rs", "a/mod.rs", "a/c.rs"]]);
}
