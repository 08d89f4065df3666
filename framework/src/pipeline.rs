//! The validated pipeline: what the rest of warren is built from.
//!
//! A [`Pipeline`] only exists once a file passed validation
//! ([`crate::config::load`]), so code that receives one may rely on every
//! rule checked there: names are valid, outputs exist and form no cycle,
//! numbers are in range, timeouts are below the broker's ack timeout.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

pub use crate::front::{Scope, Serve, Tls, Tokens};
use crate::{broker::BrokerUrls, rate::RateLimit, retry::RetryPolicy};

/// A validated pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// The pipeline name; prefixes every broker object.
    pub name: String,
    /// Where the broker is and how it is configured.
    pub broker: Broker,
    /// Job tracking (`jobs:`).
    pub jobs: Jobs,
    /// The HTTP front door (`serve:`).
    pub serve: Serve,
    /// The schedules (`schedules:`), in file order.
    pub schedules: Vec<crate::schedule::Schedule>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
    /// The file the pipeline was read from (absolute).
    pub source: PathBuf,
}

/// A stage name that the pipeline does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pipeline `{pipeline}` has no stage `{stage}`; its stages are: {known}")]
pub struct UnknownStage {
    /// The pipeline.
    pub pipeline: String,
    /// The name asked for.
    pub stage: String,
    /// The stages it has.
    pub known: String,
}

/// Job tracking settings (`jobs:`; DESIGN.md, *Jobs*).
#[derive(Clone, Debug, PartialEq)]
pub struct Jobs {
    /// Workers record each handling in the job stream.
    pub track: bool,
    /// How long a job's record is kept after its last change.
    pub keep: Duration,
    /// Where settled jobs are POSTed when their producer gave no URL.
    pub callback: Option<String>,
    /// The stage whose bodies are a job's result (`jobs.result`).
    pub result: Option<String>,
    /// Bytes of result a job keeps at most (`jobs.result_max`, 64 KiB).
    pub result_max: u64,
}

/// `jobs.result_max` when not given.
pub const RESULT_MAX: u64 = 64 * 1024;

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs {
            track: false,
            keep: Duration::from_secs(7 * 24 * 3600),
            callback: None,
            result: None,
            result_max: RESULT_MAX,
        }
    }
}

/// Broker settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Broker {
    /// The broker's nodes (`broker.url` or `broker.urls`; passwords are
    /// never displayed).
    pub urls: BrokerUrls,
    /// The broker's delivery-acknowledgement timeout (`consumer_timeout`);
    /// stage timeouts must stay below it.
    pub ack_timeout: Duration,
}

/// One stage of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Stage name, unique in the pipeline.
    pub name: String,
    /// What runs the stage.
    pub kind: StageKind,
    /// Stages that receive what this stage emits.
    pub outputs: Vec<String>,
    /// Broker-side limit of unacknowledged messages per worker.
    pub prefetch: u16,
    /// Messages handled at once per worker process.
    pub concurrency: u32,
    /// Time allowed per message; expiring is a failure.
    pub timeout: Duration,
    /// How failures are retried.
    pub retry: RetryPolicy,
    /// The stage queue's type and limits.
    pub queue: QueueSpec,
    /// How many worker processes the supervisor runs.
    pub scale: Scale,
    /// Messages per period shared by all workers of the stage.
    pub rate_limit: Option<RateLimit>,
}

/// What runs a stage.
#[derive(Clone, Debug, PartialEq)]
pub enum StageKind {
    /// A worker program built on the framework; the supervisor starts it.
    Command(CommandSpec),
    /// A program in any language speaking JSON lines on stdin and stdout;
    /// the built-in worker runs it.
    Exec(ExecSpec),
    /// Built in: one HTTP call per message.
    Http(HttpSpec),
    /// Built in: each message written once as a JSON line.
    Sink(SinkSpec),
    /// Built in (`sink: { postgres: ... }`): each message written once as a
    /// row of a PostgreSQL table, in batches, acknowledged after COMMIT.
    Postgres(PostgresSpec),
    /// Built in: holds a job's messages until nothing else of the job is
    /// in flight upstream, then emits them as one (DESIGN.md, *Jobs*).
    Gather,
}

impl StageKind {
    /// The key that selects this kind in the pipeline file.
    pub fn label(&self) -> &'static str {
        match self {
            StageKind::Command(_) => "command",
            StageKind::Exec(_) => "exec",
            StageKind::Http(_) => "http",
            StageKind::Sink(_) | StageKind::Postgres(_) => "sink",
            StageKind::Gather => "gather",
        }
    }
}

/// A worker program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program followed by its arguments.
    pub argv: Vec<String>,
}

/// An `exec` stage's program: started once per worker and kept running,
/// one JSON line per message on its stdin, its answers on its stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program followed by its arguments.
    pub argv: Vec<String>,
    /// Variables of its environment besides the few it inherits; a value
    /// `${NAME}` is the worker's variable `NAME`.
    pub env: BTreeMap<String, String>,
    /// When a child is replaced by a fresh one; never by default.
    pub recycle: Recycle,
}

/// When an `exec` stage's child is drained and replaced (`max_messages`,
/// `max_memory`): a leaking program is restarted without a message failing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recycle {
    /// After it was given this many messages.
    pub max_messages: Option<u64>,
    /// When its resident size (bytes) is above this.
    pub max_memory: Option<u64>,
}

