//! The fault suite's harness: a pipeline under `warren supervise`, the
//! checker that compares the sink with what was sent, and the table.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::{self, ChildGuard, Cleanup, PipelineFile};

/// One scenario's result: a line of the table.
pub struct Row {
    pub scenario: &'static str,
    /// What was done to the run.
    pub fault: String,
    /// Messages sent into the pipeline.
    pub sent: u64,
    /// Records the sink should hold.
    pub expected: u64,
    /// Distinct records at the sink.
    pub processed: u64,
    /// Expected records missing from the sink.
    pub lost: u64,
    /// Lines at the sink beyond the distinct records.
    pub duplicated: u64,
    /// Messages in the dead-letter queues.
    pub dead: u64,
    /// Poison planted (the dead letters there must be).
    pub planted: u64,
    /// What else went wrong; empty when nothing did.
    pub problem: String,
    /// Why the scenario could not run here (not a failure).
    pub skipped: Option<String>,
}

impl Row {
    /// A scenario that could not run.
    pub fn failed(scenario: &'static str, problem: String) -> Row {
        Row {
            scenario,
            fault: "-".into(),
            sent: 0,
            expected: 0,
            processed: 0,
            lost: 0,
            duplicated: 0,
            dead: 0,
            planted: 0,
            problem,
            skipped: None,
        }
    }

    /// A scenario this machine cannot run (it says why, and fails nothing).
    pub fn skipped(scenario: &'static str, why: &str) -> Row {
        Row {
            skipped: Some(why.to_string()),
            ..Row::failed(scenario, String::new())
        }
    }

    /// Nothing lost, nothing twice, exactly the poison dead-lettered.
    pub fn ok(&self) -> bool {
        self.problem.is_empty()
            && self.lost == 0
            && self.duplicated == 0
            && self.dead == self.planted
            && self.processed == self.expected
    }

    /// Adds a problem.
    pub fn fail(&mut self, problem: impl std::fmt::Display) {
        if !self.problem.is_empty() {
            self.problem.push('\n');
        }
        self.problem.push_str(&problem.to_string());
    }
}

/// Which of `scenarios` to run: those named in `filter` (the value of the
/// variable, names separated by commas), or, when every name starts with
/// `-`, all but those; all when it is unset. A name that matches no
/// scenario, or a filter that selects none, is an error: a typo must not
/// pass as a green run of nothing.
pub fn selected(
    filter: Option<&str>,
    scenarios: &[&'static str],
) -> Result<Vec<&'static str>, String> {
    let Some(filter) = filter else {
        return Ok(scenarios.to_vec());
    };
    let names: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let leaving = !names.is_empty() && names.iter().all(|n| n.starts_with('-'));
    let named: Vec<&str> = names.iter().map(|n| n.trim_start_matches('-')).collect();
    let unknown: Vec<&str> = named
        .iter()
        .copied()
        .filter(|w| !scenarios.contains(w))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "no scenario named {}; the scenarios are: {}",
            unknown.join(", "),
            scenarios.join(", ")
        ));
    }
    let chosen: Vec<&'static str> = scenarios
        .iter()
        .copied()
        .filter(|s| named.contains(s) != leaving)
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "the filter {filter:?} names no scenario; the scenarios are: {}",
            scenarios.join(", ")
        ));
    }
    Ok(chosen)
}

