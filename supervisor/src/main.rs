//! `warren`: validate, declare, supervise and feed RabbitMQ worker pipelines.

mod cli;
mod commands;
mod exit;
mod signals;
mod supervise;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = cli.log_format == LogFormat::Json;
    warren::logging::init(json_logs);
    if let Command::Validate { file } = &cli.command {
        return commands::validate::run(file);
    }
    // One thread: the supervisor's children get SIGTERM when the thread that
    // started them ends (PR_SET_PDEATHSIG), which must be the process's life.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Validate { .. } => unreachable!("handled above"),
            Command::Declare { file, dry_run } => commands::declare::run(&file, dry_run).await,
            Command::Supervise { file, stages, poll } => {
                commands::supervise::run(&file, stages, poll, json_logs).await
            }
            Command::Status { file, json } => commands::status::run(&file, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::code_for(&error)
        }
    }
}
