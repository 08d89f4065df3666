//! The command line (DESIGN.md, "Command line").

use std::{path::PathBuf, time::Duration};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
    /// Run, restart and scale worker processes until SIGTERM/SIGINT (then
    /// drain); SIGHUP re-reads the file.
    Supervise {
        /// The pipeline file.
        file: PathBuf,
        /// Only these stages (comma-separated).
        #[arg(long, value_delimiter = ',')]
        stages: Option<Vec<String>>,
        /// Time between looks at the queues.
        #[arg(long, default_value = "1s", value_parser = duration)]
        poll: Duration,
    },
    /// Per stage: ready, in flight, retrying, consumers, dead letters, and the
    /// workers of this box's supervisors.
    Status {
        /// The pipeline file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses a duration argument (`500ms`, `2s`, `1m`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let parsed = warren::duration::parse(text)?;
    if parsed.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(parsed)
}
