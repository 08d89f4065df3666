//! One failing example per validation rule; each asserts the field path.
#![cfg(test)]

use std::{path::Path, time::Duration};

use super::{InvalidPipeline, parse_str};
use crate::pipeline::{Pipeline, QueueKind, Recycle, StageKind};

const GOOD: &str = "\
pipeline: grading
defaults:
  prefetch: 16
  retry: { attempts: 3, backoff: [1s, 5s] }
stages:
  lookup:
    command: [target/release/examples/grading-worker]
    outputs: [grade]
  grade:
    http: { method: POST, url: \"http://127.0.0.1:8089/grade\", timeout: 5s }
    rate_limit: 20/s
    retry: { attempts: 6 }
    outputs: [results]
  results:
    sink: { path: grades.jsonl }
    queue: { type: classic }
";

fn load(text: &str) -> Result<Pipeline, InvalidPipeline> {
    parse_str(text, Path::new("p.yaml"), &[])
}

fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Pipeline, InvalidPipeline> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_str(text, Path::new("p.yaml"), &env)
}

/// The problem lines of an invalid file.
fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(invalid) => invalid.lines(),
    }
}

/// Asserts one problem line contains every fragment.
fn assert_problem(text: &str, fragments: &[&str]) {
    let lines = problems(text);
    assert!(
        lines
            .iter()
            .any(|line| fragments.iter().all(|f| line.contains(f))),
        "no problem line has all of {fragments:?}; got {lines:#?}"
    );
}

fn with(replace: &str, by: &str) -> String {
    assert!(GOOD.contains(replace), "{replace}");
    GOOD.replacen(replace, by, 1)
}

#[test]
fn the_good_file_loads_with_defaults_merged_field_by_field() {
    let p = load(GOOD).unwrap();
    assert_eq!(p.name, "grading");
    assert_eq!(p.stage_names(), vec!["lookup", "grade", "results"]);
    let grade = p.stage("grade").unwrap();
    assert_eq!(grade.prefetch, 16);
    assert_eq!(grade.retry.attempts, 6);
    assert_eq!(
        grade.retry.backoff,
        vec![Duration::from_secs(1), Duration::from_secs(5)]
    );
    assert_eq!(grade.rate_limit.unwrap().count, 20);
    assert!(matches!(grade.kind, StageKind::Http(_)));
    assert_eq!(p.stage("results").unwrap().queue.kind, QueueKind::Classic);
    assert_eq!(p.stage("lookup").unwrap().queue.kind, QueueKind::Quorum);
    assert_eq!(p.entry_stages()[0].name, "lookup");
    // `defaults:` applies to the sink too; without it a sink holds 1,000.
    assert_eq!(p.stage("results").unwrap().prefetch, 16);
    let bare = load(&GOOD.replace("defaults:\n  prefetch: 16\n", "defaults:\n")).unwrap();
    let (sink, lookup) = (
        bare.stage("results").unwrap(),
        bare.stage("lookup").unwrap(),
    );
    assert_eq!((sink.prefetch, sink.concurrency), (1000, 1000));
    assert_eq!((lookup.prefetch, lookup.concurrency), (64, 32));
}

#[test]
fn unknown_keys_are_named_with_their_path_and_line() {
    assert_problem(
        &with("rate_limit: 20/s", "rate_limit: 20/s\n    retyr: 3"),
        &["p.yaml:12:", "stages.grade.retyr", "unknown field"],
    );
    assert_problem(&format!("{GOOD}extra: 1\n"), &["extra", "unknown field"]);
    assert_problem(
        &with("attempts: 6", "attempts: 6, tries: 2"),
        &["stages.grade.retry.tries"],
    );
}

#[test]
fn a_stage_needs_exactly_one_kind() {
    assert_problem(
        &with(
            "    command: [target/release/examples/grading-worker]\n",
            "",
        ),
        &["p.yaml:6:", "stages.lookup:", "has no kind"],
    );
    assert_problem(
        &with(
            "    sink: { path: grades.jsonl }",
            "    sink: { path: g }\n    command: [x]",
        ),
        &[
            "stages.results:",
            "`command` and `sink`",
            "exactly one kind",
        ],
    );
}

#[test]
fn outputs_must_name_existing_stages() {
    assert_problem(
        &with("outputs: [results]", "outputs: [resluts]"),
        &["stages.grade.outputs[0]", "no stage is named `resluts`"],
    );
}

#[test]
fn cycles_are_reported_with_their_chain() {
    let text = with(
        "    sink: { path: grades.jsonl }",
        "    command: [x]\n    outputs: [lookup]",
    );
    assert_problem(
        &text,
        &[
            "outputs form a cycle",
            "lookup -> grade -> results -> lookup",
        ],
    );
    assert_problem(
        &with("outputs: [grade]", "outputs: [lookup]"),
        &["stages.lookup.outputs", "lookup -> lookup"],
    );
}

