//! From the raw file to a [`Pipeline`]: every rule, every problem collected.
//!
//! `defaults` apply field by field. A problem is reported at the path where
//! the offending value is written: `defaults.prefetch` when a stage inherits
//! it, `stages.grade.prefetch` when the stage sets it. The kinds are checked
//! in [`super::kind`], the stage graph in [`super::graph`], the time a
//! message can stay unacknowledged in [`super::holding`].

use std::{path::Path, time::Duration};

use super::{
    Problem,
    check::{Checker, Layers},
    defaults, graph,
    holding::{Holding, Overrun},
    kind,
    raw::{RawFile, RawStage},
    schedules, sinks,
};
use crate::{
    broker::{BrokerUrl, BrokerUrls, DEFAULT_URL},
    duration,
    pipeline::{Broker, Jobs, Pipeline, QueueKind, QueueSpec, Scale, Stage, StageKind},
    rate::RateLimit,
    retry::RetryPolicy,
};

/// Longest retry delay: a week.
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks every rule; returns the pipeline or all the problems.
pub(crate) fn validate(
    raw: &RawFile,
    source: &Path,
    seconds: bool,
) -> Result<Pipeline, Vec<Problem>> {
    // Absolute, so that what is resolved from it holds whatever the working
    // directory of a process that uses the pipeline.
    let source = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
    let mut v = Checker::for_file(&source);
    let name = match &raw.pipeline {
        Some(name) => {
            v.name("pipeline", name);
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
    let broker = broker(&mut v, raw);
    let jobs = jobs(&mut v, raw);
    let serve = super::serve::check(&mut v, raw.serve.as_ref());
    let empty = RawStage::default();
    let defaults = raw.defaults.as_ref().unwrap_or(&empty);
    for key in kind::KIND_KEYS.iter().copied().chain(["outputs"]) {
        if defaults.has(key) {
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
        v.name(&format!("stages.{stage_name}"), stage_name);
        let layers = Layers {
            stage: stage.as_ref().unwrap_or(&empty),
            defaults,
            path: format!("stages.{stage_name}"),
        };
        if let Some(stage) = self::stage(
            &mut v,
            stage_name,
            &layers,
            &stage_names,
            &broker,
            jobs.track,
        ) {
            stages.push(stage);
        }
    }
    if let Some(stage) = &jobs.result
        && !stage_names.contains(&stage.as_str())
    {
        v.problem(
            "jobs.result",
            format!(
                "no stage `{stage}`; the stages are [{}]",
                stage_names.join(", ")
            ),
        );
    }
    let schedules = schedules::check(&mut v, raw, &stage_names, jobs.track, seconds);
    graph::check_cycles(&mut v, &raw_stages);
    sinks::check(&mut v, &stages);
    if v.problems.is_empty() {
        Ok(Pipeline {
            name,
            broker,
            jobs,
            serve,
            schedules,
            stages,
            source,
        })
    } else {
        let mut problems = v.problems;
        problems.dedup();
        Err(problems)
    }
}

fn broker(v: &mut Checker, raw: &RawFile) -> Broker {
    let broker = raw.broker.as_ref();
    let default =
        || BrokerUrls::from(BrokerUrl::parse(DEFAULT_URL).expect("the default URL is valid"));
    let urls = match (
        broker.and_then(|b| b.url.as_deref()),
        broker.and_then(|b| b.urls.as_deref()),
    ) {
        (Some(_), Some(_)) => {
            v.problem(
                "broker.urls",
                "give `broker.url` (one node) or `broker.urls` (the nodes of a cluster), not both",
            );
            default()
        }
        (Some(text), None) => BrokerUrls::parse(text).unwrap_or_else(|error| {
            v.problem("broker.url", error);
            default()
        }),
        (None, Some([])) => {
            v.problem("broker.urls", "lists no URL; give at least one");
            default()
        }
        (None, Some(texts)) => {
            let mut urls = Vec::new();
            for (index, text) in texts.iter().enumerate() {
                match BrokerUrl::parse(text) {
                    Ok(url) => urls.push(url),
                    Err(error) => v.problem(format!("broker.urls[{index}]"), error),
                }
            }
            BrokerUrls::new(urls).unwrap_or_else(default)
        }
        (None, None) => default(),
    };
    let ack_timeout = match broker.and_then(|b| b.ack_timeout.as_deref()) {
        Some(text) => v
            .duration("broker.ack_timeout", text)
            .unwrap_or(defaults::ACK_TIMEOUT),
        None => defaults::ACK_TIMEOUT,
    };
    Broker { urls, ack_timeout }
}

fn jobs(v: &mut Checker, raw: &RawFile) -> Jobs {
    let mut jobs = Jobs::default();
    let Some(raw) = raw.jobs.as_ref() else {
        return jobs;
    };
    jobs.track = raw.track.unwrap_or(false);
    if let Some(keep) = raw
        .keep
        .as_deref()
        .and_then(|text| v.duration("jobs.keep", text))
    {
        if keep < Duration::from_secs(60) || keep > Duration::from_secs(365 * 24 * 3600) {
            v.problem("jobs.keep", "must be between 1m and 365d");
        }
        jobs.keep = keep;
    }
    if let Some(text) = &raw.callback {
        match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                jobs.callback = Some(text.clone());
            }
            Ok(url) => v.problem(
                "jobs.callback",
                format!("`{}` is not an http or https URL", url.scheme()),
            ),
            Err(error) => v.problem(
                "jobs.callback",
                format!(
                    "`{}` is not a URL ({error}); give one like http://app.internal/jobs/done",
                    crate::broker::redact(text)
                ),
            ),
        }
        if !jobs.track {
            v.problem(
                "jobs.callback",
                "needs `jobs.track: true`: callbacks fire when a tracked job settles",
            );
        }
    }
    if let Some(stage) = &raw.result {
        jobs.result = Some(stage.clone());
        if !jobs.track {
            v.problem(
                "jobs.result",
                "needs `jobs.track: true`: a result is kept on the job's record",
            );
        }
    }
    if let Some(text) = &raw.result_max {
        match kind::size(text) {
            Ok(max) if (1024..=16 * 1024 * 1024).contains(&max) => jobs.result_max = max,
            Ok(_) => v.problem("jobs.result_max", "must be between 1KiB and 16MiB"),
            Err(why) => v.problem("jobs.result_max", why),
        }
    }
    jobs
}

fn stage(
    v: &mut Checker,
    name: &str,
    layers: &Layers<'_>,
    all: &[&str],
    broker: &Broker,
    tracked: bool,
) -> Option<Stage> {
    let own = layers.stage;
    let path = &layers.path;
    let kind = kind::kind(v, path, own);
    let outputs = own.outputs.clone().unwrap_or_default();
    graph::check_outputs(v, path, &outputs, all);
    if matches!(kind, Some(StageKind::Sink(_) | StageKind::Postgres(_))) && !outputs.is_empty() {
        v.problem(
            format!("{path}.outputs"),
            "a sink stage emits nothing, so it has no outputs",
        );
    }
    if matches!(kind, Some(StageKind::Gather)) {
        if outputs.is_empty() {
            v.problem(
                format!("{path}.outputs"),
                "missing; a gather stage emits each job's gathered items to its outputs",
            );
        }
        if !tracked {
            v.problem(
                format!("{path}.gather"),
                "needs `jobs.track: true`: a gather stage waits on the job records",
            );
        }
    }
    let sink = matches!(kind, Some(StageKind::Sink(_) | StageKind::Postgres(_)));
    let prefetch = v.number(
        layers,
        "prefetch",
        |s| s.prefetch,
        (1, 65_535),
        u64::from(if sink {
            defaults::SINK_HOLDS
        } else {
            defaults::PREFETCH
        }),
    ) as u16;
    let concurrency = v.number(
        layers,
        "concurrency",
        |s| s.concurrency,
        (1, 10_000),
        u64::from(if sink {
            u32::from(defaults::SINK_HOLDS)
        } else {
            defaults::CONCURRENCY
        }),
    ) as u32;
    let (timeout, timeout_path) =
        v.layered_duration(layers, "timeout", |s| s.timeout.clone(), defaults::TIMEOUT);
    let retry = retry(v, layers);
    let queue = queue(v, layers);
    let mut scale = scale(v, layers);
    if matches!(kind, Some(StageKind::Sink(_))) {
        // One process writes a sink file: one worker per box.
        if let Some(max) = own
            .scale
            .as_ref()
            .and_then(|s| s.max)
            .filter(|max| max.0 > 1.0)
        {
            v.problem(
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
            .map_err(|error| v.problem(path, error))
            .ok(),
        None => None,
    };
    let holding = Holding {
        timeout,
        prefetch,
        concurrency,
        rate: rate_limit,
        workers: scale.max,
    };
    let timeout_path = timeout_path.unwrap_or_else(|| format!("{path}.timeout"));
    check_holding(v, path, &timeout_path, &holding, broker.ack_timeout);
    if let Some(StageKind::Http(http)) = &kind
        && http.timeout > timeout
    {
        v.problem(
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

/// Reports each way a message of the stage can stay unacknowledged past
/// the broker's acknowledgement timeout.
fn check_holding(
    v: &mut Checker,
    path: &str,
    timeout_path: &str,
    holding: &Holding,
    ack_timeout: Duration,
) {
    let fmt = duration::format;
    let ack = fmt(ack_timeout);
    let Holding {
        timeout,
        prefetch,
        concurrency,
        ..
    } = *holding;
    for overrun in holding.overruns(ack_timeout) {
        match overrun {
            Overrun::Timeout => v.problem(timeout_path, format!(
                "{} (and up to {} to hand a failed message over) reaches the broker's acknowledgement timeout {ack} (broker.ack_timeout); lower it, or set broker.ack_timeout to the broker's consumer_timeout if that is longer",
                fmt(timeout), fmt(crate::limits::SETTLE_TIMEOUT))),
            Overrun::Prefetch { rounds, held } => v.problem(format!("{path}.prefetch"), format!(
                "with prefetch {prefetch}, concurrency {concurrency} and timeout {}, a message can wait {rounds} x {} and its hand-over, {} unacknowledged, at or above the broker's acknowledgement timeout {ack}; lower prefetch or timeout, or raise concurrency",
                fmt(timeout), fmt(timeout), fmt(held))),
            Overrun::Rate { wait } => v.problem(format!("{path}.rate_limit"), format!(
                "at {} shared by up to {} workers (scale.max), the {prefetch} messages a worker prefetches take {} to start and finish, at or above the broker's acknowledgement timeout {ack}; lower prefetch",
                holding.rate.map(|r| r.to_string()).unwrap_or_default(), holding.workers, fmt(wait))),
        }
    }
}

fn retry(v: &mut Checker, layers: &Layers<'_>) -> RetryPolicy {
    let attempts = v.number(
        layers,
        "retry.attempts",
        |s| s.retry.as_ref()?.attempts,
        (1, 100),
        u64::from(defaults::ATTEMPTS),
    ) as u32;
    let backoff = match layers.get("retry.backoff", |s| s.retry.as_ref()?.backoff.clone()) {
        Some((texts, path)) => {
            if texts.is_empty() && attempts > 1 {
                v.problem(&path, format!("is empty but retry.attempts is {attempts}; give at least one delay, like [1s, 10s, 1m]"));
            }
            texts
                .iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    let item = format!("{path}[{i}]");
                    let delay = v.duration(&item, text)?;
                    if delay > MAX_DELAY {
                        v.problem(
                            item,
                            format!("{} is longer than the longest retry delay, 7 days", text.0),
                        );
                        return None;
                    }
                    if delay.subsec_nanos() % 1_000_000 != 0 {
                        // Retry queues hold whole milliseconds (their TTL).
                        v.problem(
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

fn queue(v: &mut Checker, layers: &Layers<'_>) -> QueueSpec {
    let kind = match layers.get("queue.type", |s| s.queue.as_ref()?.kind.clone()) {
        None => QueueKind::Quorum,
        Some((text, path)) => match text.as_str() {
            "quorum" => QueueKind::Quorum,
            "classic" => QueueKind::Classic,
            other => {
                v.problem(
                    path,
                    format!(
                        "`{other}` is not a queue type; use `quorum` (the default) or `classic`"
                    ),
                );
                QueueKind::Quorum
            }
        },
    };
    let delivery_limit =
        match layers.get("queue.delivery_limit", |s| s.queue.as_ref()?.delivery_limit) {
            None => None,
            Some((n, path)) => {
                if kind == QueueKind::Classic {
                    v.problem(
                        &path,
                        "only quorum queues have a delivery limit; remove it or use `type: quorum`",
                    );
                }
                v.whole(&path, n, 1, 1_000_000).map(|n| n as u32)
            }
        };
    QueueSpec {
        kind,
        delivery_limit,
    }
}

fn scale(v: &mut Checker, layers: &Layers<'_>) -> Scale {
    let min = v.number(
        layers,
        "scale.min",
        |s| s.scale.as_ref()?.min,
        (0, 1000),
        u64::from(defaults::SCALE_MIN),
    ) as u32;
    let max_field = layers.get("scale.max", |s| s.scale.as_ref()?.max);
    let max = v.number(
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
        v.problem(path, format!("scale.min {min} is above scale.max {max}"));
    }
    let backlog_per_worker = v.number(
        layers,
        "scale.backlog_per_worker",
        |s| s.scale.as_ref()?.backlog_per_worker,
        (1, 10_000_000),
        u64::from(defaults::BACKLOG_PER_WORKER),
    ) as u32;
    let (idle, _) = v.layered_duration(
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
