//! The pipeline file as written: serde structs that accept exactly the
//! documented keys and nothing more. Durations, rate limits and names stay
//! strings here and numbers accept any number, so that validation can check
//! them all and report every problem at once.

use indexmap::IndexMap;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `pipeline:` and `stages:`"
)]
pub(crate) struct RawFile {
    pub pipeline: Option<String>,
    pub broker: Option<RawBroker>,
    pub jobs: Option<RawJobs>,
    pub schedules: Option<IndexMap<String, Option<RawSchedule>>>,
    pub serve: Option<RawServe>,
    pub defaults: Option<RawStage>,
    pub stages: Option<IndexMap<String, Option<RawStage>>>,
}

/// `broker:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with url and ack_timeout")]
pub(crate) struct RawBroker {
    pub url: Option<String>,
    pub urls: Option<Vec<String>>,
    pub ack_timeout: Option<Text>,
}

/// `jobs:`
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with track, keep, callback, result and result_max"
)]
pub(crate) struct RawJobs {
    pub track: Option<bool>,
    pub keep: Option<Text>,
    pub callback: Option<String>,
    pub result: Option<String>,
    pub result_max: Option<Text>,
}

/// A schedule under `schedules:`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with cron, timezone, stage, body or input, and missed"
)]
pub(crate) struct RawSchedule {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub stage: Option<String>,
    pub body: Option<serde_json::Value>,
    pub input: Option<String>,
    pub missed: Option<String>,
}

/// `serve:`
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with token, tokens, tls, max_backlog, allow_actions and hosts"
)]
pub(crate) struct RawServe {
    pub token: Option<String>,
    pub tokens: Option<RawTokens>,
    pub tls: Option<RawTls>,
    pub max_backlog: Option<Number>,
    pub allow_actions: Option<bool>,
    pub hosts: Option<Vec<String>>,
}

/// `serve.tokens:`
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with ingest, read and admin (a token each)"
)]
pub(crate) struct RawTokens {
    pub ingest: Option<String>,
    pub read: Option<String>,
    pub admin: Option<String>,
}

/// `serve.tls:`
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with cert and key (paths to PEM files)"
)]
pub(crate) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A stage, and `defaults:` (which may hold only the settings, not the kind
/// or the outputs).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a stage mapping")]
pub(crate) struct RawStage {
    pub command: Option<Vec<String>>,
    pub exec: Option<RawExec>,
    pub http: Option<RawHttp>,
    pub sink: Option<RawSink>,
    pub gather: Option<RawGather>,
    pub outputs: Option<Vec<String>>,
    pub prefetch: Option<Number>,
    pub concurrency: Option<Number>,
    pub timeout: Option<Text>,
    pub retry: Option<RawRetry>,
    pub queue: Option<RawQueue>,
    pub scale: Option<RawScale>,
    pub rate_limit: Option<Text>,
}

impl RawStage {
    /// True when the key that holds a stage's kind, or `outputs`, is set.
    pub fn has(&self, key: &str) -> bool {
        match key {
            "command" => self.command.is_some(),
            "exec" => self.exec.is_some(),
            "http" => self.http.is_some(),
            "sink" => self.sink.is_some(),
            "gather" => self.gather.is_some(),
            "outputs" => self.outputs.is_some(),
            _ => false,
        }
    }
}

/// `retry:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with attempts and backoff")]
pub(crate) struct RawRetry {
    pub attempts: Option<Number>,
    pub backoff: Option<Vec<Text>>,
}

/// `queue:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with type and delivery_limit"
)]
pub(crate) struct RawQueue {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub delivery_limit: Option<Number>,
}

/// `scale:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with min, max, backlog_per_worker and idle"
)]
pub(crate) struct RawScale {
    pub min: Option<Number>,
    pub max: Option<Number>,
    pub backlog_per_worker: Option<Number>,
    pub idle: Option<Text>,
}

/// `http:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with method, url, body, headers, timeout, emit, idempotency_key and max_response"
)]
pub(crate) struct RawHttp {
    pub method: Option<String>,
    pub url: Option<String>,
    pub body: Option<serde_json::Value>,
    pub headers: Option<IndexMap<String, String>>,
    pub timeout: Option<Text>,
    pub emit: Option<String>,
    /// A header name, `true` (the default name) or `false` (none).
    pub idempotency_key: Option<serde_json::Value>,
    pub max_response: Option<Text>,
}

/// `exec:` a list (the program and its arguments), or a mapping with the
/// command and its environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawExec {
    Argv(Vec<String>),
    Full(RawExecFull),
}

/// `exec: { command: [...], env: {...}, max_messages: N, max_memory: SIZE }`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with command, env, max_messages and max_memory"
)]
pub(crate) struct RawExecFull {
    pub command: Option<Vec<String>>,
    pub env: Option<IndexMap<String, String>>,
    pub max_messages: Option<Number>,
    pub max_memory: Option<Text>,
}

/// `sink:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with path or postgres")]
pub(crate) struct RawSink {
    pub path: Option<String>,
    pub postgres: Option<RawPostgres>,
}

/// `sink: { postgres: ... }`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with url, table, id, body, columns and batch"
)]
pub(crate) struct RawPostgres {
    pub url: Option<String>,
    pub table: Option<String>,
    pub id: Option<String>,
    pub body: Option<String>,
    pub columns: Option<IndexMap<String, String>>,
    pub batch: Option<Number>,
}

/// `gather: {}` (it has no settings yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an empty mapping, {}")]
pub(crate) struct RawGather {}

/// Any number as written; validation checks that it is whole and in range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration or rate limit as written: text, or a bare number (which
/// validation then rejects with a hint to add the unit).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Text(pub String);

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("text like `5s` or `20/s`")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