#[test]
fn durations_must_parse() {
    assert_problem(
        &with("timeout: 5s", "timeout: 5 parsecs"),
        &["stages.grade.http.timeout", "not a duration"],
    );
    assert_problem(
        &with("backoff: [1s, 5s]", "backoff: [1s, 5]"),
        &["p.yaml:4:", "defaults.retry.backoff[1]"],
    );
    assert_problem(
        &with("attempts: 6 }", "attempts: 6 }\n    scale: { idle: soon }"),
        &["stages.grade.scale.idle", "`soon`"],
    );
    assert_problem(
        &with("  prefetch: 16", "  prefetch: 16\n  timeout: 30"),
        &["defaults.timeout", "no unit"],
    );
}

#[test]
fn rate_limits_must_parse() {
    assert_problem(
        &with("rate_limit: 20/s", "rate_limit: 20 per second"),
        &["p.yaml:11:", "stages.grade.rate_limit", "not a rate limit"],
    );
    assert_problem(
        &with("rate_limit: 20/s", "rate_limit: 0/s"),
        &["stages.grade.rate_limit", "at least 1"],
    );
}

#[test]
fn prefetch_must_be_between_1_and_65535() {
    assert_problem(
        &with("prefetch: 16", "prefetch: 0"),
        &["p.yaml:3:", "defaults.prefetch", "between 1 and 65535"],
    );
    assert_problem(
        &with("prefetch: 16", "prefetch: 65536"),
        &["defaults.prefetch", "65536 is out of range"],
    );
    assert_problem(
        &with("prefetch: 16", "prefetch: 2.5"),
        &["defaults.prefetch", "not a whole number"],
    );
}

#[test]
fn scale_min_must_not_exceed_max() {
    assert_problem(
        &with(
            "attempts: 6 }",
            "attempts: 6 }\n    scale: { min: 5, max: 2 }",
        ),
        &["stages.grade.scale.min", "5 is above scale.max 2"],
    );
}

#[test]
fn timeouts_must_stay_below_the_broker_ack_timeout() {
    assert_problem(
        &with("  prefetch: 16", "  prefetch: 16\n  timeout: 30m"),
        &[
            "defaults.timeout",
            "reaches the broker's acknowledgement timeout 30m",
        ],
    );
    let text = with(
        "pipeline: grading",
        "pipeline: grading\nbroker: { ack_timeout: 1h }",
    );
    let text = text.replacen("  prefetch: 16", "  prefetch: 1\n  timeout: 40m", 1);
    load(&text).expect("a longer broker ack timeout allows longer handlers");
}

#[test]
fn prefetched_messages_count_towards_the_ack_timeout() {
    let text = with(
        "rate_limit: 20/s",
        "rate_limit: 20/s\n    timeout: 5m\n    concurrency: 2",
    );
    assert_problem(
        &text,
        &[
            "stages.grade.prefetch",
            "8 x 5m and its hand-over, 2410s",
            "lower prefetch",
        ],
    );
    let alone = with("rate_limit: 20/s", "rate_limit: 1/m\n    scale: { max: 1 }");
    load(&alone).expect("16 prefetched messages at 1/m start within 16 minutes");
    let shared = with("rate_limit: 20/s", "rate_limit: 1/m");
    assert_problem(
        &shared,
        &[
            "stages.grade.rate_limit",
            "shared by up to 4 workers",
            "3880s",
        ],
    );
}

/// The case that closed channels every 30 minutes: each of 5 workers runs
/// at a fifth of 10/m, so 64 prefetched messages wait 32 minutes.
#[test]
fn each_worker_s_share_of_the_rate_limit_counts() {
    let text = with(
        "rate_limit: 20/s",
        "rate_limit: 10/m\n    prefetch: 64\n    scale: { max: 5 }",
    );
    assert_problem(&text, &["stages.grade.rate_limit", "up to 5 workers"]);
    let one = text.replacen("scale: { max: 5 }", "scale: { max: 1 }", 1);
    load(&one).expect("one worker at 10/m starts 64 messages in 6.4 minutes");
}

