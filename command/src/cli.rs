//! The command line (DESIGN.md, "Command line").

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// RabbitMQ worker pipelines declared in one YAML file.
#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version = env!("WARREN_VERSION"),
    about,
    propagate_version = true
)]
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
    /// Internal: the guard of an exec program's process group (see
    /// `subprocess::guard`); the worker starts it.
    #[command(name = "__guard", hide = true)]
    Guard,
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
        /// Also serve the HTTP routes of `warren serve` (metrics, health,
        /// ingest, tickets) on this address.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Publish one message per JSON line of INPUT (or stdin) to a stage, each
    /// confirmed by the broker. A file with bad lines is refused whole.
    Send {
        /// The pipeline file.
        file: PathBuf,
        /// The stage to send to.
        stage: String,
        /// JSON lines; `-` or nothing for stdin.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// Use this field of each message as its id, so that sending the
        /// same file again is recognisable downstream (the sink writes each
        /// id once).
        #[arg(long)]
        id_field: Option<String>,
        /// Send the good lines of a file that has bad ones.
        #[arg(long)]
        skip_bad: bool,
        /// Have each message handled this long after it is sent (`30s`,
        /// `2h`, up to 30 days); it waits on the broker meanwhile.
        #[arg(long, value_parser = delay, conflicts_with = "at")]
        delay: Option<Duration>,
        /// Have the messages handled at this time or later (RFC 3339, like
        /// `2026-12-24T18:00:00Z`, up to 30 days ahead).
        #[arg(long, value_parser = at)]
        at: Option<u64>,
    },
    /// Declare, send INPUT to the entry stage, supervise until everything is
    /// processed, and print a summary; exit 1 if anything was dead-lettered.
    /// Interrupted, the same command resumes where it stopped.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// JSON lines to send (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// The stage that receives the input (default: the entry stage).
        #[arg(long)]
        stage: Option<String>,
        /// Use this field of each input as its message id.
        #[arg(long)]
        id_field: Option<String>,
        /// Send the good lines of an input that has bad ones.
        #[arg(long)]
        skip_bad: bool,
        /// Forget an earlier run of the same input and send all of it.
        #[arg(long)]
        fresh: bool,
    },
    /// Wait until every queue of the pipeline (stage, retry) is empty and
    /// nothing is in flight; exit 1 on timeout with what is left.
    Drain {
        /// The pipeline file.
        file: PathBuf,
        /// Give up after this long.
        #[arg(long, value_parser = duration)]
        timeout: Option<Duration>,
    },
    /// What became of a job (pipelines with `jobs.track`): its state, per
    /// stage counts and dead letters.
    Job {
        /// The pipeline file.
        file: PathBuf,
        /// The job's id (the id of the message that started it).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Wait until the job is done, failed or cancelled, at most this long.
        #[arg(long, value_parser = duration)]
        wait: Option<Duration>,
        /// Cancel the job: its queued messages are dropped, running
        /// handlers see it, and it settles as cancelled.
        #[arg(long)]
        cancel: bool,
    },
    /// Pauses a stage on every box: its workers take no new message (what
    /// they handle finishes) and keep their connections, until `warren
    /// resume`. The state is kept on the broker.
    Pause {
        /// The pipeline file.
        file: PathBuf,
        /// The stage to pause.
        stage: String,
    },
    /// Resumes a paused stage on every box.
    Resume {
        /// The pipeline file.
        file: PathBuf,
        /// The stage to resume.
        stage: String,
    },
    /// Replaces a stage's workers (every stage's without STAGE) one at a
    /// time on every box, each new worker ready before an old one drains.
    Restart {
        /// The pipeline file.
        file: PathBuf,
        /// The stage to restart (every stage when left out).
        stage: Option<String>,
    },
    /// The schedules (`schedules:`) with their last and next ticks.
    Schedule {
        /// The pipeline file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The HTTP front door: ingest, job tickets, metrics and health
    /// (DESIGN.md, HTTP) until SIGTERM or SIGINT.
    Serve {
        /// The pipeline file; several files, or a folder, serve several
        /// pipelines (each under /p/{pipeline}/).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Inspect, re-send or drop the dead letters of a stage.
    Dlq {
        /// The pipeline file.
        file: PathBuf,
        /// The stage.
        stage: String,
        /// What to do.
        #[arg(value_enum)]
        action: crate::commands::dlq::DlqAction,
        /// At most this many (list: 50 by default; replay and purge: all).
        #[arg(long)]
        limit: Option<usize>,
        /// The message id to show whole (`show`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Run one worker of a built-in (http, sink, gather) or exec stage; the
    /// supervisor starts these, and a platform such as Kubernetes can too.
    Worker {
        /// The pipeline file.
        file: PathBuf,
        /// The stage to serve.
        #[arg(long)]
        stage: String,
        /// Serve `/healthz` (200 while running) and `/readyz` (200 while
        /// connected and consuming, else 503) on ADDR, e.g. 0.0.0.0:8081
        /// (also `WARREN_HEALTH`).
        #[arg(long, value_name = "ADDR")]
        health: Option<SocketAddr>,
        /// How long messages in flight get to finish after SIGTERM, e.g.
        /// 25s (also `WARREN_GRACE`; default: the stage timeout plus 5s).
        #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
        grace: Option<Duration>,
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
    /// Make a new pipeline folder: pipeline.yaml, a worker in LANG, an input
    /// and a README with the commands that run it. DIR must not exist or be
    /// empty.
    Init {
        /// The folder to make; the pipeline is named after it.
        dir: PathBuf,
        /// The worker's language.
        #[arg(long, value_enum, default_value_t = crate::commands::init::Lang::Python)]
        lang: crate::commands::init::Lang,
    },
    /// Write the man pages into DIR (for packaging).
    #[command(hide = true)]
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A delay for `--delay`: a duration of at most 30 days.
pub fn delay(text: &str) -> Result<Duration, String> {
    warren::delay::parse_delay(text)
}

/// A time for `--at`: RFC 3339, at most 30 days ahead (ms since the epoch).
pub fn at(text: &str) -> Result<u64, String> {
    let at = warren::delay::parse_at(text)?;
    warren::delay::check(at, warren::message::epoch_ms())?;
    Ok(at)
}

/// Parses a duration argument (`500ms`, `2s`, `1m`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let parsed = warren::duration::parse(text)?;
    if parsed.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(parsed)
}

/// Parses `--grace`.
fn parse_grace(text: &str) -> Result<Duration, String> {
    warren::duration::parse(text)
}
