//! Rolling deploys (DESIGN.md, *Stage control*) with real processes and the
//! real broker: a new program file rolls a stage's workers one at a time
//! under a steady flow (every message once, never fewer workers than
//! `scale.min`); a broken one stops the roll and the old workers keep
//! working, until a fixed one rolls; `warren restart FILE STAGE` rolls the workers of two
//! supervisors.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use serde_json::{Value, json};
use warren::Producer;

const LONG: Duration = Duration::from_secs(120);

/// A pipeline whose stage `work` runs `worker.sh` (two to three workers).
fn pipeline(prefix: &str) -> PipelineFile {
    let file = PipelineFile::new(
        prefix,
        "
pipeline: {name}
stages:
  work:
    command: [./worker.sh]
    prefetch: 5
    concurrency: 2
    timeout: 10s
    scale: { min: 2, max: 2 }
",
    );
    write_worker(&file, "v1");
    file
}

/// Writes `worker.sh`: the test worker recording into `{version}.txt`,
/// replacing the file at once (as a deploy tool does). It takes a second
/// to start (as a real program loading its data does): a roll that did not
/// wait for it would leave the stage with fewer consumers.
fn write_worker(file: &PipelineFile, version: &str) {
    let script = format!(
        "#!/bin/sh\nsleep 1\nWARREN_TEST_RECORD={} exec {} work\n",
        file.file(&format!("{version}.txt")).display(),
        example_bin("test-worker").display()
    );
    deploy(file, &script);
}

/// Replaces `worker.sh` with `script` (a new file renamed over it).
fn deploy(file: &PipelineFile, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let new = file.file("worker.sh.new");
    std::fs::write(&new, script).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, file.file("worker.sh")).unwrap();
}

fn stage(status: &Value, name: &str) -> Value {
    status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .cloned()
        .unwrap_or_default()
}

/// Running worker pids of `work`, per supervisor.
fn pids(status: &Value) -> Vec<Vec<u64>> {
    status["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut pids: Vec<u64> = s["stages"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["processes"].as_array().unwrap().clone())
                .filter(|p| p["state"] == "running")
                .map(|p| p["pid"].as_u64().unwrap())
                .collect();
            pids.sort();
            pids
        })
        .collect()
}

fn log(file: &PipelineFile, name: &str) -> String {
    std::fs::read_to_string(file.file(name)).unwrap_or_default()
}

fn handled(file: &PipelineFile, version: &str) -> usize {
    records(&file.file(&format!("{version}.txt"))).len()
}