#[test]
fn names_must_be_lowercase_identifiers() {
    assert_problem(
        &with("pipeline: grading", "pipeline: Grading"),
        &["p.yaml:1:", "pipeline:", "`Grading` is not a valid name"],
    );
    assert_problem(
        &with("  lookup:", "  look.up:"),
        &["stages.look.up", "not a valid name"],
    );
    assert_problem(
        &with(
            "pipeline: grading",
            &format!("pipeline: {}", "a".repeat(65)),
        ),
        &["pipeline", "longer than 64"],
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = GOOD
        .replacen("prefetch: 16", "prefetch: 0", 1)
        .replacen(
            "rate_limit: 20/s",
            "rate_limit: fast\n    concurrency: lots\n    bogus: 1",
            1,
        )
        .replacen("outputs: [grade]", "outputs: [nowhere]", 1);
    let lines = problems(&text);
    for fragment in [
        "defaults.prefetch",
        "stages.grade.rate_limit",
        "stages.grade.concurrency",
        "stages.grade.bogus",
        "stages.lookup.outputs[0]",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(fragment)),
            "{fragment} missing from {lines:#?}"
        );
    }
}

#[test]
fn wrong_types_say_what_to_write() {
    assert_problem(
        &with(
            "command: [target/release/examples/grading-worker]",
            "command: worker",
        ),
        &["stages.lookup.command", "write it as a list"],
    );
    assert_problem("- a\n- b\n", &["must be a mapping"]);
    assert_problem(
        &with("attempts: 6 }", "attempts: six }"),
        &["stages.grade.retry.attempts", "expected a number"],
    );
}

#[test]
fn defaults_may_not_hold_a_kind_or_outputs() {
    assert_problem(
        &with("  prefetch: 16", "  prefetch: 16\n  outputs: [grade]"),
        &["defaults.outputs", "belongs to a stage"],
    );
}

#[test]
fn missing_pipeline_and_stages_are_reported() {
    let lines = problems("broker: { url: \"amqp://127.0.0.1\" }\n");
    assert!(
        lines.iter().any(|l| l.contains("pipeline: missing")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("stages: no stages")),
        "{lines:?}"
    );
    assert!(!problems("").is_empty());
}

#[test]
fn syntax_errors_and_duplicate_keys_have_lines() {
    assert_problem(
        "pipeline: a\nstages: [1,\n  b: 2\n",
        &["p.yaml:", "not valid YAML"],
    );
    assert_problem(
        &format!("{GOOD}pipeline: again\n"),
        &["p.yaml:17:", "pipeline", "written twice"],
    );
}

#[test]
fn queue_rules() {
    assert_problem(
        &with(
            "queue: { type: classic }",
            "queue: { type: classic, delivery_limit: 3 }",
        ),
        &["stages.results.queue.delivery_limit", "only quorum queues"],
    );
    assert_problem(
        &with("queue: { type: classic }", "queue: { type: stream }"),
        &["stages.results.queue.type", "`stream` is not a queue type"],
    );
}

#[test]
fn stage_kind_details() {
    assert_problem(
        &with("    queue: { type: classic }", "    outputs: [grade]"),
        &["stages.results.outputs", "a sink stage emits nothing"],
    );
    assert_problem(
        &with("method: POST", "method: FETCH"),
        &["stages.grade.http.method", "FETCH"],
    );
    assert_problem(
        &with("\"http://127.0.0.1:8089/grade\"", "ftp://x"),
        &["stages.grade.http.url", "http://"],
    );
    assert_problem(
        &with("[target/release/examples/grading-worker]", "[]"),
        &["stages.lookup.command", "is empty"],
    );
    assert_problem(
        &with("{ path: grades.jsonl }", "{ }"),
        &["stages.results.sink.path", "missing"],
    );
    assert_problem(
        &with("timeout: 5s }", "timeout: 5m }"),
        &["stages.grade.http.timeout", "longer than the stage timeout"],
    );
}

/// Workers of these stages could not start (each exited 78 and `warren run`
/// waited for ever): validation refuses them, naming the field.
#[test]
fn http_templates_and_headers_are_checked_before_any_worker_starts() {
    let http = |inner: &str| {
        with(
            "{ method: POST, url: \"http://127.0.0.1:8089/grade\", timeout: 5s }",
            inner,
        )
    };
    assert_problem(
        &http("{ url: \"http://api/grade/{company\" }"),
        &["stages.grade.http.url", "without its"],
    );
    assert_problem(
        &http("{ url: \"http://exa mple/{id}\" }"),
        &["stages.grade.http.url", "not a URL"],
    );
    assert_problem(
        &http("{ url: \"http://api/x\", body: { a: \"{oops\" } }"),
        &["stages.grade.http.body", "without its"],
    );
    assert_problem(
        &http("{ url: \"http://api/x\", headers: { \"Bad Name\": x } }"),
        &[
            "stages.grade.http.headers.Bad Name",
            "not a valid header name",
        ],
    );
    assert_problem(
        &http("{ url: \"http://api/x\", idempotency_key: 3 }"),
        &["stages.grade.http.idempotency_key", "not a header name"],
    );
    let grade = |text: &str| match load(text).unwrap().stage("grade").unwrap().kind.clone() {
        StageKind::Http(spec) => spec.idempotency_key,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        grade(GOOD).as_deref(),
        Some("Idempotency-Key"),
        "on by default"
    );
    assert_eq!(
        grade(&http("{ url: \"http://api/x\", idempotency_key: false }")),
        None
    );
    assert_eq!(
        grade(&http(
            "{ url: \"http://api/x\", idempotency_key: X-Request-Id }"
        ))
        .as_deref(),
        Some("X-Request-Id")
    );
}

