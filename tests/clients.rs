//! The helpers for exec stages in other languages (`clients/`), each with
//! its own test suite run here against this build of `warren` and the real
//! broker: `python3 -m unittest` for `clients/python`, `php` on a test
//! script for `clients/php` (`.ci/test` installs `php-cli` when missing).

use std::{path::Path, process::Command};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a helper's test suite; its output is shown when it fails. Returns
/// what it printed.
fn suite(program: &str, args: &[&str]) -> String {
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
    said
}

/// How many tests a suite says it ran: unittest's `Ran N tests`, or the
/// number of `ok - ` lines of a TAP-like script. A suite that ran nothing
/// has not passed (Python 3.11's unittest exits 0 when it discovers no
/// test).
fn ran(said: &str) -> usize {
    let unittest = said
        .lines()
        .find_map(|line| line.strip_prefix("Ran ")?.split(' ').next()?.parse().ok());
    unittest.unwrap_or_else(|| said.lines().filter(|l| l.starts_with("ok - ")).count())
}

#[test]
fn a_suite_that_ran_nothing_is_seen() {
    assert_eq!(ran("\n----\nRan 0 tests in 0.000s\n\nOK\n"), 0);
    assert_eq!(ran("Ran 12 tests in 3.1s\nOK"), 12);
    assert_eq!(ran("ok - one\nnot ok - two\nok - three\n"), 2);
    assert_eq!(ran("all passed\n"), 0);
}

#[test]
fn the_python_helper_passes_its_tests() {
    let said = suite(
        "python3",
        &["-m", "unittest", "discover", "-s", "clients/python", "-v"],
    );
    assert!(ran(&said) > 0, "the Python suite ran no test:\n{said}");
}

#[test]
fn the_php_helper_passes_its_tests() {
    let said = suite("php", &["clients/php/test.php"]);
    assert!(ran(&said) > 0, "the PHP suite ran no check:\n{said}");
}
