//! The command line (DESIGN.md, "Command line").

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// RabbitMQ worker pipelines declared in one YAML file.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline file and list every problem; changes nothing.
    Validate {
        /// The pipeline file.
        file: PathBuf,
    },
    /// Declare the pipeline's exchange, queues and bindings; safe to repeat.
    Declare {
        /// The pipeline file.
        file: PathBuf,
        /// Print what would be declared, without connecting.
        #[arg(long)]
        dry_run: bool,
    },
}
