//! The fault suite: pipelines under `warren supervise` while something
//! breaks (workers killed, connections closed, the broker restarted, the
//! supervisor killed, poison, a slow consumer, a full or unwritable sink
//! disk). A checker compares what reached the sink with what was sent:
//! nothing lost, nothing written twice, and exactly the planted poison
//! dead-lettered. The scenarios disturb the whole broker, so they run one
//! after another on a broker of the suite's own (`common::OwnBroker`, one
//! node on port 5711; the broker on 5672 is never touched); the table is
//! printed at the end:
//!
//! ```sh
//! cargo test --test faults -- --nocapture             # every scenario
//! WARREN_FAULTS=poison,kill cargo test --test faults   # some of them
//! WARREN_FAULTS=-slow,-disk cargo test --test faults  # all but those
//! WARREN_FAULTS=kill WARREN_FAULTS_PORT=5712 cargo test --test faults  # beside another
//! ```

#[path = "faults/alarm.rs"]
mod alarm;
mod common;
#[path = "faults/disk.rs"]
mod disk;
#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/poison.rs"]
mod poison;

use std::time::Duration;

use harness::*;

/// The scenarios, in the order they run.
const SCENARIOS: &[&str] = &[
    "kill",
    "idless",
    "close",
    "restart",
    "supervisor",
    "poison",
    "crash",
    "alarm",
    "idalarm",
    "slow",
    "disk",
    "unwritable",
];

