//! The alert rules of `deploy/prometheus/alerts.yml` and the Grafana
//! dashboard of `deploy/grafana/warren.json`, proven on a real Prometheus
//! (Debian's `prometheus` package, which brings `promtool`; `.ci/test`
//! installs it):
//!
//! - `promtool check rules` and `promtool test rules alerts.test.yml`;
//! - every series the rules, their unit tests and the dashboard name is on
//!   the `/metrics` page of a running `warren supervise --http` or
//!   `warren serve` (the unit tests' series with the same labels);
//! - a `prometheus` started by the test scrapes both, loads the rules (their
//!   `for:` cut to 0 s, so the test does not wait minutes) and fires
//!   `WarrenStageCrashLooping` for a stage whose program exits at once, then
//!   `WarrenSupervisorGone` once the supervisor is stopped.

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    ChildGuard, Cleanup, PipelineFile, eventually, free_port, log_file, serve, supervise_http,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules() -> PathBuf {
    root().join("deploy/prometheus/alerts.yml")
}

/// Runs `promtool` with `args` in `dir`; whether it passed and what it said.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; .ci/test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The names of the series `text` uses: every `warren_...` word.
fn series_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("warren_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        names.insert(word);
    }
    names
}

/// What a page shows: each series name (a histogram's `_bucket`, `_count`
/// and `_sum` under their own names) with the label names of each sample.
fn page(text: &str) -> HashMap<String, BTreeSet<BTreeSet<String>>> {
    let mut shown: HashMap<String, BTreeSet<BTreeSet<String>>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        // Between the first `{` and the last `}` (a route's value holds
        // braces), pairs end with `",`.
        let labels: BTreeSet<String> = match (line.find('{'), line.rfind('}')) {
            (Some(open), Some(close)) if open < close => line[open + 1..close]
                .split("\",")
                .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_string()))
                .collect(),
            _ => BTreeSet::new(),
        };
        shown.entry(name.to_string()).or_default().insert(labels);
    }
    shown
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let (ok, said) = promtool(&dir, &["check", "rules", "alerts.yml"]);
    assert!(ok, "{said}");
    assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
    let (ok, said) = promtool(&dir, &["test", "rules", "alerts.test.yml"]);
    assert!(ok, "{said}");
}

#[test]
fn a_broken_rule_or_a_wrong_expectation_fails_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(rules()).unwrap();
    std::fs::write(
        dir.path().join("alerts.yml"),
        text.replace("> 0\n", "> > 0\n"),
    )
    .unwrap();
    let (ok, said) = promtool(dir.path(), &["check", "rules", "alerts.yml"]);
    assert!(!ok, "a rule that does not parse passed: {said}");
    // The crash loop said to fire a minute earlier than its `for:` allows.
    std::fs::write(dir.path().join("alerts.yml"), &text).unwrap();
    let tests = std::fs::read_to_string(root().join("deploy/prometheus/alerts.test.yml")).unwrap();
    let early = tests.replacen("eval_time: 5m", "eval_time: 3m", 1);
    assert_ne!(early, tests);
    std::fs::write(dir.path().join("alerts.test.yml"), early).unwrap();
    let (ok, said) = promtool(dir.path(), &["test", "rules", "alerts.test.yml"]);
    assert!(!ok, "an alert expected too early passed: {said}");
}