/// Runs `scenarios` one after another with `run` (those named in the
/// variable `filter`, separated by commas, when it is set), saying how each
/// went as it ends. Panics when the filter names a scenario that does not
/// exist, or selects none.
pub async fn run_scenarios<F, Fut>(filter: &str, scenarios: &[&'static str], mut run: F) -> Vec<Row>
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Row>,
{
    let value = std::env::var(filter).ok();
    let chosen =
        selected(value.as_deref(), scenarios).unwrap_or_else(|error| panic!("{filter}: {error}"));
    let mut rows = Vec::new();
    for scenario in chosen {
        let started = Instant::now();
        let row = run(scenario).await;
        eprintln!(
            "{scenario}: {} ({:.0}s)",
            match (&row.skipped, row.ok()) {
                (Some(why), _) => format!("skipped ({why})"),
                (None, true) => "ok".to_string(),
                (None, false) => "FAILED".to_string(),
            },
            started.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    assert!(!rows.is_empty(), "{filter}: no scenario ran");
    rows
}

/// Prints the table of `rows` and fails with the problems of those that
/// are not ok.
pub fn assert_all_ok(rows: &[Row]) {
    let table = table(rows);
    eprintln!("\n{table}");
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.ok()).collect();
    assert!(
        failed.is_empty(),
        "{table}\n{}",
        failed
            .iter()
            .map(|r| format!("{}: {}", r.scenario, r.problem))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// The table of results, as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | fault | sent | expected at sink | at sink | lost | duplicated | dead-lettered | poison planted | result |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.fault,
            r.sent,
            r.expected,
            r.processed,
            r.lost,
            r.duplicated,
            r.dead,
            r.planted,
            match (&r.skipped, r.ok()) {
                (Some(why), _) => format!("skipped: {why}"),
                (None, true) => "ok".to_string(),
                (None, false) => "FAILED".to_string(),
            }
        ));
    }
    out
}

/// What the sink holds: lines, and the distinct keys among them.
pub struct SinkCount {
    pub lines: u64,
    pub keys: HashSet<String>,
    /// Lines that are not JSON or have no key.
    pub unreadable: u64,
}

/// Reads a sink file; `key` names the record a line stands for.
pub fn read_sink(path: &std::path::Path, key: fn(&Value) -> Option<String>) -> SinkCount {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut count = SinkCount {
        lines: 0,
        keys: HashSet::new(),
        unreadable: 0,
    };
    for line in text.lines() {
        count.lines += 1;
        match serde_json::from_str::<Value>(line)
            .ok()
            .as_ref()
            .and_then(key)
        {
            Some(k) => {
                count.keys.insert(k);
            }
            None => count.unreadable += 1,
        }
    }
    count
}

/// A pipeline run under `warren supervise`, with a sink the checker reads.
pub struct Run {
    pub file: PipelineFile,
    pub pipeline: warren::Pipeline,
    /// Started by [`Run::start`], or later by [`Run::supervise`].
    pub supervisor: Option<ChildGuard>,
    pub sink: PathBuf,
    /// The keys the sink must end up with.
    pub expected: HashSet<String>,
    pub key: fn(&Value) -> Option<String>,
    /// Messages sent.
    pub sent: u64,
    /// Poison sent (it must all be dead-lettered).
    pub planted: u64,
    /// Seeds kept back until [`Run::release`]: the run cannot end before
    /// its faults came, however slowly a loaded machine brings them.
    held: std::sync::Mutex<Vec<(String, String)>>,
    released: std::sync::atomic::AtomicBool,
    _cleanup: Cleanup,
}

impl Run {
    /// Declares the pipeline of `yaml` (`{name}` and `{sink}` filled in)
    /// and starts a supervisor on it. The sink goes to `sink`, or to a file
    /// in the run's directory.
    pub async fn start(
        prefix: &str,
        yaml: &str,
        sink: Option<PathBuf>,
        key: fn(&Value) -> Option<String>,
    ) -> Run {
        let mut run = Run::declared(prefix, yaml, sink, key).await;
        run.supervise();
        run
    }

    /// Starts the supervisor (of a run made by [`Run::declared`]).
    pub fn supervise(&mut self) {
        self.supervisor = Some(supervise(&self.file));
    }

    /// Like [`Run::start`], without starting the supervisor.
    pub async fn declared(
        prefix: &str,
        yaml: &str,
        sink: Option<PathBuf>,
        key: fn(&Value) -> Option<String>,
    ) -> Run {
        let probe = PipelineFile::new(prefix, "");
        let sink = sink.unwrap_or_else(|| probe.file("sink.jsonl"));
        std::fs::write(
            &probe.path,
            yaml.replace("{name}", &probe.name)
                .replace("{sink}", &sink.display().to_string()),
        )
        .unwrap();
        let file = probe;
        let cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
        let mut pipeline = warren::config::load(&file.path).expect("a valid pipeline");
        // The test's own connections go where its `warren` processes go.
        pipeline.broker.urls = warren::BrokerUrls::parse(&common::amqp_url()).expect("broker URLs");
        common::declare(&pipeline).await;
        Run {
            file,
            pipeline,
            supervisor: None,
            sink,
            expected: HashSet::new(),
            key,
            sent: 0,
            planted: 0,
            held: Default::default(),
            released: Default::default(),
            _cleanup: cleanup,
        }
    }

    /// Sends the seeds kept back (at the next look of [`Run::until_done`]):
    /// call it once the scenario's faults came.
    pub fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Distinct records at the sink now.
    pub fn progress(&self) -> usize {
        read_sink(&self.sink, self.key).keys.len()
    }

    /// Starts another supervisor (after the first was killed).
    pub fn restart_supervisor(&mut self) {
        self.supervise();
    }

    /// The supervisor.
    pub fn supervisor(&mut self) -> &mut ChildGuard {
        self.supervisor.as_mut().expect("a supervisor was started")
    }

    /// Messages in the dead-letter queues, or `None` if the broker is away.
    pub async fn dead(&self) -> Option<u64> {
        let conn = common::try_connect().await?;
        let mut total = 0;
        for stage in &self.pipeline.stages {
            let queue = format!("{}.{}.dead", self.pipeline.name, stage.name);
            total += u64::from(common::queue_state(&conn, &queue).await?.0);
        }
        let _ = conn.close(200, "".into()).await;
        Some(total)
    }

    /// Calls `fault` with the time since the start about every 250 ms until
    /// the sink holds every expected record and the poison is dead-lettered,
    /// or `limit` passes. True when the run completed.
    pub async fn until_done(&self, limit: Duration, mut fault: impl FnMut(Duration)) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            fault(started.elapsed());
            if self.released.load(std::sync::atomic::Ordering::SeqCst) {
                let held = std::mem::take(&mut *self.held.lock().unwrap());
                if !held.is_empty() {
                    send_all(&self.pipeline, "expand", held.into_iter()).await;
                }
            }
            let count = read_sink(&self.sink, self.key);
            if count.keys.len() >= self.expected.len() && self.dead().await == Some(self.planted) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// Stops the supervisor (it drains its workers) and checks the sink.
    pub async fn finish(&mut self, scenario: &'static str, fault: String, done: bool) -> Row {
        self.supervisor().signal("TERM");
        let stopped = self.supervisor().wait();
        let count = read_sink(&self.sink, self.key);
        let dead = self.dead().await.unwrap_or(u64::MAX);
        let mut row = Row {
            scenario,
            fault,
            sent: self.sent,
            expected: self.expected.len() as u64,
            processed: count.keys.intersection(&self.expected).count() as u64,
            lost: self.expected.difference(&count.keys).count() as u64,
            duplicated: count.lines - count.keys.len() as u64,
            dead,
            planted: self.planted,
            problem: String::new(),
            skipped: None,
        };
        if count.unreadable > 0 {
            row.fail(format!("{} unreadable lines at the sink", count.unreadable));
        }
        if !done {
            row.fail("the run did not complete in time");
        }
        if !stopped.success() {
            row.fail(format!("the supervisor ended with {stopped}"));
        }
        if !row.problem.is_empty() || row.lost > 0 || row.dead != row.planted {
            row.fail(format!("supervisor log (end):\n{}", self.log_tail(40)));
        }
        row
    }

    /// The last `lines` lines of the supervisor's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The supervisor's log (its workers' output included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file.file("supervisor.log")).unwrap_or_default()
    }
}

