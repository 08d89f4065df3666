//! The helpers for exec stages in other languages (`clients/`), each with
//! its own test suite run here against this build of `warren` and the real
//! broker: `python3 -m unittest` for `clients/python`, `php` on a test
//! script for `clients/php` (`.ci/test` installs `php-cli` when missing).

use std::{path::Path, process::Command};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a helper's test suite; its output is shown when it fails.
fn suite(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): install it (`.ci/test` does, from Debian's packages)"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{program} {}` failed:\n{said}",
        args.join(" ")
    );
}

#[test]
fn the_python_helper_passes_its_tests() {
    suite(
        "python3",
        &["-m", "unittest", "discover", "-s", "clients/python", "-v"],
    );
}

#[test]
fn the_php_helper_passes_its_tests() {
    suite("php", &["clients/php/test.php"]);
}