/// The suite's own broker: one node on this port (management on 10000
/// more), so that it stops, alarms and cuts its own broker, never the one on
/// 5672, and runs beside the other tests. `WARREN_FAULTS_PORT` picks
/// another, so that two sets of scenarios can run at once (`.ci/test`).
fn port() -> u16 {
    std::env::var("WARREN_FAULTS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5711)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_faults() {
    let port = port();
    let broker = common::OwnBroker::start(&format!("wf{port}n"), port, 1);
    common::use_own_broker(&broker);
    let rows = run_scenarios("WARREN_FAULTS", SCENARIOS, |scenario| async move {
        // A task of its own, so a panic in one scenario is a failed row.
        tokio::spawn(run(scenario))
            .await
            .unwrap_or_else(|panic| Row::failed(scenario, format!("panicked: {panic}")))
    })
    .await;
    assert_all_ok(&rows);
}

async fn run(scenario: &'static str) -> Row {
    match scenario {
        "kill" => kill_workers(Seeds::WithIds).await,
        "idless" => kill_workers(Seeds::IdLess).await,
        "alarm" => alarm::memory_alarm().await,
        "idalarm" => alarm::idless_during_an_alarm().await,
        "crash" => poison::crash().await,
        "close" => close_connections().await,
        "restart" => restart_broker().await,
        "supervisor" => kill_supervisor().await,
        "poison" => poison::poison().await,
        "slow" => poison::slow_consumer().await,
        "disk" => disk::disk_full().await,
        "unwritable" => disk::unwritable_sink().await,
        other => Row::failed(other, "no such scenario".into()),
    }
}

/// SIGKILL of a random worker every 1-2 s, a dozen times; the
/// seeds sent with ids, or without (the workers give them ids, which must
/// not change when a worker is killed).
async fn kill_workers(seeds: Seeds) -> Row {
    let (scenario, prefix, what) = match seeds {
        Seeds::WithIds | Seeds::Held(_) | Seeds::Backlog => ("kill", "fkill", ""),
        Seeds::IdLess => ("idless", "fidless", "seeds without message ids; "),
    };
    let mut run = fanout3_with(prefix, 2500, None, seeds).await;
    let mut kills = 0;
    let mut last_kill_at = 0;
    let done = run
        .until_done(Duration::from_secs(240), |elapsed| {
            // At most a dozen: kills that come faster than workers restart
            // keep a stage down (its restart pause grows), proving nothing.
            if kills < 12 && elapsed.as_millis() as u64 >= next_kill_at(kills) {
                let pids = common::processes_of(&run.file.path);
                if let Some(pid) = pick(&pids) {
                    signal(pid, "KILL");
                    kills += 1;
                    last_kill_at = run.progress();
                }
            }
        })
        .await;
    let expected = run.expected.len();
    let mut row = run
        .finish(
            scenario,
            format!(
                "{what}SIGKILL a random worker every 1-2 s: {kills} kills, the last at {last_kill_at} of {expected} records"
            ),
            done,
        )
        .await;
    if kills < 5 {
        row.fail(format!("only {kills} kills: the run was too short"));
    }
    row
}

/// When the `n`th kill is due, in ms since the start: 1-2 s apart.
fn next_kill_at(n: u32) -> u64 {
    (0..n).map(|i| 1000 + u64::from(i * 379 % 1000)).sum()
}

/// `rabbitmqctl close_all_connections` three times during the run.
async fn close_connections() -> Row {
    let run = fanout3_held("fclose", 2500, 500).await;
    let mut closed_at = Vec::new();
    let done = run
        .until_done(Duration::from_secs(180), |elapsed| {
            let next = Duration::from_millis(1000 + 1500 * closed_at.len() as u64);
            if closed_at.len() < 3 && elapsed > next {
                common::rabbitmqctl(&["close_all_connections", "fault suite"]);
                closed_at.push(run.progress());
                if closed_at.len() == 3 {
                    run.release();
                }
            }
        })
        .await;
    let expected = run.expected.len();
    finish_with_faults(
        run,
        "close",
        format!("rabbitmqctl close_all_connections at {closed_at:?} of {expected} records"),
        done,
        &closed_at,
        3,
    )
    .await
}

/// `rabbitmqctl stop_app`, a pause, `start_app`, with quorum queues.
async fn restart_broker() -> Row {
    let run = fanout3_held("frestart", 2500, 500).await;
    let mut stopped_at = Vec::new();
    let done = run
        .until_done(Duration::from_secs(240), |elapsed| {
            if stopped_at.is_empty() && elapsed > Duration::from_secs(2) {
                let _up = BrokerUp;
                common::rabbitmqctl(&["stop_app"]);
                stopped_at.push(run.progress());
                std::thread::sleep(Duration::from_secs(5));
                run.release();
            }
        })
        .await;
    let expected = run.expected.len();
    finish_with_faults(
        run,
        "restart",
        format!(
            "rabbitmqctl stop_app at {stopped_at:?} of {expected} records, start_app 5 s later (quorum queues)"
        ),
        done,
        &stopped_at,
        1,
    )
    .await
}

/// SIGKILL of the supervisor: its workers stop (no orphans), and a new
/// supervisor finishes the run.
async fn kill_supervisor() -> Row {
    let mut run = fanout3("fsuper", 2500, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = common::processes_of(&run.file.path);
    let killed_at = run.progress();
    run.supervisor().signal("KILL");
    run.supervisor().wait();
    let gone = common::eventually(Duration::from_secs(40), || async {
        common::processes_of(&run.file.path).is_empty()
    })
    .await;
    let orphans = common::processes_of(&run.file.path);
    for pid in &orphans {
        signal(*pid, "KILL");
    }
    run.restart_supervisor();
    let done = run.until_done(Duration::from_secs(180), |_| {}).await;
    let mut row = run
        .finish(
            "supervisor",
            format!(
                "SIGKILL the supervisor ({} workers) at {killed_at} of {} records, start it again: {} orphans",
                before.len(),
                run.expected.len(),
                orphans.len()
            ),
            done,
        )
        .await;
    if killed_at >= row.expected as usize {
        row.fail(format!(
            "the run was complete before the kill ({killed_at} records)"
        ));
    }
    if before.is_empty() || !gone {
        row.fail(format!(
            "workers before the kill: {before:?}; still running 40 s after it: {orphans:?}"
        ));
    }
    row
}