/// A steady flow of messages `m0`, `m1`, ... to `work` until `sending`
/// is cleared; `sent` counts them.
struct Flow {
    sent: Arc<AtomicU64>,
    sending: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Flow {
    async fn start(pipeline: &warren::Pipeline) -> Flow {
        let producer = Producer::connect(pipeline).await.unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let sending = Arc::new(AtomicBool::new(true));
        let task = {
            let (sent, sending) = (sent.clone(), sending.clone());
            tokio::spawn(async move {
                while sending.load(Ordering::Relaxed) {
                    let n = sent.load(Ordering::Relaxed);
                    producer
                        .send_with_id("work", &format!("m{n}"), &json!({"n": n, "sleep_ms": 20}))
                        .await
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Flow {
            sent,
            sending,
            task,
        }
    }

    /// Stops sending; every message sent must be handled once, in the
    /// records of any version.
    async fn finish(self, file: &PipelineFile, versions: &[&str]) {
        self.sending.store(false, Ordering::Relaxed);
        self.task.await.unwrap();
        let total = self.sent.load(Ordering::Relaxed) as usize;
        let all = || {
            versions
                .iter()
                .flat_map(|v| records(&file.file(&format!("{v}.txt"))))
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(LONG, || async { all().len() >= total }).await,
            "not everything was handled: {} of {total}",
            all().len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut seen: HashMap<String, u32> = HashMap::new();
        for (_, id, _) in all() {
            *seen.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "handled twice: {twice:?}");
        for n in 0..total {
            assert!(seen.contains_key(&format!("m{n}")), "m{n} lost");
        }
    }
}

/// Watches `warren status` in a thread until `stop`: the fewest running
/// workers of `work` and the fewest consumers of its queue (the broker's
/// count) seen, and how many looks saw them.
fn watch_workers(path: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64, u32)> {
    let path = path.to_str().unwrap().to_string();
    std::thread::spawn(move || {
        let mut fewest = u64::MAX;
        let mut consumers = u64::MAX;
        let mut looks = 0;
        while !stop.load(Ordering::Relaxed) {
            let out = warren(&["status", &path, "--json"]);
            if let Ok(status) = serde_json::from_slice::<Value>(&out.stdout) {
                let workers = stage(&status, "work")["workers"].as_u64().unwrap_or(0);
                fewest = fewest.min(workers);
                let on_broker = stage(&status, "work")["consumers"].as_u64().unwrap_or(0);
                consumers = consumers.min(on_broker);
                looks += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (fewest, consumers, looks)
    })
}

/// Waits until the supervisor logged that it follows restart requests
/// and runs two workers.
async fn ready(file: &PipelineFile, logs: &[&str]) {
    assert!(
        eventually(LONG, || async {
            logs.iter()
                .all(|l| log(file, l).contains("following `warren restart` requests"))
                && pids(&status_json(file)).iter().all(|p| p.len() == 2)
                && pids(&status_json(file)).len() == logs.len()
        })
        .await,
        "the supervisors did not start: {}",
        log(file, logs[0])
    );
}

#[tokio::test]
async fn a_new_program_file_rolls_the_workers_under_load_losing_nothing() {
    let file = pipeline("deploy");
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let loaded = warren::config::load(&file.path).unwrap();
    declare(&loaded).await;
    let mut supervisor = supervise_in(&file, file.dir.path(), "supervisor.log", &[]);
    ready(&file, &["supervisor.log"]).await;
    let before = pids(&status_json(&file))[0].clone();

    let flow = Flow::start(&loaded).await;
    assert!(
        eventually(LONG, || async { handled(&file, "v1") >= 50 }).await,
        "the flow is handled"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_workers(&file.path, stop.clone());
    write_worker(&file, "v2");
    assert!(
        eventually(LONG, || async {
            log(&file, "supervisor.log")
                .contains("roll done (the program file changed): 2 workers replaced")
        })
        .await,
        "the roll did not end\n{}",
        log(&file, "supervisor.log")
    );
    stop.store(true, Ordering::Relaxed);
    let (fewest, consumers, looks) = watcher.join().unwrap();
    assert!(looks >= 3, "status was read {looks} times during the roll");
    eprintln!("fewest during the roll: {fewest} workers, {consumers} consumers ({looks} looks)");
    assert!(
        consumers >= 2,
        "{consumers} consumers during the roll: an old worker stopped before its replacement consumed"
    );
    assert!(
        fewest >= 2,
        "{fewest} workers ran during the roll (scale.min 2)"
    );
    let after = pids(&status_json(&file))[0].clone();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every old worker was replaced: {before:?} -> {after:?}"
    );
    let at_roll_end = handled(&file, "v2");
    assert!(
        eventually(LONG, || async { handled(&file, "v2") >= at_roll_end + 50 }).await,
        "the new program handles the flow"
    );
    let v1_now = handled(&file, "v1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        handled(&file, "v1"),
        v1_now,
        "the old program still handles"
    );
    assert!(stage(&status_json(&file), "work").get("deploys").is_none());
    flow.finish(&file, &["v1", "v2"]).await;
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
}

#[tokio::test]
async fn a_broken_program_stops_the_roll_the_old_workers_keep_working_and_a_fixed_one_rolls() {
    let file = pipeline("deploybad");
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let loaded = warren::config::load(&file.path).unwrap();
    declare(&loaded).await;
    let mut supervisor = supervise_in(&file, file.dir.path(), "supervisor.log", &[]);
    ready(&file, &["supervisor.log"]).await;
    let before = pids(&status_json(&file))[0].clone();
    let flow = Flow::start(&loaded).await;
    assert!(eventually(LONG, || async { handled(&file, "v1") >= 20 }).await);

    deploy(
        &file,
        "#!/bin/sh\necho 'broken build: cannot start' >&2\nexit 1\n",
    );
    assert!(
        eventually(LONG, || async {
            stage(&status_json(&file), "work")["deploys"]
                .as_array()
                .is_some_and(|d| {
                    d.iter()
                        .any(|d| d.as_str().unwrap().contains("roll stopped"))
                })
        })
        .await,
        "status says the roll stopped: {}\n{}",
        stage(&status_json(&file), "work"),
        log(&file, "supervisor.log")
    );
    let log_text = log(&file, "supervisor.log");
    assert!(log_text.contains("ROLL STOPPED"), "{log_text}");
    assert!(
        log_text.contains("broken build: cannot start"),
        "{log_text}"
    );
    let out = warren(&["status", file.path.to_str().unwrap()]);
    assert!(
        text(&out).0.contains("stage work: roll stopped"),
        "{:?}",
        text(&out)
    );
    assert_eq!(
        pids(&status_json(&file))[0],
        before,
        "the old workers keep running"
    );
    let now = handled(&file, "v1");
    assert!(
        eventually(LONG, || async { handled(&file, "v1") >= now + 50 }).await,
        "the old workers keep handling"
    );

    // A fixed build starts a new roll, which ends.
    write_worker(&file, "v2");
    assert!(
        eventually(LONG, || async {
            log(&file, "supervisor.log")
                .contains("roll done (the program file changed): 2 workers replaced")
        })
        .await,
        "the fixed build did not roll\n{}",
        log(&file, "supervisor.log")
    );
    assert!(
        eventually(LONG, || async {
            stage(&status_json(&file), "work").get("deploys").is_none()
        })
        .await,
        "status still shows a roll: {}",
        stage(&status_json(&file), "work")
    );
    let v2 = handled(&file, "v2");
    assert!(
        eventually(LONG, || async { handled(&file, "v2") >= v2 + 20 }).await,
        "the fixed program handles the flow"
    );
    flow.finish(&file, &["v1", "v2"]).await;
    supervisor.signal("TERM");
    assert_eq!(supervisor.wait().code(), Some(0));
}

#[tokio::test]
async fn warren_restart_rolls_the_workers_of_every_supervisor() {
    let file = pipeline("restart");
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let loaded = warren::config::load(&file.path).unwrap();
    declare(&loaded).await;
    let path = file.path.to_str().unwrap().to_string();

    // Bad use first: an unknown stage.
    let out = warren(&["restart", &path, "nope"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("nope"), "{:?}", text(&out));

    let (one, two) = (file.file("one"), file.file("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let mut first = supervise_in(&file, &one, "one.log", &[]);
    let mut second = supervise_in(&file, &two, "two.log", &[]);
    ready(&file, &["one.log", "two.log"]).await;
    let before: Vec<u64> = pids(&status_json(&file)).concat();
    assert_eq!(before.len(), 4);
    let flow = Flow::start(&loaded).await;

    let out = warren(&["restart", &path, "work"]);
    assert!(out.status.success(), "{:?}", text(&out));
    for name in ["one.log", "two.log"] {
        assert!(
            eventually(LONG, || async {
                log(&file, name).contains("roll done (restart asked by warren restart on")
            })
            .await,
            "{name}: no roll\n{}",
            log(&file, name)
        );
    }
    let after = pids(&status_json(&file));
    assert!(after.iter().all(|p| p.len() == 2), "{after:?}");
    assert!(
        after.concat().iter().all(|p| !before.contains(p)),
        "every worker replaced: {before:?} -> {after:?}"
    );
    flow.finish(&file, &["v1"]).await;
    first.signal("TERM");
    second.signal("TERM");
    first.wait();
    second.wait();
    for name in ["one.log", "two.log"] {
        assert_eq!(
            log(&file, name).matches("replacing its 2 workers").count(),
            1,
            "one roll per request: {}",
            log(&file, name)
        );
    }
}
