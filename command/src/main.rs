//! `warren`: validate, declare, supervise and feed RabbitMQ worker pipelines.

/// `println!` that ignores a closed stdout (`warren status | head`): output
/// is for people and scripts, never a reason to panic mid-run.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod builtin;
mod cli;
mod commands;
mod digest;
mod docs;
mod exit;
mod feed;
mod input;
mod progress;
mod signals;
mod subprocess;
mod supervise;

use std::{io::Write, process::ExitCode};

use clap::Parser;

use cli::{Cli, Command, LogFormat};

/// The log filter of `warren run` when `RUST_LOG` is unset.
pub const RUN_FILTER: &str = "warn,lapin=off";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Guard = cli.command {
        return subprocess::guard::run();
    }
    let json_logs = cli.log_format == LogFormat::Json;
    // `warren run` shows progress bars and a summary; its log (and its
    // workers') only says what needs attention, unless RUST_LOG says more.
    let default_filter = match cli.command {
        Command::Run { .. } => RUN_FILTER,
        _ => warren::logging::DEFAULT_FILTER,
    };
    warren::logging::init_with_default(json_logs, default_filter);
    match &cli.command {
        Command::Validate { file } => return commands::validate::run(file),
        Command::Init { dir, lang } => return finish(commands::init::run(dir, *lang)),
        Command::Man { dir } => return docs::man(dir),
        Command::Completions { shell } => return docs::completions(*shell),
        _ => {}
    }
    // One thread for every command. For workers it is the cheapest: the AMQP
    // client has its own I/O thread, and on few cores more threads mostly
    // wake each other. For the supervisor it is required: its children get
    // SIGTERM when the thread that started them ends (PR_SET_PDEATHSIG),
    // which must therefore live as long as the process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            err!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Validate { .. }
            | Command::Man { .. }
            | Command::Completions { .. }
            | Command::Init { .. }
            | Command::Guard => unreachable!("handled above"),
            Command::Declare { file, dry_run } => commands::declare::run(&file, dry_run).await,
            Command::Supervise {
                file,
                stages,
                poll,
                http,
            } => commands::supervise::run(&file, stages, poll, json_logs, http).await,
            Command::Status { file, json } => commands::status::run(&file, json).await,
            Command::Worker {
                file,
                stage,
                health,
                grace,
            } => commands::worker::run(&file, &stage, health, grace).await,
            Command::Run {
                file,
                input,
                stage,
                id_field,
                skip_bad,
                fresh,
            } => {
                commands::run::run(commands::run::Args {
                    file,
                    input,
                    stage,
                    id_field,
                    skip_bad,
                    fresh,
                })
                .await
            }
            Command::Drain { file, timeout } => commands::drain::run(&file, timeout).await,
            Command::Job {
                file,
                id,
                json,
                wait,
                cancel,
            } => commands::job::run(&file, &id, json, wait, cancel).await,
            Command::Pause { file, stage } => commands::pause::run(&file, &stage, true).await,
            Command::Resume { file, stage } => commands::pause::run(&file, &stage, false).await,
            Command::Restart { file, stage } => {
                commands::restart::run(&file, stage.as_deref()).await
            }
            Command::Schedule { file, json } => commands::schedule::run(&file, json).await,
            Command::Serve { files, listen } => commands::serve::run(&files, listen).await,
            Command::Dlq {
                file,
                stage,
                action,
                limit,
                id,
            } => commands::dlq::run(&file, &stage, action, limit, id.as_deref()).await,
            Command::Send {
                file,
                stage,
                input,
                id_field,
                skip_bad,
                delay,
                at,
            } => {
                let when = match (delay, at) {
                    (Some(delay), _) => Some(warren::delay::When::After(delay)),
                    (None, Some(at)) => Some(warren::delay::When::At(at)),
                    (None, None) => None,
                };
                commands::send::run(&file, &stage, &input, id_field.as_deref(), skip_bad, when)
                    .await
            }
        }
    });
    finish(result)
}

/// The exit code of a command's result, its error printed.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Not eprintln!: a worker's stderr may be a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            exit::code_for(&error)
        }
    }
}
