//! The packages for exec stages in other languages (`clients/`), installed
//! as a user installs them and tested that way, against this build of
//! `warren` and the real broker:
//!
//! - `clients/python` (PyPI `warren-stage`): `pip install` into a fresh
//!   venv, then its unittest suites run by that venv's interpreter from a
//!   folder outside the source tree (so `import warren_stage` is the
//!   installed package);
//! - `clients/php` (Composer `warren-pipelines/stage`): `composer install`
//!   of a project that requires it from a path repository (copied, not
//!   linked), then its test scripts with that project's autoloader.
//!
//! `.ci/test` installs what this needs from Debian's packages (`composer`,
//! `python3-venv` where the interpreter lacks venv, `php-cli`, `php-curl`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a command; panics with what it printed when it fails, saying what
/// to install when it cannot start. Returns what it printed.
fn run(program: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren"))
        .envs(env.iter().copied())
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

/// A folder of this test binary, made anew by each run (under
/// target/tmp: kept between runs for a look, never piling up).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("clients-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh venv with `pip install clients/python` done: its interpreter.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = scratch("venv");
        let venv = dir.to_str().unwrap();
        run("python3", &["-m", "venv", venv], root(), &[]);
        let package = root().join("clients/python");
        run(
            &format!("{venv}/bin/pip"),
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                package.to_str().unwrap(),
            ],
            &dir,
            &[],
        );
        dir.join("bin/python")
    })
}

/// A Composer project that required the package from a path repository:
/// its `vendor/autoload.php`.
fn autoload() -> &'static str {
    static AUTOLOAD: OnceLock<String> = OnceLock::new();
    AUTOLOAD.get_or_init(|| {
        let dir = scratch("composer");
        let manifest = serde_json::json!({
            "repositories": [
                {"type": "path", "url": root().join("clients/php"), "options": {"symlink": false}},
                {"packagist.org": false}
            ],
            "require": {"warren-pipelines/stage": "*@dev"}
        });
        std::fs::write(dir.join("composer.json"), manifest.to_string()).unwrap();
        run(
            "composer",
            &["install", "--no-interaction", "--no-progress"],
            &dir,
            &[
                ("COMPOSER_ALLOW_SUPERUSER", "1"),
                ("COMPOSER_HOME", dir.join(".composer").to_str().unwrap()),
            ],
        );
        dir.join("vendor/autoload.php")
            .to_str()
            .unwrap()
            .to_string()
    })
}

/// Runs one Python test module of `clients/python/tests` with the venv's
/// interpreter, from outside the source tree.
fn python_suite(pattern: &str) {
    let tests = root().join("clients/python/tests");
    let said = run(
        python().to_str().unwrap(),
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            tests.to_str().unwrap(),
            "-p",
            pattern,
            "-v",
        ],
        &std::env::temp_dir(),
        &[],
    );
    assert!(
        ran(&said) > 0,
        "the Python suite {pattern} ran no test:\n{said}"
    );
}

/// Runs one PHP test script of `clients/php/tests` with the Composer
/// project's autoloader.
fn php_suite(script: &str) {
    let path = root().join("clients/php/tests").join(script);
    let said = run(
        "php",
        &[path.to_str().unwrap()],
        &std::env::temp_dir(),
        &[("WARREN_PHP_AUTOLOAD", autoload())],
    );
    assert!(
        ran(&said) > 0,
        "the PHP suite {script} ran no check:\n{said}"
    );
}

#[test]
fn a_suite_that_ran_nothing_is_seen() {
    assert_eq!(ran("\n----\nRan 0 tests in 0.000s\n\nOK\n"), 0);
    assert_eq!(ran("Ran 12 tests in 3.1s\nOK"), 12);
    assert_eq!(ran("ok - one\nnot ok - two\nok - three\n"), 2);
    assert_eq!(ran("all passed\n"), 0);
}

#[test]
fn python_worker() {
    python_suite("test_worker.py");
}

#[test]
fn python_testing() {
    python_suite("test_testing.py");
}

#[test]
fn python_client() {
    python_suite("test_client.py");
}

#[test]
fn python_recipes() {
    python_suite("test_recipes.py");
}

#[test]
fn php_testing() {
    php_suite("testing.php");
}

#[test]
fn php_worker() {
    php_suite("worker.php");
}

#[test]
fn php_client() {
    php_suite("client.php");
}

#[test]
fn php_recipes() {
    php_suite("recipes.php");
}
