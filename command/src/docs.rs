//! Man pages and shell completions, generated from the command line's own
//! definition (`cli.rs`) so they never disagree with `--help`. Packaging
//! runs the hidden commands `warren man DIR` and `warren completions SHELL`
//! (see packaging/build-deb.sh).

use std::{io::Write as _, path::Path, process::ExitCode};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::{cli::Cli, exit};

/// Writes `warren.1` and one page per visible command (`warren-send.1`, ...)
/// into `dir`, creating it if missing, and lists them on stdout.
pub fn man(dir: &Path) -> ExitCode {
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
        .and_then(|()| std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>());
    match result {
        Ok(entries) => {
            let mut names: Vec<_> = entries.iter().map(|entry| entry.path()).collect();
            names.sort();
            for name in names {
                out!("{}", name.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            err!(
                "error: cannot write the man pages into {}: {error}",
                dir.display()
            );
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "warren", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            err!("error: cannot write the completions: {error}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