#[test]
fn retry_delays_are_whole_milliseconds() {
    assert_problem(
        &with("backoff: [1s, 5s]", "backoff: [1us, 2500us]"),
        &[
            "defaults.retry.backoff[0]",
            "1us is not a whole number of milliseconds",
        ],
    );
}

#[test]
fn retries_need_a_backoff() {
    assert_problem(
        &with("backoff: [1s, 5s]", "backoff: []"),
        &["defaults.retry.backoff", "is empty but retry.attempts is 3"],
    );
    assert_problem(
        &with("attempts: 6", "attempts: 0"),
        &["stages.grade.retry.attempts", "between 1 and 100"],
    );
}

#[test]
fn environment_overrides_apply_and_are_named_in_problems() {
    let p = load_env(
        GOOD,
        &[
            ("WARREN_STAGES__GRADE__CONCURRENCY", "3"),
            ("WARREN_STAGE", "grade"),
            ("WARREN_PIPELINE", "/some/file.yaml"),
            ("AMQP_URL", "amqp://app:pw@rabbit:5673/prod"),
        ],
    )
    .unwrap();
    assert_eq!(p.name, "grading", "WARREN_PIPELINE is not an override");
    assert_eq!(p.stage("grade").unwrap().concurrency, 3);
    assert_eq!(p.broker.urls.addresses(), "rabbit:5673");

    let invalid = load_env(GOOD, &[("WARREN_DEFAULTS__PREFETCH", "0")]).unwrap_err();
    let line = invalid.lines().join("\n");
    assert!(line.contains("defaults.prefetch"), "{line}");
    assert!(line.contains("WARREN_DEFAULTS__PREFETCH"), "{line}");
}

#[test]
fn broker_url_problems_never_show_the_password() {
    let text = with(
        "pipeline: grading",
        "pipeline: grading\nbroker: { url: \"http://app:hunter2@rabbit/\" }",
    );
    let lines = problems(&text).join("\n");
    assert!(lines.contains("broker.url"), "{lines}");
    assert!(!lines.contains("hunter2"), "{lines}");
}

#[test]
fn a_cluster_is_named_by_the_urls_of_its_nodes() {
    let text = with(
        "pipeline: grading",
        "pipeline: grading\nbroker:\n  urls:\n    - amqp://app:pw@r1:5672/%2f\n    - amqp://app:pw@r2:5672/%2f",
    );
    let p = load_env(&text, &[]).unwrap();
    assert_eq!(p.broker.urls.addresses(), "r1:5672, r2:5672");
    // AMQP_URL, one URL or several, replaces the file's list.
    let p = load_env(
        &text,
        &[("AMQP_URL", "amqp://app:pw@x:1/%2f, amqp://app:pw@y:2/%2f")],
    )
    .unwrap();
    assert_eq!(p.broker.urls.addresses(), "x:1, y:2");
    let p = load_env(&text, &[("AMQP_URL", "amqp://app:pw@z:3/%2f")]).unwrap();
    assert_eq!(p.broker.urls.addresses(), "z:3");

    let bad = with(
        "pipeline: grading",
        "pipeline: grading\nbroker:\n  urls:\n    - amqp://app:pw@r1:5672/%2f\n    - http://app:hunter2@r2/",
    );
    let lines = problems(&bad).join("\n");
    assert!(lines.contains("broker.urls[1]"), "{lines}");
    assert!(!lines.contains("hunter2"), "{lines}");
    let both = with(
        "pipeline: grading",
        "pipeline: grading\nbroker: { url: \"amqp://a\", urls: [\"amqp://b\"] }",
    );
    assert!(problems(&both).join("\n").contains("not both"));
    let none = with(
        "pipeline: grading",
        "pipeline: grading\nbroker: { urls: [] }",
    );
    assert!(problems(&none).join("\n").contains("broker.urls"));
    let env = load_env(
        GOOD,
        &[("AMQP_URL", "amqp://app:pw@x:1/%2f,http://app:hunter2@y/")],
    )
    .unwrap_err()
    .lines()
    .join("\n");
    assert!(
        env.contains("URL 2 of 2") && env.contains("AMQP_URL"),
        "{env}"
    );
    assert!(!env.contains("hunter2"), "{env}");
}