/// Finishes a run whose `wanted` faults had to come before its end, at
/// the progress given in `at`.
pub async fn finish_with_faults(
    mut run: Run,
    scenario: &'static str,
    fault: String,
    done: bool,
    at: &[usize],
    wanted: usize,
) -> Row {
    let expected = run.expected.len();
    let mut row = run.finish(scenario, fault, done).await;
    if at.len() < wanted || at.iter().any(|p| *p >= expected) {
        row.fail(format!(
            "{wanted} faults were wanted during the run; they came at {at:?} of {expected}"
        ));
    }
    row
}

/// How the seeds of fanout3 are sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    /// By warren's producer, with ids.
    WithIds,
    /// By a plain AMQP client, without message ids (as a PHP app might).
    IdLess,
    /// With ids, the last this many kept back until [`Run::release`].
    Held(u64),
    /// With ids, all queued before any worker starts (the caller starts
    /// the supervisor).
    Backlog,
}

/// Sends `(id, JSON body)` messages to `stage`, 64 confirms outstanding.
pub async fn send_all(
    pipeline: &warren::Pipeline,
    stage: &str,
    messages: impl Iterator<Item = (String, String)>,
) {
    use futures_util::StreamExt;
    let producer = warren::Producer::connect(pipeline).await.unwrap();
    let sends = messages.map(|(id, body)| {
        let producer = producer.clone();
        async move {
            producer
                .send_json(stage, &id, body.as_bytes())
                .await
                .unwrap();
        }
    });
    futures_util::stream::iter(sends)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    producer.close().await;
}

