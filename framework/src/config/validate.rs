//! From the raw file to a [`Pipeline`]: every rule, every problem collected.
//!
//! `defaults` apply field by field. A problem is reported at the path where
//! the offending value is written: `defaults.prefetch` when a stage inherits
//! it, `stages.grade.prefetch` when the stage sets it.

use std::{collections::BTreeMap, path::Path, time::Duration};

use super::{
    Problem,
    raw::{Number, RawFile, RawHttp, RawStage, Text},
};
use crate::{
    broker::{BrokerUrl, DEFAULT_URL},
    duration,
    pipeline::{
        Broker, CommandSpec, HeaderValue, HttpEmit, HttpSpec, Pipeline, QueueKind, QueueSpec,
        Scale, SinkSpec, Stage, StageKind,
    },
    rate::RateLimit,
    retry::RetryPolicy,
};

/// Values used when neither the stage nor `defaults` set a field.
pub mod defaults {
    use std::time::Duration;

    /// Unacknowledged messages per worker.
    pub const PREFETCH: u16 = 64;
    /// Messages handled at once per worker.
    pub const CONCURRENCY: u32 = 32;
    /// Time allowed per message.
    pub const TIMEOUT: Duration = Duration::from_secs(30);
    /// Attempts, the first included.
    pub const ATTEMPTS: u32 = 5;
    /// Delays between attempts.
    pub const BACKOFF: [Duration; 3] = [
        Duration::from_secs(1),
        Duration::from_secs(10),
        Duration::from_secs(60),
    ];
    /// Fewest workers per box.
    pub const SCALE_MIN: u32 = 1;
    /// Most workers per box.
    pub const SCALE_MAX: u32 = 4;
    /// Ready messages per worker.
    pub const BACKLOG_PER_WORKER: u32 = 200;
    /// Idle time before scaling down.
    pub const SCALE_IDLE: Duration = Duration::from_secs(60);
    /// RabbitMQ's default `consumer_timeout`.
    pub const ACK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    /// HTTP request timeout.
    pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Longest name of a pipeline or a stage: queue names are at most 255 bytes.
const MAX_NAME: usize = 64;
/// Longest retry delay: a week.
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks every rule; returns the pipeline or all the problems.
pub(crate) fn validate(raw: &RawFile, source: &Path) -> Result<Pipeline, Vec<Problem>> {
    let mut v = Validator::default();
    let name = match &raw.pipeline {
        Some(name) => {
            v.check_name("pipeline", name);
            name.clone()
        }
        None => {
            v.problem(
                "pipeline",
                "missing; name the pipeline, like `pipeline: grading`",
            );
            String::new()
        }
    };
    let broker = v.broker(raw);
    let empty = RawStage::default();
    let defaults = raw.defaults.as_ref().unwrap_or(&empty);
    for (key, set) in [
        ("command", defaults.command.is_some()),
        ("http", defaults.http.is_some()),
        ("sink", defaults.sink.is_some()),
        ("outputs", defaults.outputs.is_some()),
    ] {
        if set {
            v.problem(
                format!("defaults.{key}"),
                format!("`{key}` belongs to a stage, not to `defaults`"),
            );
        }
    }
    let raw_stages = raw.stages.clone().unwrap_or_default();
    if raw_stages.is_empty() {
        v.problem("stages", "no stages; a pipeline needs at least one stage");
    }
    let stage_names: Vec<&str> = raw_stages.keys().map(String::as_str).collect();
    let mut stages = Vec::new();
    for (stage_name, stage) in &raw_stages {
        v.check_name(&format!("stages.{stage_name}"), stage_name);
        let layers = Layers {
            stage: stage.as_ref().unwrap_or(&empty),
            defaults,
            path: format!("stages.{stage_name}"),
        };
        if let Some(stage) = v.stage(stage_name, &layers, &stage_names, broker.ack_timeout) {
            stages.push(stage);
        }
    }
    v.check_cycles(&raw_stages);
    if v.problems.is_empty() {
        Ok(Pipeline {
            name,
            broker,
            stages,
            source: source.to_path_buf(),
        })
    } else {
        let mut problems = v.problems;
        problems.dedup();
        Err(problems)
    }
}

/// A stage's settings over `defaults`: each field with the path it came from.
struct Layers<'a> {
    stage: &'a RawStage,
    defaults: &'a RawStage,
    path: String,
}