#[test]
fn nested_settings_of_a_stage_can_be_overridden_from_the_environment() {
    let p = load_env(
        GOOD,
        &[(
            "WARREN_STAGES__GRADE__HTTP__URL",
            "http://grader.internal/grade",
        )],
    )
    .unwrap();
    match &p.stage("grade").unwrap().kind {
        StageKind::Http(http) => assert_eq!(http.url, "http://grader.internal/grade"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn jobs_are_untracked_unless_asked_and_their_settings_are_checked() {
    let untracked = load(GOOD).unwrap();
    assert!(!untracked.jobs.track);
    let tracked = load(&with(
        "defaults:",
        "jobs: { track: true, keep: 2h }\ndefaults:",
    ))
    .unwrap();
    assert!(tracked.jobs.track);
    assert_eq!(tracked.jobs.keep, Duration::from_secs(7200));
    assert_problem(
        &with("defaults:", "jobs: { track: true, keep: 5s }\ndefaults:"),
        &["p.yaml", "jobs.keep", "between 1m and 365d"],
    );
    assert_problem(
        &with("defaults:", "jobs: { track: yes please }\ndefaults:"),
        &["jobs.track"],
    );
    let called = load(&with(
        "defaults:",
        "jobs: { track: true, callback: \"http://app/done\" }\ndefaults:",
    ))
    .unwrap();
    assert_eq!(called.jobs.callback.as_deref(), Some("http://app/done"));
    assert_problem(
        &with(
            "defaults:",
            "jobs: { track: true, callback: \"ftp://app/done\" }\ndefaults:",
        ),
        &["jobs.callback", "not an http or https URL"],
    );
    assert_problem(
        &with(
            "defaults:",
            "jobs: { callback: \"http://app/done\" }\ndefaults:",
        ),
        &["jobs.callback", "jobs.track: true"],
    );
}

#[test]
fn a_result_stage_must_exist_and_its_bound_is_a_size() {
    let report = "\
pipeline: report
jobs: { track: true, result: add, result_max: 2KiB }
stages:
  split: { command: [split], outputs: [add] }
  add: { command: [add] }
";
    let pipeline = load(report).unwrap();
    assert_eq!(pipeline.jobs.result.as_deref(), Some("add"));
    assert_eq!(pipeline.jobs.result_max, 2048);
    let plain = load(&report.replace(", result_max: 2KiB", "")).unwrap();
    assert_eq!(plain.jobs.result_max, crate::pipeline::RESULT_MAX);
    assert_problem(
        &report.replace("result: add", "result: sum"),
        &["jobs.result", "no stage `sum`"],
    );
    assert_problem(
        &report.replace("track: true, ", ""),
        &["jobs.result", "jobs.track: true"],
    );
    assert_problem(
        &report.replace("2KiB", "lots"),
        &["jobs.result_max", "not a size"],
    );
    assert_problem(
        &report.replace("2KiB", "100"),
        &["jobs.result_max", "between 1KiB and 16MiB"],
    );
}

#[test]
fn a_gather_stage_needs_outputs_and_tracking() {
    let gathering = "\
pipeline: report
jobs: { track: true }
stages:
  split: { command: [split], outputs: [sum] }
  sum: { gather: {}, outputs: [add] }
  add: { command: [add] }
";
    let pipeline = load(gathering).unwrap();
    assert_eq!(pipeline.stage("sum").unwrap().kind, StageKind::Gather);
    assert_eq!(
        pipeline.upstream("add").into_iter().collect::<Vec<_>>(),
        ["split", "sum"]
    );
    assert!(pipeline.upstream("split").is_empty());
    assert_problem(
        &gathering.replace("jobs: { track: true }\n", ""),
        &["stages.sum.gather", "jobs.track: true"],
    );
    assert_problem(
        &gathering.replace(", outputs: [add] }", " }"),
        &["stages.sum.outputs", "missing"],
    );
    assert_problem(
        &gathering.replace("gather: {}", "gather: { wait: 5s }"),
        &["stages.sum", "wait"],
    );
}

#[test]
fn the_front_door_settings_are_checked_and_the_token_never_shown() {
    let p = load(&with(
        "defaults:",
        "serve: { token: \"0123456789abcdef0123\", max_backlog: 500, allow_actions: true }\ndefaults:",
    ))
    .unwrap();
    assert_eq!(
        p.serve.tokens.admin.as_deref(),
        Some("0123456789abcdef0123")
    );
    assert_eq!(p.serve.max_backlog, 500);
    assert!(p.serve.allow_actions);
    assert!(!load(GOOD).unwrap().serve.allow_actions);
    assert!(!format!("{p:?}").contains("0123456789abcdef0123"));
    assert_eq!(load(GOOD).unwrap().serve.max_backlog, 100_000);
    let short = with("defaults:", "serve: { token: \"hunter2\" }\ndefaults:");
    assert_problem(&short, &["serve.token", "at least 16"]);
    assert!(!problems(&short).join("\n").contains("hunter2"));
    assert_problem(
        &with("defaults:", "serve: { max_backlog: 0 }\ndefaults:"),
        &["serve.max_backlog"],
    );
}

#[test]
fn scoped_tokens_are_checked_each_where_it_is_written_and_never_shown() {
    let (a, b, c) = ("a".repeat(20), "b".repeat(20), "c".repeat(20));
    let p = load(&with(
        "defaults:",
        &format!("serve: {{ token: {a}, tokens: {{ ingest: {b}, read: {c} }} }}\ndefaults:"),
    ))
    .unwrap();
    let t = &p.serve.tokens;
    assert_eq!(
        (t.ingest.as_deref(), t.read.as_deref(), t.admin.as_deref()),
        (Some(b.as_str()), Some(c.as_str()), Some(a.as_str()))
    );
    assert!(!format!("{p:?}").contains(&a) && !format!("{p:?}").contains(&b));
    let only = load(&with(
        "defaults:",
        &format!("serve: {{ tokens: {{ admin: {a} }} }}\ndefaults:"),
    ))
    .unwrap();
    assert_eq!(only.serve.tokens.admin.as_deref(), Some(a.as_str()));
    assert!(load(GOOD).unwrap().serve.tokens.is_empty());
    let cases = [
        (
            format!("{{ token: {a}, tokens: {{ admin: {b} }} }}"),
            vec!["serve.tokens.admin", "serve.token is the admin token"],
        ),
        (
            format!("{{ tokens: {{ ingest: {a}, read: {a} }} }}"),
            vec!["serve.tokens.read", "same token as serve.tokens.ingest"],
        ),
        (
            format!("{{ token: {a}, tokens: {{ read: {a} }} }}"),
            vec!["serve.token", "same token as serve.tokens.read"],
        ),
        (
            "{ tokens: { read: short } }".to_string(),
            vec!["serve.tokens.read", "at least 16"],
        ),
        (
            "{ tokens: { read: \"\" } }".to_string(),
            vec!["serve.tokens.read", "at least 16"],
        ),
        (
            "{ tokens: {} }".to_string(),
            vec!["serve.tokens", "holds no token"],
        ),
        (
            "{ tokens: { write: x } }".to_string(),
            vec!["serve.tokens", "write"],
        ),
    ];
    for (serve, expected) in cases {
        let text = with("defaults:", &format!("serve: {serve}\ndefaults:"));
        assert_problem(&text, &expected);
        assert!(!problems(&text).join("\n").contains(&a), "{serve}");
    }
}

#[test]
fn tls_needs_both_files_resolved_from_the_pipelines_folder() {
    let p = load(&with(
        "defaults:",
        "serve: { tls: { cert: tls/cert.pem, key: /etc/warren/key.pem } }\ndefaults:",
    ))
    .unwrap();
    let tls = p.serve.tls.expect("tls");
    assert!(
        tls.cert.is_absolute() && tls.cert.ends_with("tls/cert.pem"),
        "{tls:?}"
    );
    assert_eq!(tls.key, Path::new("/etc/warren/key.pem"));
    assert!(load(GOOD).unwrap().serve.tls.is_none());
    assert_problem(
        &with("defaults:", "serve: { tls: { cert: c.pem } }\ndefaults:"),
        &["serve.tls.key", "missing"],
    );
    assert_problem(
        &with(
            "defaults:",
            "serve: { tls: { cert: \"\", key: k.pem } }\ndefaults:",
        ),
        &["serve.tls.cert", "empty"],
    );
    assert_problem(
        &with(
            "defaults:",
            "serve: { tls: { cert: c.pem, key: k.pem, ca: x } }\ndefaults:",
        ),
        &["serve.tls", "ca"],
    );
}

#[test]
fn the_front_door_answers_to_the_hosts_it_is_given() {
    let p = load(&with(
        "defaults:",
        "serve: { hosts: [Warren.Internal., warren-1] }\ndefaults:",
    ))
    .unwrap();
    assert_eq!(p.serve.hosts, ["warren.internal", "warren-1"]);
    assert!(load(GOOD).unwrap().serve.hosts.is_empty());
    assert_problem(
        &with(
            "defaults:",
            "serve: { hosts: [\"http://x:8080/\"] }\ndefaults:",
        ),
        &["serve.hosts[0]", "not a host name"],
    );
}

#[test]
fn an_http_stage_reads_answers_up_to_max_response() {
    let grade = |p: &Pipeline| match &p.stage("grade").unwrap().kind {
        StageKind::Http(spec) => spec.max_response,
        other => panic!("{other:?}"),
    };
    assert_eq!(grade(&load(GOOD).unwrap()), 10 * 1024 * 1024);
    let set = with("timeout: 5s }", "timeout: 5s, max_response: 64KiB }");
    assert_eq!(grade(&load(&set).unwrap()), 64 * 1024);
    assert_problem(
        &with("timeout: 5s }", "timeout: 5s, max_response: lots }"),
        &["stages.grade.http.max_response", "not a size"],
    );
    assert_problem(
        &with("timeout: 5s }", "timeout: 5s, max_response: 2GiB }"),
        &["stages.grade.http.max_response", "1KiB to 1GiB"],
    );
}

#[test]
fn an_exec_env_reference_names_a_variable() {
    let text =
        "pipeline: p\nstages:\n  s:\n    exec: { command: [sh], env: { A: \"${NOT VALID}\" } }\n";
    assert_problem(
        text,
        &["stages.s.exec.env.A", "must name an environment variable"],
    );
    let fine =
        "pipeline: p\nstages:\n  s:\n    exec: { command: [sh], env: { A: \"${DB_URL}\" } }\n";
    assert!(load(fine).is_ok());
}

#[test]
fn an_exec_child_is_recycled_by_count_or_size() {
    let exec = |settings: &str| {
        format!("pipeline: p\nstages:\n  s:\n    exec: {{ command: [sh]{settings} }}\n")
    };
    let recycle = |text: &str| match &load(text).unwrap().stages[0].kind {
        StageKind::Exec(spec) => spec.recycle,
        other => panic!("not exec: {other:?}"),
    };
    assert_eq!(recycle(&exec("")), Recycle::default());
    assert_eq!(
        recycle(&exec(", max_messages: 1000, max_memory: 512MB")),
        Recycle {
            max_messages: Some(1000),
            max_memory: Some(512_000_000),
        }
    );
    assert_eq!(
        recycle(&exec(", max_memory: 1GiB")).max_memory,
        Some(1 << 30)
    );
    assert_problem(
        &exec(", max_messages: 0"),
        &["stages.s.exec.max_messages", "between 1 and"],
    );
    assert_problem(
        &exec(", max_messages: 2.5"),
        &["stages.s.exec.max_messages", "not a whole number"],
    );
    assert_problem(
        &exec(", max_memory: lots"),
        &["stages.s.exec.max_memory", "not a size"],
    );
    assert_problem(
        &exec(", max_memory: 10KB"),
        &["stages.s.exec.max_memory", "too small"],
    );
}

#[test]
fn url_problems_never_show_a_password() {
    let callback = with(
        "defaults:",
        "jobs: { track: true, callback: \"http://u:hunter2@host:notaport/done\" }\ndefaults:",
    );
    assert_problem(&callback, &["jobs.callback", "u:***@host"]);
    assert!(!problems(&callback).join("\n").contains("hunter2"));
    let stage = with(
        "url: \"http://127.0.0.1:8089/grade\"",
        "url: \"http://u:hunter2@host:notaport/grade\"",
    );
    assert_problem(&stage, &["stages.grade.http.url", "u:***@host"]);
    assert!(!problems(&stage).join("\n").contains("hunter2"));
}

#[test]
fn relative_paths_are_relative_to_the_pipeline_files_folder() {
    let text = "
pipeline: p
stages:
  a:
    command: [bin/worker, --flag]
    outputs: [b]
  b:
    command: [/usr/bin/env, x]
    outputs: [c]
  c:
    exec: [sh, stage.sh]
    outputs: [d]
  d:
    sink: { path: out/d.jsonl }
";
    let pipeline = parse_str(text, Path::new("/srv/pipes/p.yaml"), &[]).unwrap();
    let kind = |name: &str| &pipeline.stage(name).unwrap().kind;
    let StageKind::Command(a) = kind("a") else {
        panic!()
    };
    assert_eq!(a.argv, ["/srv/pipes/bin/worker", "--flag"]);
    let StageKind::Command(b) = kind("b") else {
        panic!()
    };
    assert_eq!(b.argv[0], "/usr/bin/env", "an absolute path stays");
    let StageKind::Exec(c) = kind("c") else {
        panic!()
    };
    assert_eq!(c.argv, ["sh", "stage.sh"], "a bare name is found on PATH");
    let StageKind::Sink(d) = kind("d") else {
        panic!()
    };
    assert_eq!(d.path, Path::new("/srv/pipes/out/d.jsonl"));
    assert_eq!(pipeline.source, Path::new("/srv/pipes/p.yaml"));
}

#[test]
fn schedules_are_checked_field_by_field() {
    let tracked = GOOD.replace("stages:", "jobs: { track: true }\nstages:");
    let good = format!(
        "{tracked}schedules:\n  nightly:\n    cron: \"30 2 * * *\"\n    timezone: Europe/Berlin\n    stage: lookup\n    body: {{ all: true }}\n    missed: skip\n"
    );
    let pipeline = load(&good).unwrap();
    let schedule = &pipeline.schedules[0];
    assert_eq!(schedule.name, "nightly");
    assert_eq!(schedule.cron.as_str(), "30 2 * * *");
    assert_eq!(schedule.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(schedule.missed, crate::schedule::Missed::Skip);
    assert_eq!(
        schedule.input,
        crate::schedule::ScheduleInput::Body(serde_json::json!({"all": true}))
    );
    let bad = |from: &str, to: &str| good.replace(from, to);
    assert_problem(
        &bad("\"30 2 * * *\"", "\"30 25 * * *\""),
        &[
            "schedules.nightly.cron",
            "`30 25 * * *` is not a cron expression",
        ],
    );
    assert_problem(
        &bad("\"30 2 * * *\"", "\"0 30 2 * * *\""),
        &["schedules.nightly.cron", "has 6 fields"],
    );
    assert_problem(
        &bad("\"30 2 * * *\"", "\"0 0 30 2 *\""),
        &["schedules.nightly.cron", "`0 0 30 2 *` never ticks"],
    );
    assert_problem(
        &bad("Europe/Berlin", "Europe/Bonn"),
        &[
            "schedules.nightly.timezone",
            "`Europe/Bonn` is not a known time zone",
        ],
    );
    assert_problem(
        &bad("stage: lookup", "stage: lokup"),
        &[
            "schedules.nightly.stage",
            "`lokup` is not a stage",
            "lookup, grade, results",
        ],
    );
    assert_problem(
        &bad("    body: { all: true }\n", ""),
        &["schedules.nightly:", "sends nothing; give `body`"],
    );
    assert_problem(
        &bad(
            "body: { all: true }",
            "body: { all: true }\n    input: in.jsonl",
        ),
        &["schedules.nightly:", "both `body` and `input`"],
    );
    assert_problem(
        &bad("body: { all: true }", "input: no-such.jsonl"),
        &["schedules.nightly.input", "`no-such.jsonl` does not exist"],
    );
    assert_problem(
        &bad("missed: skip", "missed: twice"),
        &["schedules.nightly.missed", "`twice` is neither `once`"],
    );
    assert_problem(
        &bad("missed: skip", "missed: skip\n    every: 1h"),
        &["schedules.nightly", "every"],
    );
    assert_problem(
        &good.replace("jobs: { track: true }\n", ""),
        &["schedules:", "needs `jobs.track: true`"],
    );
    // Seconds only for tests that ask for them.
    let every_second = bad("\"30 2 * * *\"", "\"* * * * * *\"");
    assert_problem(&every_second, &["schedules.nightly.cron", "has 6 fields"]);
    assert!(load_env(&every_second, &[(crate::schedule::SECONDS_FOR_TESTS, "1")]).is_ok());
}

#[test]
fn a_schedule_input_file_is_read_line_by_line() {
    let dir = std::env::temp_dir().join(format!("warren-schedule-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.jsonl"), "{\"a\": 1}\n\n{\"a\": 2\n").unwrap();
    let text = GOOD.replace("stages:", "jobs: { track: true }\nschedules:\n  s:\n    cron: \"@daily\"\n    stage: lookup\n    input: in.jsonl\nstages:");
    let problems = match parse_str(&text, &dir.join("p.yaml"), &[]) {
        Ok(_) => panic!("a bad line passed"),
        Err(invalid) => invalid.lines(),
    };
    assert!(
        problems
            .iter()
            .any(|line| line.contains("schedules.s.input") && line.contains("line 3: not JSON")),
        "{problems:#?}"
    );
    std::fs::write(dir.join("in.jsonl"), "{\"a\": 1}\n\n{\"a\": 2}\n").unwrap();
    let pipeline = parse_str(&text, &dir.join("p.yaml"), &[]).unwrap();
    assert_eq!(
        pipeline.schedules[0].input,
        crate::schedule::ScheduleInput::File(dir.join("in.jsonl"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