/// fanout3 (the benchmark workload: seeds -> 10 parts each -> sha256 ->
/// sink) with two processes for `expand` and for `work`, and `seeds` seeds
/// sent.
pub async fn fanout3(prefix: &str, seeds: u64, sink: Option<PathBuf>) -> Run {
    fanout3_with(prefix, seeds, sink, Seeds::WithIds).await
}

/// [`fanout3`] with its seeds queued and no supervisor yet
/// ([`Run::supervise`] starts it).
pub async fn fanout3_backlog(prefix: &str, seeds: u64) -> Run {
    fanout3_with(prefix, seeds, None, Seeds::Backlog).await
}

/// [`fanout3`] with its last `held` seeds kept back until [`Run::release`].
pub async fn fanout3_held(prefix: &str, seeds: u64, held: u64) -> Run {
    fanout3_with(prefix, seeds, None, Seeds::Held(held)).await
}

/// [`fanout3`], its seeds sent as `how` says.
pub async fn fanout3_with(prefix: &str, seeds: u64, sink: Option<PathBuf>, how: Seeds) -> Run {
    let worker = common::example_bin("fanout3-worker");
    let yaml = format!(
        "
pipeline: {{name}}
defaults:
  prefetch: 50
  concurrency: 20
  timeout: 10s
  retry: {{ attempts: 5, backoff: [1s, 2s] }}
stages:
  expand:
    command: [{worker}]
    outputs: [work]
    scale: {{ min: 2, max: 2 }}
  work:
    command: [{worker}]
    outputs: [sink]
    scale: {{ min: 2, max: 2 }}
  sink:
    sink: {{ path: {{sink}} }}
",
        worker = worker.display()
    );
    let mut run = Run::declared(prefix, &yaml, sink, |line| {
        Some(format!(
            "{}/{}",
            line["id"].as_u64()?,
            line["part"].as_u64()?
        ))
    })
    .await;
    let seed = |i: u64| serde_json::json!({"id": i, "body": "x".repeat(64)});
    match how {
        Seeds::WithIds => {
            run.supervise();
            let seeds = (0..seeds).map(|i| (format!("s{i}"), seed(i).to_string()));
            send_all(&run.pipeline, "expand", seeds).await;
        }
        Seeds::Backlog => {
            let seeds = (0..seeds).map(|i| (format!("s{i}"), seed(i).to_string()));
            send_all(&run.pipeline, "expand", seeds).await;
        }
        Seeds::Held(held) => {
            run.supervise();
            let now = seeds.saturating_sub(held);
            let first = (0..now).map(|i| (format!("s{i}"), seed(i).to_string()));
            send_all(&run.pipeline, "expand", first).await;
            *run.held.lock().unwrap() = (now..seeds)
                .map(|i| (format!("s{i}"), seed(i).to_string()))
                .collect();
        }
        Seeds::IdLess => {
            let conn = common::connect().await;
            let channel = conn.create_channel().await.unwrap();
            channel.confirm_select(Default::default()).await.unwrap();
            let mut confirms = Vec::new();
            for i in 0..seeds {
                let confirm = channel
                    .basic_publish(
                        run.pipeline.name.as_str().into(),
                        "expand".into(),
                        Default::default(),
                        seed(i).to_string().as_bytes(),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap();
                confirms.push(confirm);
            }
            for confirm in confirms {
                assert!(confirm.await.unwrap().is_ack());
            }
            let _ = conn.close(200, "".into()).await;
            // Queued before the workers start, as an app's backlog would
            // be: the kills come while the seeds are handled.
            run.supervise();
        }
    }
    run.sent = seeds;
    run.expected = (0..seeds)
        .flat_map(|i| (0..10).map(move |p| format!("{i}/{p}")))
        .collect();
    run
}

fn supervise(file: &PipelineFile) -> ChildGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    if let Some(management) = common::management_url() {
        command.env("WARREN_MANAGEMENT_URL", management);
    }
    ChildGuard(
        command
            .args(["supervise", file.path.to_str().unwrap(), "--poll", "500ms"])
            .env("AMQP_URL", common::amqp_url())
            .env("WARREN_TEST_RECORD", file.file("record.txt"))
            .stdout(Stdio::null())
            .stderr(common::log_file(&file.file("supervisor.log")))
            .spawn()
            .expect("start warren supervise"),
    )
}

