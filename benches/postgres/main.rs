//! Rows a second into PostgreSQL (BENCHMARKS.md): figures printed, no
//! timed assertion.
//!
//! ```sh
//! cargo bench -p warren-command --bench postgres      # --messages 100000 --batch 1000
//! ```
//!
//! On a PostgreSQL of its own (Debian's binaries, a temporary folder, the
//! defaults but `max_connections`), a table `id text PRIMARY KEY, n
//! integer, doc jsonb`:
//!
//! 1. the sink: MESSAGES messages (`{"n": i, "page": ...}`) sent to the
//!    stage first, then one `warren worker` (release build) writes them:
//!    rows a second from its start to the last row;
//! 2. the same with the queue filled while two workers write;
//! 3. the floor: the bench itself writing the same rows with the same
//!    statement, batch after batch on one connection, no broker: what the
//!    database takes.

#[path = "../../tests/common/postgres.rs"]
mod pg;

#[path = "../args.rs"]
mod args;
use args::value;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const TABLE: &str = "CREATE TABLE views (id text PRIMARY KEY, n integer, doc jsonb NOT NULL)";

fn warren() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    if let Ok(url) = std::env::var("AMQP_URL") {
        command.env("AMQP_URL", url);
    }
    command
}

fn count(server: &pg::Postgres) -> u64 {
    server
        .psql("SELECT count(*) FROM views")
        .parse()
        .unwrap_or(0)
}

/// Writes `lines` to the stage, starts `workers` sink workers, and times
/// them until the table holds every row: rows a second.
fn sink(server: &pg::Postgres, messages: u64, batch: u64, workers: u64, holds: u64) -> f64 {
    server.psql("TRUNCATE views");
    let dir = tempfile::tempdir().unwrap();
    let name = format!("bpg{}", std::process::id());
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}\nstages:\n  store:\n    scale: {{ max: {workers} }}\n    prefetch: {holds}\n    concurrency: {holds}\n    sink:\n      postgres: {{ url: \"{}\", table: views, body: doc, columns: {{ n: n }}, batch: {batch} }}\n",
            server.url()
        ),
    )
    .unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..messages)
        .map(|i| {
            format!(
                "{{\"key\": \"v{i}\", \"n\": {i}, \"page\": \"/p/{}\"}}\n",
                i % 97
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let file = file.to_str().unwrap();
    assert!(
        warren()
            .args(["declare", file])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let sent = warren()
        .args([
            "send",
            file,
            "store",
            input.to_str().unwrap(),
            "--id-field",
            "key",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(sent.success(), "warren send");
    let started = Instant::now();
    let mut children: Vec<_> = (0..workers)
        .map(|w| {
            warren()
                .args(["worker", file, "--stage", "store"])
                .env("WARREN_WORKER", w.to_string())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    while count(server) < messages {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed().as_secs_f64();
    for child in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    // The pipeline's queues go with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let connection = lapin::Connection::connect(&url, Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let pipeline = warren::config::load(std::path::Path::new(file)).unwrap();
        let topology = warren::Topology::plan(&pipeline);
        for queue in &topology.queues {
            let _ = channel
                .queue_delete(queue.name.as_str().into(), Default::default())
                .await;
        }
        let _ = channel
            .exchange_delete(topology.exchange.as_str().into(), Default::default())
            .await;
        let _ = connection.close(200, "".into()).await;
    });
    messages as f64 / took
}

/// The same rows and statement straight from here: rows a second.
fn floor(server: &pg::Postgres, messages: u64, batch: u64) -> f64 {
    server.psql("TRUNCATE views");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=warren dbname=postgres", server.port),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let statement = "INSERT INTO \"views\" (\"id\", \"n\", \"doc\") SELECT r.\"id\", r.\"n\", r.\"doc\" FROM jsonb_populate_recordset(NULL::\"views\", $1::text::jsonb) AS r ON CONFLICT (\"id\") DO NOTHING";
        let started = Instant::now();
        let mut i = 0;
        while i < messages {
            let end = (i + batch).min(messages);
            let rows: Vec<String> = (i..end)
                .map(|n| {
                    let doc = format!("{{\"key\": \"v{n}\", \"n\": {n}, \"page\": \"/p/{}\"}}", n % 97);
                    format!("{{\"id\": \"v{n}\", \"n\": {n}, \"doc\": {doc}}}")
                })
                .collect();
            let param = format!("[{}]", rows.join(","));
            client.execute(statement, &[&param]).await.unwrap();
            i = end;
        }
        messages as f64 / started.elapsed().as_secs_f64()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let messages = value(&args, "--messages", 100_000);
    let batch = value(&args, "--batch", 1000);
    let holds = value(&args, "--holds", 1000);
    let server = pg::Postgres::start();
    server.psql(TABLE);
    println!(
        "PostgreSQL sink, {messages} messages, batch {batch}, prefetch and concurrency {holds}:"
    );
    let one = sink(&server, messages, batch, 1, holds);
    println!(
        "  sink, 1 worker:              {one:>9.0} rows/s ({:.1} M a minute)",
        one * 60.0 / 1e6
    );
    let two = sink(&server, messages, batch, 2, holds);
    println!(
        "  sink, 2 workers:             {two:>9.0} rows/s ({:.1} M a minute)",
        two * 60.0 / 1e6
    );
    let bare = floor(&server, messages, batch);
    println!(
        "  the same INSERTs, no broker: {bare:>9.0} rows/s ({:.1} M a minute)",
        bare * 60.0 / 1e6
    );
}