/// The built-in HTTP stage.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSpec {
    /// HTTP method, upper case.
    pub method: String,
    /// URL template; `{field}` is replaced by the message field, URL-encoded.
    pub url: String,
    /// Body template; `None` sends the message itself as JSON.
    pub body: Option<serde_json::Value>,
    /// Request headers; values may name an environment variable.
    pub headers: BTreeMap<String, HeaderValue>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// What the stage emits for a 2xx answer.
    pub emit: HttpEmit,
    /// The request header that carries the message id (`Idempotency-Key`
    /// by default), so an API that dedupes can make a repeated call
    /// harmless; `None` sends none.
    pub idempotency_key: Option<String>,
    /// Largest answer body read, in bytes; a larger answer is a failure.
    pub max_response: u64,
}

/// A header value: literal, or read from the environment when the worker
/// starts (never logged).
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Written in the file.
    Literal(String),
    /// `${NAME}`: read from the environment variable `NAME`.
    Env(String),
}

impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderValue::Literal(_) => f.write_str("Literal(***)"),
            HeaderValue::Env(name) => write!(f, "Env({name})"),
        }
    }
}

/// What an HTTP stage emits for a 2xx answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpEmit {
    /// The response's JSON body.
    Response,
    /// The input message with the response's fields merged over it.
    Merge,
}

/// The built-in sink stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSpec {
    /// The JSON-lines file (a relative path in the pipeline file is
    /// resolved from the file's folder).
    pub path: PathBuf,
}

/// The built-in PostgreSQL sink (`sink: { postgres: ... }`): each message
/// one row of `table`, its id in `id` (a unique column), its body in the
/// `body` column and/or its fields in `columns`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// The connection URL as written (`postgres://...`, or `${NAME}` to
    /// read it from the worker's environment); `None`: the `PG*`
    /// variables and libpq's defaults alone. Never shown whole: see
    /// [`PostgresSpec::shown_url`].
    pub url: Option<String>,
    /// The table's schema, when the file names one (`schema.table`).
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// The column that holds the message id (text, unique): the
    /// `ON CONFLICT` target that makes each id one row.
    pub id: String,
    /// The `jsonb` (or `json`) column that holds the whole body.
    pub body: Option<String>,
    /// Column -> the body's field it is filled from: a field name, or a
    /// JSON pointer (`/user/agent`) for a nested one.
    pub columns: Vec<(String, String)>,
    /// Most rows written in one transaction.
    pub batch: usize,
}

impl PostgresSpec {
    /// The URL as it may be shown: its password replaced by `***`.
    pub fn shown_url(&self) -> String {
        match &self.url {
            None => "(from the PG* variables)".into(),
            Some(text) => match url::Url::parse(text) {
                Ok(mut url) if url.password().is_some() => {
                    let _ = url.set_password(Some("***"));
                    url.to_string()
                }
                Ok(url) => url.to_string(),
                Err(_) if text.starts_with("${") => text.clone(),
                Err(_) => "(a URL that does not parse)".into(),
            },
        }
    }

    /// The table as SQL: each part quoted.
    pub fn table_sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.table)),
            None => quote(&self.table),
        }
    }
}

/// `name` as a quoted SQL identifier (taken exactly as written).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl std::fmt::Debug for PostgresSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSpec")
            .field("url", &self.shown_url())
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("id", &self.id)
            .field("body", &self.body)
            .field("columns", &self.columns)
            .field("batch", &self.batch)
            .finish()
    }
}

/// Queue type and limits of a stage queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Quorum (replicated, the default) or classic.
    pub kind: QueueKind,
    /// Quorum queues only: deliveries after which a message that keeps
    /// coming back (a worker crashing on it) goes to the dead-letter queue.
    pub delivery_limit: Option<u32>,
}

/// RabbitMQ queue type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// Replicated, Raft-based; the default.
    Quorum,
    /// Classic queue.
    Classic,
}

impl QueueKind {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Quorum => "quorum",
            QueueKind::Classic => "classic",
        }
    }
}

/// Process scaling of a stage on one box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Fewest worker processes (0 scales to zero when idle).
    pub min: u32,
    /// Most worker processes on one box.
    pub max: u32,
    /// Ready messages one worker is expected to handle.
    pub backlog_per_worker: u32,
    /// How long a stage must be idle or over-provisioned before scaling down.
    pub idle: Duration,
}

impl Pipeline {
    /// The stage of that name.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// The stage called `name`, or an error naming the stages there are.
    pub fn require_stage(&self, name: &str) -> Result<&Stage, UnknownStage> {
        self.stage(name).ok_or_else(|| UnknownStage {
            pipeline: self.name.clone(),
            stage: name.to_string(),
            known: self.stage_names().join(", "),
        })
    }

    /// The stage names, in file order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages
            .iter()
            .map(|stage| stage.name.as_str())
            .collect()
    }

    /// Stages that no other stage outputs to: where input enters.
    pub fn entry_stages(&self) -> Vec<&Stage> {
        self.stages
            .iter()
            .filter(|stage| {
                !self
                    .stages
                    .iter()
                    .any(|other| other.outputs.contains(&stage.name))
            })
            .collect()
    }

    /// The stages from which a message can reach `stage` (not itself: the
    /// graph has no cycles).
    pub fn upstream(&self, stage: &str) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        let mut todo = vec![stage.to_string()];
        while let Some(next) = todo.pop() {
            for from in &self.stages {
                if from.outputs.contains(&next) && found.insert(from.name.clone()) {
                    todo.push(from.name.clone());
                }
            }
        }
        found
    }

    /// A one-line picture of the stage graph: `lookup -> grade -> results`.
    pub fn graph(&self) -> String {
        let edges: Vec<String> = self
            .stages
            .iter()
            .map(|stage| {
                if stage.outputs.is_empty() {
                    format!("{} ({})", stage.name, stage.kind.label())
                } else {
                    format!(
                        "{} ({}) -> {}",
                        stage.name,
                        stage.kind.label(),
                        stage.outputs.join(", ")
                    )
                }
            })
            .collect();
        edges.join("; ")
    }
}