/// A random element.
pub fn pick(items: &[u32]) -> Option<u32> {
    if items.is_empty() {
        return None;
    }
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Some(items[(random % items.len() as u64) as usize])
}

/// Sends `signal` (`KILL`, `TERM`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status();
}

/// Starts the broker's application again when dropped, whatever happened.
pub struct BrokerUp;

impl Drop for BrokerUp {
    fn drop(&mut self) {
        let _ = common::ctl_command()
            .arg("start_app")
            .stdout(Stdio::null())
            .status();
        let _ = common::ctl_command()
            .args(["await_startup", "--timeout", "120"])
            .stdout(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::selected;

    const ALL: &[&str] = &["kill", "idless", "alarm"];

    #[test]
    fn names_with_a_minus_leave_those_out() {
        assert_eq!(selected(Some("-idless"), ALL), Ok(vec!["kill", "alarm"]));
        assert_eq!(selected(Some("-kill,-alarm"), ALL), Ok(vec!["idless"]));
        assert!(selected(Some("-kill,-idless,-alarm"), ALL).is_err());
        assert!(selected(Some("-nosuch"), ALL).is_err());
    }

    #[test]
    fn no_filter_runs_every_scenario_in_order() {
        assert_eq!(selected(None, ALL), Ok(ALL.to_vec()));
    }

    #[test]
    fn a_filter_keeps_the_order_of_the_scenarios() {
        assert_eq!(
            selected(Some("alarm, kill"), ALL),
            Ok(vec!["kill", "alarm"])
        );
    }

    #[test]
    fn a_name_that_matches_no_scenario_is_an_error() {
        let error = selected(Some("kill,alram"), ALL).unwrap_err();
        assert!(error.contains("no scenario named alram"), "{error}");
        assert!(error.contains("kill, idless, alarm"), "{error}");
    }

    #[test]
    fn a_filter_that_selects_nothing_is_an_error() {
        assert!(selected(Some(""), ALL).is_err());
        assert!(selected(Some(" , "), ALL).is_err());
    }
}
