//! The two paths' processes: warren's (`warren serve` and `warren worker`s
//! of a PostgreSQL sink stage) and the bare one (a quorum queue, this
//! bench's lapin publisher, and consumer processes of this bench doing the
//! sink's INSERTs by hand).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::{Processes, pg};

/// The sink's statement for the bench's table.
const INSERT: &str = "INSERT INTO \"views\" (\"id\", \"n\", \"sent\", \"doc\") SELECT r.\"id\", r.\"n\", r.\"sent\", r.\"doc\" FROM jsonb_populate_recordset(NULL::\"views\", $1::text::jsonb) AS r ON CONFLICT (\"id\") DO NOTHING";

fn arg<'a>(args: &'a [String], name: &str) -> &'a str {
    let at = args.iter().position(|a| a == name).expect(name);
    &args[at + 1]
}

/// `warren serve` and `workers` sink workers of pipeline `name`: the
/// processes and the server's base URL.
pub fn start_warren(
    dir: &tempfile::TempDir,
    name: &str,
    server: &pg::Postgres,
    workers: u64,
    batch: u64,
    amqp: &str,
) -> (Processes, String) {
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(
        &file,
        format!(
            "pipeline: {name}\nserve: {{ max_backlog: 100000000 }}\nstages:\n  store:\n    scale: {{ max: {workers} }}\n    prefetch: {holds}\n    concurrency: {holds}\n    sink:\n      postgres: {{ url: \"{}\", table: views, body: doc, columns: {{ n: n, sent: sent }}, batch: {batch} }}\n",
            server.url(),
            holds = batch * 2,
        ),
    )
    .unwrap();
    let warren = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .args(args)
            .env("AMQP_URL", amqp)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        command
    };
    let file = file.to_str().unwrap();
    assert!(warren(&["declare", file]).status().unwrap().success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut processes = Processes(vec![(
        "warren serve".into(),
        warren(&["serve", file, "--listen", &listen])
            .spawn()
            .unwrap(),
    )]);
    for w in 0..workers {
        let child = warren(&["worker", file, "--stage", "store"])
            .env("WARREN_WORKER", w.to_string())
            .spawn()
            .unwrap();
        processes.0.push((format!("warren worker {w}"), child));
    }
    let base = format!("http://{listen}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (processes, base)
}

/// Deletes what `warren declare` made for `file`.
pub async fn delete_pipeline(amqp: &str, file: &Path) {
    let connection = Connection::connect(amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let pipeline = warren::config::load(file).unwrap();
    let topology = warren::Topology::plan(&pipeline);
    for queue in &topology.queues {
        let _ = channel
            .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(topology.exchange.as_str().into(), Default::default())
        .await;
    let _ = connection.close(200, "".into()).await;
}

/// The bare path's publisher: persistent messages, confirms awaited.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    queue: String,
}

impl Publisher {
    /// Publishes each line of `body` (an event with its `key`) and waits
    /// for the confirms.
    pub async fn publish(&self, body: String) {
        let mut confirms = Vec::new();
        for line in body.lines() {
            let key = serde_json::from_str::<serde_json::Value>(line).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string();
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    line.as_bytes(),
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(key.into()),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack(), "the broker refused");
        }
    }

    /// Deletes the queue.
    pub async fn delete(&self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.connection.close(200, "".into()).await;
    }
}

/// The quorum queue `queue`, `workers` consumer processes writing into
/// `server`, and a publisher.
pub async fn start_bare(
    amqp: &str,
    queue: &str,
    server: &pg::Postgres,
    workers: u64,
    batch: u64,
) -> (Processes, Publisher) {
    let connection = Connection::connect(amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut processes = Processes(Vec::new());
    for w in 0..workers {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--bare-consumer", "--queue", queue, "--pg", &server.url()])
            .args(["--batch", &batch.to_string()])
            .env("AMQP_URL", amqp)
            .spawn()
            .unwrap();
        processes.0.push((format!("bare consumer {w}"), child));
    }
    let publisher = Publisher {
        connection,
        channel,
        queue: queue.to_string(),
    };
    (processes, publisher)
}

/// A bare consumer process: takes up to `--batch` messages (or what came
/// in 50 ms), INSERTs them in one statement, acknowledges them after the
/// COMMIT.
pub fn consume(args: &[String]) {
    let (queue, pg_url) = (arg(args, "--queue"), arg(args, "--pg"));
    let batch: usize = arg(args, "--batch").parse().unwrap();
    let amqp = std::env::var("AMQP_URL").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(pg_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let amqp = Connection::connect(&amqp, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = amqp.create_channel().await.unwrap();
        channel
            .basic_qos((batch * 2) as u16, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "bare".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        while let Some(Ok(first)) = consumer.next().await {
            let mut deliveries = vec![first];
            while deliveries.len() < batch {
                match tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
                    Ok(Some(Ok(delivery))) => deliveries.push(delivery),
                    _ => break,
                }
            }
            let rows: Vec<String> = deliveries
                .iter()
                .map(|d| {
                    let doc: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
                    serde_json::json!({"id": doc["key"], "n": doc["n"], "sent": doc["sent"], "doc": doc})
                        .to_string()
                })
                .collect();
            let param = format!("[{}]", rows.join(","));
            client.execute(INSERT, &[&param]).await.unwrap();
            let last = deliveries.last().unwrap().delivery_tag;
            channel
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    });
}