impl Layers<'_> {
    fn get<T>(&self, field: &str, read: impl Fn(&RawStage) -> Option<T>) -> Option<(T, String)> {
        match read(self.stage) {
            Some(value) => Some((value, format!("{}.{field}", self.path))),
            None => read(self.defaults).map(|value| (value, format!("defaults.{field}"))),
        }
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let problem = Problem::new(path, message);
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    fn check_name(&mut self, path: &str, name: &str) {
        let mut chars = name.chars();
        let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !starts_well || !rest_ok {
            self.problem(
                path,
                format!("`{name}` is not a valid name: use a lower-case letter, then lower-case letters, digits, `_` or `-`"),
            );
        } else if name.len() > MAX_NAME {
            self.problem(
                path,
                format!("`{name}` is longer than {MAX_NAME} characters"),
            );
        }
    }

    fn broker(&mut self, raw: &RawFile) -> Broker {
        let broker = raw.broker.as_ref();
        let text = broker
            .and_then(|b| b.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let url = BrokerUrl::parse(&text).unwrap_or_else(|error| {
            self.problem("broker.url", error);
            BrokerUrl::parse(DEFAULT_URL).expect("the default URL is valid")
        });
        let ack_timeout = match broker.and_then(|b| b.ack_timeout.as_deref()) {
            Some(text) => self
                .duration("broker.ack_timeout", text)
                .unwrap_or(defaults::ACK_TIMEOUT),
            None => defaults::ACK_TIMEOUT,
        };
        Broker { url, ack_timeout }
    }

    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match duration::parse(text) {
            Ok(d) if d.is_zero() => {
                self.problem(path, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(error) => {
                self.problem(path, error);
                None
            }
        }
    }

    fn whole(&mut self, path: &str, number: Number, min: u64, max: u64) -> Option<u64> {
        let n = number.0;
        if !n.is_finite() || n.fract() != 0.0 {
            self.problem(path, format!("`{n}` is not a whole number"));
            None
        } else if n < min as f64 || n > max as f64 {
            self.problem(
                path,
                format!("{n} is out of range: it must be between {min} and {max}"),
            );
            None
        } else {
            Some(n as u64)
        }
    }

    /// A whole number from the layers, or the default.
    fn number(
        &mut self,
        layers: &Layers<'_>,
        field: &str,
        read: impl Fn(&RawStage) -> Option<Number>,
        range: (u64, u64),
        default: u64,
    ) -> u64 {
        match layers.get(field, read) {
            Some((n, path)) => self.whole(&path, n, range.0, range.1).unwrap_or(default),
            None => default,
        }
    }

    fn layered_duration(
        &mut self,
        layers: &Layers<'_>,
        field: &str,
        read: impl Fn(&RawStage) -> Option<Text>,
        default: Duration,
    ) -> (Duration, Option<String>) {
        match layers.get(field, read) {
            Some((text, path)) => (self.duration(&path, &text).unwrap_or(default), Some(path)),
            None => (default, None),
        }
    }

    fn stage(
        &mut self,
        name: &str,
        layers: &Layers<'_>,
        all: &[&str],
        ack_timeout: Duration,
    ) -> Option<Stage> {
        let own = layers.stage;
        let path = &layers.path;
        let kind = self.kind(path, own);
        let outputs = own.outputs.clone().unwrap_or_default();
        for (i, output) in outputs.iter().enumerate() {
            if !all.contains(&output.as_str()) {
                self.problem(
                    format!("{path}.outputs[{i}]"),
                    format!(
                        "no stage is named `{output}`; the stages are: {}",
                        all.join(", ")
                    ),
                );
            } else if outputs[..i].contains(output) {
                self.problem(
                    format!("{path}.outputs[{i}]"),
                    format!("`{output}` is listed twice"),
                );
            }
        }
        if matches!(kind, Some(StageKind::Sink(_))) && !outputs.is_empty() {
            self.problem(
                format!("{path}.outputs"),
                "a sink stage emits nothing, so it has no outputs",
            );
        }
        let prefetch = self.number(
            layers,
            "prefetch",
            |s| s.prefetch,
            (1, 65_535),
            u64::from(defaults::PREFETCH),
        ) as u16;
        let concurrency = self.number(
            layers,
            "concurrency",
            |s| s.concurrency,
            (1, 10_000),
            u64::from(defaults::CONCURRENCY),
        ) as u32;
        let (timeout, timeout_path) =
            self.layered_duration(layers, "timeout", |s| s.timeout.clone(), defaults::TIMEOUT);
        let retry = self.retry(layers);
        let queue = self.queue(layers);
        let mut scale = self.scale(layers);
        if matches!(kind, Some(StageKind::Sink(_))) {
            // One process writes a sink file: one worker per box.
            if let Some(max) = own
                .scale
                .as_ref()
                .and_then(|s| s.max)
                .filter(|max| max.0 > 1.0)
            {
                self.problem(
                    format!("{path}.scale.max"),
                    format!(
                        "{} is more than 1: a sink stage writes one file, with one worker per box",
                        max.0
                    ),
                );
            }
            scale.min = scale.min.min(1);
            scale.max = 1;
        }
        let rate_limit = match layers.get("rate_limit", |s| s.rate_limit.clone()) {
            Some((text, path)) => RateLimit::parse(&text)
                .map_err(|error| self.problem(path, error))
                .ok(),
            None => None,
        };
        self.check_ack_timeout(
            path,
            timeout_path,
            timeout,
            prefetch,
            concurrency,
            rate_limit,
            ack_timeout,
        );
        if let Some(StageKind::Http(http)) = &kind
            && http.timeout > timeout
        {
            self.problem(
                format!("{path}.http.timeout"),
                format!(
                    "{} is longer than the stage timeout {}; the stage would time out first",
                    duration::format(http.timeout),
                    duration::format(timeout)
                ),
            );
        }
        Some(Stage {
            name: name.to_string(),
            kind: kind?,
            outputs,
            prefetch,
            concurrency,
            timeout,
            retry,
            queue,
            scale,
            rate_limit,
        })
    }

    fn kind(&mut self, path: &str, own: &RawStage) -> Option<StageKind> {
        let set: Vec<&str> = [
            ("command", own.command.is_some()),
            ("http", own.http.is_some()),
            ("sink", own.sink.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        match set.as_slice() {
            [] => {
                self.problem(
                    path,
                    "has no kind; give it exactly one of `command`, `http` or `sink`",
                );
                return None;
            }
            [_] => {}
            several => {
                self.problem(
                    path,
                    format!(
                        "has {}; a stage has exactly one kind",
                        several
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
                return None;
            }
        }
        if let Some(argv) = &own.command {
            if argv.first().is_none_or(|program| program.trim().is_empty()) {
                self.problem(format!("{path}.command"), "is empty; give the program and its arguments, like [target/release/my-worker, --flag]");
                return None;
            }
            return Some(StageKind::Command(CommandSpec { argv: argv.clone() }));
        }
        if let Some(http) = &own.http {
            return self
                .http(&format!("{path}.http"), http)
                .map(StageKind::Http);
        }
        let sink = own.sink.as_ref()?;
        match sink.path.as_deref().map(str::trim) {
            Some(file) if !file.is_empty() => Some(StageKind::Sink(SinkSpec { path: file.into() })),
            _ => {
                self.problem(
                    format!("{path}.sink.path"),
                    "missing; name the JSON-lines file, like `path: results.jsonl`",
                );
                None
            }
        }
    }

    fn http(&mut self, path: &str, raw: &RawHttp) -> Option<HttpSpec> {
        let before = self.problems.len();
        let method = raw
            .method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
            self.problem(
                format!("{path}.method"),
                format!("`{method}` is not one of GET, POST, PUT, PATCH, DELETE, HEAD"),
            );
        }
        let url = raw.url.clone().unwrap_or_default();
        if url.is_empty() {
            self.problem(
                format!("{path}.url"),
                "missing; give the URL to call, like http://127.0.0.1:8089/grade",
            );
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.problem(
                format!("{path}.url"),
                format!("`{url}` must start with http:// or https://"),
            );
        }
        let mut headers = BTreeMap::new();
        for (header, value) in raw.headers.iter().flatten() {
            let value = match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(var)
                    if !var.is_empty()
                        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    HeaderValue::Env(var.to_string())
                }
                Some(_) => {
                    self.problem(
                        format!("{path}.headers.{header}"),
                        "`${...}` must name an environment variable (letters, digits, `_`)",
                    );
                    continue;
                }
                None => HeaderValue::Literal(value.clone()),
            };
            headers.insert(header.clone(), value);
        }
        let timeout = match &raw.timeout {
            Some(text) => self
                .duration(&format!("{path}.timeout"), text)
                .unwrap_or(defaults::HTTP_TIMEOUT),
            None => defaults::HTTP_TIMEOUT,
        };
        let emit = match raw.emit.as_deref() {
            None | Some("response") => HttpEmit::Response,
            Some("merge") => HttpEmit::Merge,
            Some(other) => {
                self.problem(format!("{path}.emit"), format!("`{other}` is not one of `response` (the answer's JSON) or `merge` (the input with the answer's fields over it)"));
                HttpEmit::Response
            }
        };
        (self.problems.len() == before).then_some(HttpSpec {
            method,
            url,
            body: raw.body.clone(),
            headers,
            timeout,
            emit,
        })
    }

    fn retry(&mut self, layers: &Layers<'_>) -> RetryPolicy {
        let attempts = self.number(
            layers,
            "retry.attempts",
            |s| s.retry.as_ref()?.attempts,
            (1, 100),
            u64::from(defaults::ATTEMPTS),
        ) as u32;
        let backoff = match layers.get("retry.backoff", |s| s.retry.as_ref()?.backoff.clone()) {
            Some((texts, path)) => {
                if texts.is_empty() && attempts > 1 {
                    self.problem(&path, format!("is empty but retry.attempts is {attempts}; give at least one delay, like [1s, 10s, 1m]"));
                }
                texts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, text)| {
                        let item = format!("{path}[{i}]");
                        let delay = self.duration(&item, text)?;
                        if delay > MAX_DELAY {
                            self.problem(
                                item,
                                format!(
                                    "{} is longer than the longest retry delay, 7 days",
                                    text.0
                                ),
                            );
                            return None;
                        }
                        if delay.subsec_nanos() % 1_000_000 != 0 {
                            // Retry queues hold whole milliseconds (their TTL).
                            self.problem(
                                item,
                                format!(
                                    "{} is not a whole number of milliseconds; retry delays are kept on the broker in milliseconds, like 500ms or 1s",
                                    text.0
                                ),
                            );
                            return None;
                        }
                        Some(delay)
                    })
                    .collect()
            }
            None => defaults::BACKOFF.to_vec(),
        };
        RetryPolicy { attempts, backoff }
    }

    fn queue(&mut self, layers: &Layers<'_>) -> QueueSpec {
        let kind = match layers.get("queue.type", |s| s.queue.as_ref()?.kind.clone()) {
            None => QueueKind::Quorum,
            Some((text, path)) => {
                match text.as_str() {
                    "quorum" => QueueKind::Quorum,
                    "classic" => QueueKind::Classic,
                    other => {
                        self.problem(path, format!("`{other}` is not a queue type; use `quorum` (the default) or `classic`"));
                        QueueKind::Quorum
                    }
                }
            }
        };
        let delivery_limit =
            match layers.get("queue.delivery_limit", |s| s.queue.as_ref()?.delivery_limit) {
                None => None,
                Some((n, path)) => {
                    if kind == QueueKind::Classic {
                        self.problem(
                        &path,
                        "only quorum queues have a delivery limit; remove it or use `type: quorum`",
                    );
                    }
                    self.whole(&path, n, 1, 1_000_000).map(|n| n as u32)
                }
            };
        QueueSpec {
            kind,
            delivery_limit,
        }
    }

    fn scale(&mut self, layers: &Layers<'_>) -> Scale {
        let min = self.number(
            layers,
            "scale.min",
            |s| s.scale.as_ref()?.min,
            (0, 1000),
            u64::from(defaults::SCALE_MIN),
        ) as u32;
        let max_field = layers.get("scale.max", |s| s.scale.as_ref()?.max);
        let max = self.number(
            layers,
            "scale.max",
            |s| s.scale.as_ref()?.max,
            (1, 1000),
            u64::from(defaults::SCALE_MAX),
        ) as u32;
        if min > max {
            let path = max_field.map_or_else(
                || format!("{}.scale.min", layers.path),
                |(_, path)| path.replace(".max", ".min"),
            );
            self.problem(path, format!("scale.min {min} is above scale.max {max}"));
        }
        let backlog_per_worker = self.number(
            layers,
            "scale.backlog_per_worker",
            |s| s.scale.as_ref()?.backlog_per_worker,
            (1, 10_000_000),
            u64::from(defaults::BACKLOG_PER_WORKER),
        ) as u32;
        let (idle, _) = self.layered_duration(
            layers,
            "scale.idle",
            |s| s.scale.as_ref()?.idle.clone(),
            defaults::SCALE_IDLE,
        );
        Scale {
            min,
            max,
            backlog_per_worker,
            idle,
        }
    }

    /// A message can stay unacknowledged while it waits behind the others
    /// a worker holds (prefetch), while it waits for the rate limit, and
    /// while it is handled; all of that must stay below the broker's
    /// acknowledgement timeout or the broker closes the channel.
    #[allow(clippy::too_many_arguments)]
    fn check_ack_timeout(
        &mut self,
        path: &str,
        timeout_path: Option<String>,
        timeout: Duration,
        prefetch: u16,
        concurrency: u32,
        rate: Option<RateLimit>,
        ack_timeout: Duration,
    ) {
        let timeout_path = timeout_path.unwrap_or_else(|| format!("{path}.timeout"));
        let fix = "lower it, or set broker.ack_timeout to the broker's consumer_timeout if that is longer";
        if timeout >= ack_timeout {
            self.problem(timeout_path, format!("{} is at or above the broker's acknowledgement timeout {} (broker.ack_timeout); {fix}", duration::format(timeout), duration::format(ack_timeout)));
            return;
        }
        let rounds = u32::from(prefetch).div_ceil(concurrency.max(1));
        let held = timeout.saturating_mul(rounds);
        if held >= ack_timeout {
            self.problem(format!("{path}.prefetch"), format!(
                "with prefetch {prefetch}, concurrency {concurrency} and timeout {}, a message can wait {rounds} x {} = {} unacknowledged, at or above the broker's acknowledgement timeout {}; lower prefetch or timeout, or raise concurrency",
                duration::format(timeout), duration::format(timeout), duration::format(held), duration::format(ack_timeout)));
        }
        if let Some(rate) = rate {
            let wait = Duration::from_secs_f64(f64::from(prefetch) / rate.per_second());
            if wait >= ack_timeout {
                self.problem(format!("{path}.rate_limit"), format!(
                    "at {rate}, the {prefetch} messages a worker prefetches take {} to start, at or above the broker's acknowledgement timeout {}; lower prefetch",
                    duration::format(wait), duration::format(ack_timeout)));
            }
        }
    }

    /// Reports cycles of outputs with their chain (a depth-first search:
    /// an edge back to a stage still on the path closes a cycle).
    fn check_cycles(&mut self, stages: &indexmap::IndexMap<String, Option<RawStage>>) {
        let outputs: Vec<Vec<usize>> = stages
            .values()
            .map(|stage| {
                let names = stage.as_ref().and_then(|s| s.outputs.as_ref());
                names
                    .into_iter()
                    .flatten()
                    .filter_map(|name| stages.get_index_of(name))
                    .collect()
            })
            .collect();
        let names: Vec<&String> = stages.keys().collect();
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; names.len()];
        for start in 0..names.len() {
            if state[start] != 0 {
                continue;
            }
            // An explicit stack of (stage, next output to follow).
            let mut stack = vec![(start, 0usize)];
            state[start] = 1;
            while let Some((at, next)) = stack.last_mut() {
                let at = *at;
                let Some(&to) = outputs[at].get(*next) else {
                    state[at] = 2;
                    stack.pop();
                    continue;
                };
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(s, _)| *s == to).unwrap_or(0);
                        let mut chain: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(s, _)| names[*s].as_str())
                            .collect();
                        chain.push(names[to]);
                        self.problem(
                            format!("stages.{}.outputs", names[at]),
                            format!(
                                "outputs form a cycle: {}; a message would go round forever",
                                chain.join(" -> ")
                            ),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}