/// Prometheus, started on a free port with `config`, killed when dropped.
struct Prometheus {
    _process: ChildGuard,
    base: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let process = ChildGuard(
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log_file(&log))
                .spawn()
                .expect("prometheus (Debian package prometheus; .ci/test installs it)"),
        );
        Prometheus {
            _process: process,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The alerts firing now, each as its labels.
    async fn firing(&self) -> Vec<serde_json::Value> {
        let Ok(answer) = reqwest::get(format!("{}/api/v1/alerts", self.base)).await else {
            return Vec::new();
        };
        let text = answer.text().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test]
async fn prometheus_scraping_warren_fires_the_crash_loop_alert() {
    let file = PipelineFile::new(
        "prom",
        "
pipeline: {name}
jobs: { track: true }
schedules:
  yearly: { cron: '0 0 1 1 *', stage: fine, body: {} }
stages:
  broken:
    command: [/bin/false]
  fine:
    command: [/bin/sleep, '3600']
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let (mut supervisor, boxed) = supervise_http(&file).await;
    let (_serve, served) = serve(&file).await;

    // Every series named by the rules, their tests and the dashboard is on
    // the pages; the tests' series with the labels the pages give them.
    let text = |base: String| async move {
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("/metrics")
            .text()
            .await
            .unwrap()
    };
    let (from_box, from_serve) = (text(boxed.clone()).await, text(served.clone()).await);
    let shown = page(&format!("{from_box}\n{from_serve}"));
    let rules_text = std::fs::read_to_string(rules()).unwrap();
    let tests_text =
        std::fs::read_to_string(root().join("deploy/prometheus/alerts.test.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/warren.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("warren.json is JSON");
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            assert!(!series_in(expr).is_empty(), "a query on no series: {expr}");
            queries.push_str(expr);
            queries.push('\n');
        }
    }
    for (what, text) in [
        ("alerts.yml", &rules_text),
        ("alerts.test.yml", &tests_text),
        ("warren.json", &queries),
    ] {
        for name in series_in(text) {
            assert!(
                shown.contains_key(&name),
                "{what} names {name}, which no /metrics page shows:\n{from_box}"
            );
        }
    }
    for line in tests_text.lines() {
        let Some(series) = line.trim().strip_prefix("- series: ") else {
            continue;
        };
        let series = series.trim_matches('\'');
        if !series.starts_with("warren_") {
            continue;
        }
        let mut labels = page(&format!("{series} 0"))
            .into_values()
            .next()
            .and_then(|sets| sets.into_iter().next())
            .unwrap_or_default();
        // Added by Prometheus when it scrapes.
        labels.remove("instance");
        labels.remove("job");
        let name = series.split('{').next().unwrap();
        assert!(
            shown[name].contains(&labels),
            "alerts.test.yml gives {name} the labels {labels:?}; the pages give {:?}",
            shown[name]
        );
    }

    // A real Prometheus: the rules fire on what it scrapes.
    let dir = tempfile::tempdir().unwrap();
    let mut fast = String::new();
    for line in rules_text.lines() {
        if line.trim_start().starts_with("for:") {
            continue;
        }
        fast.push_str(line);
        fast.push('\n');
    }
    std::fs::write(dir.path().join("alerts.yml"), fast).unwrap();
    let target = |base: &str| base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(
        dir.path(),
        &format!(
            "
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: warren-supervisors
    static_configs: [{{ targets: ['{}'] }}]
  - job_name: warren-serve
    static_configs: [{{ targets: ['{}'] }}]
",
            target(&boxed),
            target(&served)
        ),
    );
    let crash_loop = |labels: &serde_json::Value| {
        labels["alertname"] == "WarrenStageCrashLooping"
            && labels["stage"] == "broken"
            && labels["pipeline"] == file.name.as_str()
    };
    let fired = eventually(Duration::from_secs(120), || async {
        prometheus.firing().await.iter().any(crash_loop)
    })
    .await;
    let firing = prometheus.firing().await;
    assert!(
        fired,
        "no crash-loop alert; firing: {firing:?}\nprometheus log:\n{}",
        prometheus.log()
    );
    assert!(
        !firing
            .iter()
            .any(|a| a["alertname"] == "WarrenStageCrashLooping" && a["stage"] == "fine"),
        "the stage that runs fired too: {firing:?}"
    );
    assert!(
        !firing
            .iter()
            .any(|a| a["alertname"] == "WarrenSupervisorGone"),
        "{firing:?}"
    );

    // The supervisor stopped: its target is down.
    supervisor.signal("TERM");
    supervisor.wait();
    let gone = eventually(Duration::from_secs(60), || async {
        prometheus
            .firing()
            .await
            .iter()
            .any(|a| a["alertname"] == "WarrenSupervisorGone")
    })
    .await;
    assert!(
        gone,
        "no alert for the stopped supervisor: {:?}",
        prometheus.firing().await
    );
}
