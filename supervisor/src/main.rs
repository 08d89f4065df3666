//! `warren`: validate, declare, supervise and feed RabbitMQ worker pipelines.

mod cli;
mod commands;
mod exit;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    warren::logging::init(matches!(cli.log_format, cli::LogFormat::Json));
    if let Command::Validate { file } = &cli.command {
        return commands::validate::run(file);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
