//! The PostgreSQL sink against a real PostgreSQL of the test's own
//! (`common/postgres.rs`: Debian's binaries, a temporary data folder, a
//! free port, removed after): rows land once each; a refused row is
//! dead-lettered with the server's reason while its batch's neighbours
//! land; a table that does not fit is refused by `warren validate`; a
//! SIGKILLed sink worker and a database restart under load leave every id
//! exactly once.

mod common;
#[path = "common/postgres.rs"]
mod pg;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use pg::Postgres;

/// A pipeline whose one stage writes table `views`; `{url}` is the server.
const PIPELINE: &str = "
pipeline: {name}
defaults:
  timeout: 30s
  retry: { attempts: 3, backoff: [1s] }
stages:
  store:
    sink:
      postgres: { url: \"{url}\", table: views, body: doc, columns: { n: n }, batch: 200 }
";

const TABLE: &str = "CREATE TABLE views (id text PRIMARY KEY, n integer CHECK (n >= 0), doc jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())";

fn pipeline(server: &Postgres, url: &str) -> PipelineFile {
    let _ = server;
    PipelineFile::new("pg", &PIPELINE.replace("{url}", url))
}

/// `count` lines `{"n": i}` from `from`, in a file of the pipeline's folder.
fn input(file: &PipelineFile, name: &str, from: usize, count: usize) -> std::path::PathBuf {
    let path = file.file(name);
    let lines: String = (from..from + count)
        .map(|i| {
            format!(
                "{{\"key\": \"v{i}\", \"n\": {i}, \"page\": \"/p/{}\"}}\n",
                i % 97
            )
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

/// `warren send`, each line's id its `key` (`v{n}`).
fn send(file: &PipelineFile, input: &Path) {
    let out = warren(&[
        "send",
        file.path.to_str().unwrap(),
        "store",
        input.to_str().unwrap(),
        "--id-field",
        "key",
    ]);
    assert!(out.status.success(), "send: {}", text(&out).1);
}

/// `warren worker FILE --stage store`, its log in the pipeline's folder.
fn worker(file: &PipelineFile, env: &[(&str, &str)]) -> ChildGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    command
        .args(["worker", file.path.to_str().unwrap(), "--stage", "store"])
        .env("AMQP_URL", amqp_url())
        .stdout(std::process::Stdio::null())
        .stderr(log_file(&file.file("worker.log")));
    for (key, value) in env {
        command.env(key, value);
    }
    ChildGuard(command.spawn().expect("start warren worker"))
}

fn rows(server: &Postgres) -> (u64, u64) {
    let line = server.psql("SELECT count(*), count(DISTINCT n) FROM views");
    let (all, distinct) = line.split_once('|').unwrap();
    (all.parse().unwrap(), distinct.parse().unwrap())
}

/// Waits until the table holds `count` rows; false after `limit`.
async fn until_rows(server: &Postgres, count: u64, limit: Duration) -> bool {
    eventually(limit, || async { rows(server).0 >= count }).await
}

fn worker_log(file: &PipelineFile) -> String {
    std::fs::read_to_string(file.file("worker.log")).unwrap_or_default()
}

#[tokio::test]
async fn rows_land_once_each_and_the_pg_variables_are_honoured() {
    let server = Postgres::start();
    server.psql(TABLE);
    // No port in the URL: PGPORT gives it.
    let file = pipeline(&server, "postgres://warren@127.0.0.1/postgres");
    let port = server.port.to_string();
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let out = warren_env(
        &["validate", file.path.to_str().unwrap()],
        &[("PGPORT", &port)],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("has the columns the sink writes"),
        "{stdout}"
    );
    let out = warren_env(
        &["declare", file.path.to_str().unwrap()],
        &[("PGPORT", &port)],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    // The same 1,000 lines twice: the same ids (`--id-field`), so each is
    // one row.
    let lines = input(&file, "in.jsonl", 0, 1000);
    send(&file, &lines);
    send(&file, &lines);
    let _worker = worker(&file, &[("PGPORT", &port)]);
    assert!(
        until_rows(&server, 1000, Duration::from_secs(60)).await,
        "{:?}\n{}",
        rows(&server),
        worker_log(&file)
    );
    let conn = connect().await;
    let queue = format!("{}.store", file.name);
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue_state(&conn, &queue)
                .await
                .is_some_and(|(ready, _)| ready == 0)
        })
        .await
    );
    // Everything handled: nothing more came, nothing was dead-lettered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rows(&server), (1000, 1000));
    assert_eq!(
        server.psql("SELECT count(*) FROM views WHERE id = 'v' || n"),
        "1000"
    );
    let dead = drain_queue(&conn, &format!("{queue}.dead")).await;
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    // The body is the jsonb document, the mapped field its column.
    assert_eq!(
        server.psql("SELECT doc->>'page', n FROM views WHERE n = 98"),
        "/p/1|98"
    );
}

#[tokio::test]
async fn a_refused_row_is_dead_lettered_with_the_reason_and_its_neighbours_land() {
    let server = Postgres::start();
    server.psql(TABLE);
    let file = pipeline(&server, &server.url());
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    // 300 good rows around two the server refuses: a CHECK constraint and
    // a value that is not an integer. One batch (the worker starts after).
    let line = |i: usize| format!("{{\"key\": \"v{i}\", \"n\": {i}}}\n");
    let mut lines: String = (0..300).map(line).collect();
    lines.push_str("{\"key\": \"b1\", \"n\": -5, \"bad\": \"check\"}\n{\"key\": \"b2\", \"n\": \"seven\", \"bad\": \"type\"}\n");
    lines.extend((300..600).map(line));
    std::fs::write(file.file("in.jsonl"), lines).unwrap();
    send(&file, &file.file("in.jsonl"));
    let _worker = worker(&file, &[]);
    assert!(
        until_rows(&server, 600, Duration::from_secs(60)).await,
        "{:?}\n{}",
        rows(&server),
        worker_log(&file)
    );
    let conn = connect().await;
    let dead_queue = format!("{}.store.dead", file.name);
    let mut dead = Vec::new();
    for _ in 0..300 {
        dead.extend(drain_queue(&conn, &dead_queue).await);
        if dead.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_slice(&d.delivery.data).unwrap();
            (
                body["bad"].as_str().unwrap().to_string(),
                header(&d.delivery.properties, "x-warren-error").unwrap_or_default(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(
        reasons[0].0 == "check"
            && reasons[0].1.contains("23514")
            && reasons[0].1.contains("views_n_check"),
        "{reasons:#?}"
    );
    assert!(
        reasons[1].0 == "type" && reasons[1].1.contains("22P02") && reasons[1].1.contains("seven"),
        "{reasons:#?}"
    );
    assert_eq!(rows(&server), (600, 600));
}

#[tokio::test]
async fn a_table_that_does_not_fit_is_refused_at_validate_and_an_absent_database_is_said() {
    let server = Postgres::start();
    server.psql("CREATE TABLE views (id integer, n text GENERATED ALWAYS AS ('x') STORED, doc text, must int NOT NULL)");
    let file = pipeline(&server, &server.url());
    let out = warren(&["validate", file.path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    for (path, what) in [
        (
            "stages.store.sink.postgres.id:",
            "is integer; message ids are text",
        ),
        (
            "stages.store.sink.postgres.body:",
            "column `doc` is text; the whole body needs jsonb",
        ),
        ("stages.store.sink.postgres.columns.n:", "is generated"),
        (
            "stages.store.sink.postgres:",
            "column `must` (integer) is NOT NULL",
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(path) && l.contains(what)),
            "{path} {what}:\n{stderr}"
        );
    }
    // declare refuses it too, and declares nothing.
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out).1);
    // A missing table is named.
    server.psql("DROP TABLE views");
    let out = warren(&["validate", file.path.to_str().unwrap()]);
    let stderr = text(&out).1;
    assert!(
        stderr.contains("sink.postgres.table: table `views` does not exist"),
        "{stderr}"
    );
    // No database: the file is fine, and the output says the table was not checked.
    let port = server.port;
    drop(server);
    let file = PipelineFile::new(
        "pg",
        &PIPELINE.replace(
            "{url}",
            &format!("postgres://warren:s3cret@127.0.0.1:{port}/postgres"),
        ),
    );
    let out = warren(&["validate", file.path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("could not connect to PostgreSQL, so its table was NOT checked"),
        "{stdout}"
    );
    assert!(
        !format!("{stdout}{stderr}").contains("s3cret"),
        "{stdout}{stderr}"
    );
}

/// Messages sent while the sink writes; the worker started before.
const LOAD: usize = 20_000;

#[tokio::test]
async fn a_sigkilled_sink_worker_restarted_leaves_every_id_once() {
    let server = Postgres::start();
    server.psql(TABLE);
    let file = pipeline(&server, &server.url());
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    send(&file, &input(&file, "in.jsonl", 0, LOAD));
    for round in 0..3 {
        let mut worker = worker(&file, &[]);
        let before = rows(&server).0;
        assert!(
            eventually(Duration::from_secs(60), || async {
                rows(&server).0 > before + 500
            })
            .await,
            "round {round}: {:?}\n{}",
            rows(&server),
            worker_log(&file)
        );
        worker.signal("KILL");
        worker.wait();
    }
    let _worker = worker(&file, &[]);
    every_id_once_and_no_dead_letter(&server, &file, Duration::from_secs(120)).await;
}

#[tokio::test]
async fn a_database_restart_under_load_loses_nothing_and_duplicates_nothing() {
    let server = Postgres::start();
    server.psql(TABLE);
    let file = pipeline(&server, &server.url());
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let _worker = worker(&file, &[]);
    // The load goes on in chunks while the database restarts.
    let chunks: Vec<std::path::PathBuf> = (0..10)
        .map(|c| input(&file, &format!("in{c}.jsonl"), c * LOAD / 10, LOAD / 10))
        .collect();
    let sending = {
        let path = file.path.clone();
        std::thread::spawn(move || {
            for chunk in chunks {
                let out = warren(&[
                    "send",
                    path.to_str().unwrap(),
                    "store",
                    chunk.to_str().unwrap(),
                    "--id-field",
                    "key",
                ]);
                assert!(out.status.success(), "send: {}", text(&out).1);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(60), || async { rows(&server).0 > 1000 }).await,
        "{:?}\n{}",
        rows(&server),
        worker_log(&file)
    );
    // Down for a few seconds, twice, while rows are sent and written.
    assert!(
        rows(&server).0 < LOAD as u64,
        "the load ended before the restart"
    );
    for _ in 0..2 {
        server.stop();
        tokio::time::sleep(Duration::from_secs(3)).await;
        server.start_again();
        assert!(server.wait_ready(Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    sending.join().expect("sending");
    every_id_once_and_no_dead_letter(&server, &file, Duration::from_secs(180)).await;
    // The outage paused the stage and charged no message an attempt.
    let log = worker_log(&file);
    assert!(log.contains("pausing consumption"), "{log}");
    assert!(!log.contains("retrying in"), "{log}");
    assert!(!log.contains("stopped while holding it"), "{log}");
}

#[tokio::test]
async fn a_database_that_is_not_there_pauses_the_stage_without_showing_the_password() {
    // A port where nothing listens: the server is stopped and removed.
    let port = {
        let server = Postgres::start();
        server.port
    };
    let url = format!("postgres://warren:s3cret@127.0.0.1:{port}/postgres");
    let file = PipelineFile::new("pg", &PIPELINE.replace("{url}", &url));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let out = warren(&["declare", file.path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("NOT checked"), "{stdout}");
    send(&file, &input(&file, "in.jsonl", 0, 50));
    let mut worker = worker(&file, &[]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            worker_log(&file).matches("pausing consumption").count() >= 3
        })
        .await,
        "{}",
        worker_log(&file)
    );
    // While the outage lasts the worker holds what it prefetched (it gives
    // it back once a minute, not at each turn): the queue took the 50
    // messages sent, the 50 copies the first batch's failure gave back and
    // a copy of each probe's message, not 50 more at each turn.
    let queue = format!("{}.store", file.name);
    let published = published_into(&queue).await;
    assert!(
        (50..150).contains(&published),
        "{published} published into {queue}"
    );
    // Drained (SIGTERM), the worker gives back what it holds: every message
    // is in its queue as it came, attempt 1, never flagged redelivered;
    // nothing was retried, isolated or dead-lettered, and the password is
    // in no line of the log.
    worker.signal("TERM");
    assert!(worker.wait().success(), "{}", worker_log(&file));
    let conn = connect().await;
    let back = drain_queue(&conn, &queue).await;
    let attempts: Vec<Option<String>> = back
        .iter()
        .map(|m| header(&m.delivery.properties, "x-warren-attempt"))
        .filter(|a| a.as_deref().is_some_and(|a| a != "1"))
        .collect();
    // A quorum queue drops acks not yet applied when their channel closes
    // (the worker waits a moment before it closes): their messages would be
    // here twice, once flagged.
    let flagged = back.iter().filter(|m| m.delivery.redelivered).count();
    assert_eq!(
        back.len(),
        50,
        "{flagged} flagged redelivered\n{}\n{}",
        queue_report(&file, &["store"]).await,
        worker_log(&file)
    );
    assert!(attempts.is_empty(), "charged: {attempts:?}");
    assert!(back.iter().all(|m| !m.delivery.redelivered));
    let log = worker_log(&file);
    assert!(!log.contains("s3cret"), "{log}");
    assert!(!log.contains("retrying in"), "{log}");
    assert!(!log.contains("stopped while holding it"), "{log}");
    assert!(
        log.contains("cannot connect to PostgreSQL at warren@127.0.0.1"),
        "{log}"
    );
    for suffix in [".dead", ".isolated"] {
        let left = drain_queue(&conn, &format!("{queue}{suffix}")).await;
        assert!(left.is_empty(), "{} in {suffix}", left.len());
    }
}

/// How many messages were published into `queue` so far, as the
/// management API counts them (its figures lag by up to 5 s: read twice,
/// 6 s apart).
async fn published_into(queue: &str) -> u64 {
    let url = format!("http://guest:guest@127.0.0.1:15672/api/queues/%2f/{queue}");
    let read = || async {
        let response = reqwest::get(&url).await.ok()?;
        let queue: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        queue["message_stats"]["publish"].as_u64()
    };
    read().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    read()
        .await
        .expect("the management API counts what the queue took")
}

/// Waits up to `within` for the table to hold every id of the load, then
/// checks each is there once and the sink dead-lettered nothing.
async fn every_id_once_and_no_dead_letter(
    server: &Postgres,
    file: &PipelineFile,
    within: Duration,
) {
    assert!(
        until_rows(server, LOAD as u64, within).await,
        "{:?}\n{}",
        rows(server),
        worker_log(file)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rows(server), (LOAD as u64, LOAD as u64));
    let conn = connect().await;
    let dead = drain_queue(&conn, &format!("{}.store.dead", file.name)).await;
    assert!(dead.is_empty(), "{} dead letters", dead.len());
}
