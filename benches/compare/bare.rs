//! fanout3 on a bare lapin client, in one process: the limit warren is
//! measured against. Same guarantees as warren: persistent messages,
//! publisher confirms awaited before the ack of what caused them, acks
//! batched with `multiple`, and a sink that writes each id once and fsyncs
//! (data, then ids) before acking. It runs on one connection (consuming
//! and publishing channels side by side, as a simple client does) or, as
//! warren does, with its publishing channels on a second connection, so
//! that acks keep flowing while the broker blocks publishers.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream::FuturesOrdered};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sha2::{Digest, Sha256};

use crate::Fanout;

/// Queue names of the bare run.
fn queue(kind: &str, stage: &str) -> String {
    format!("bench_bare_{kind}.{stage}")
}

async fn declare(channel: &Channel, kind: &str) {
    for stage in ["expand", "work", "sink"] {
        let name = queue(kind, stage);
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
        let exchange = format!("bench_bare_{kind}");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                name.as_str().into(),
                exchange.as_str().into(),
                stage.into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
}

fn persistent(id: String) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(id.into())
}

/// Where the bare client publishes.
#[derive(Clone, Copy, PartialEq)]
pub enum Publishing {
    /// On the connection it consumes on.
    SameConnection,
    /// On a second connection (warren's guarantee under a memory alarm).
    OwnConnection,
}

impl Publishing {
    /// The system's name in the results table.
    pub fn system(self) -> &'static str {
        match self {
            Publishing::SameConnection => "bare lapin",
            Publishing::OwnConnection => "bare 2-conn",
        }
    }
}

/// The bare client's three stages, running.
pub struct Running {
    conn: Connection,
    second: Option<Connection>,
    /// The channel that declared the queues and sent the seeds.
    setup: Channel,
    kind: String,
    stages: Vec<tokio::task::JoinHandle<()>>,
    /// When the stages began consuming.
    pub started: Instant,
    /// Lines the sink has on disk.
    pub written: Arc<AtomicU64>,
}

/// Declares the queues afresh, sends `fanout.n` seeds (a backlog, as for
/// every system measured) and starts the three stages.
pub async fn start(
    url: &str,
    kind: &str,
    fanout: &Fanout,
    sink_path: &Path,
    prefetch: u16,
    publishing: Publishing,
) -> Running {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let second = match publishing {
        Publishing::SameConnection => None,
        Publishing::OwnConnection => Some(
            Connection::connect(url, ConnectionProperties::default())
                .await
                .unwrap(),
        ),
    };
    let publishing_conn = second.as_ref().unwrap_or(&conn);
    let setup = conn.create_channel().await.unwrap();
    declare(&setup, kind).await;
    setup
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..fanout.n {
        send_seed(&setup, kind, i).await;
    }
    setup.wait_for_confirms().await.unwrap();

    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let f = fanout.f;
    let expand = tokio::spawn(stage(
        conn.create_channel().await.unwrap(),
        publishing_conn.create_channel().await.unwrap(),
        queue(kind, "expand"),
        queue(kind, "work"),
        prefetch,
        move |body: &[u8], id: &str| {
            let seed: serde_json::Value = serde_json::from_slice(body).unwrap();
            (0..f)
                .map(|part| {
                    let out =
                        serde_json::json!({"id": seed["id"], "part": part, "body": seed["body"]});
                    (serde_json::to_vec(&out).unwrap(), format!("{id}.{part}"))
                })
                .collect()
        },
    ));
    let work = tokio::spawn(stage(
        conn.create_channel().await.unwrap(),
        publishing_conn.create_channel().await.unwrap(),
        queue(kind, "work"),
        queue(kind, "sink"),
        prefetch,
        |body: &[u8], id: &str| {
            let part: serde_json::Value = serde_json::from_slice(body).unwrap();
            let digest = format!("{:x}", Sha256::digest(serde_json::to_vec(&part).unwrap()));
            let out = serde_json::json!({"id": part["id"], "part": part["part"], "digest": digest});
            vec![(serde_json::to_vec(&out).unwrap(), format!("{id}.0"))]
        },
    ));
    let sink = tokio::spawn(crate::bare_sink::sink(
        conn.create_channel().await.unwrap(),
        queue(kind, "sink"),
        sink_path.to_path_buf(),
        prefetch,
        written.clone(),
    ));
    Running {
        conn,
        second,
        setup,
        kind: kind.to_string(),
        stages: vec![expand, work, sink],
        started,
        written,
    }
}

/// Publishes seed `i` (persistent, its confirm awaited by the caller).
async fn send_seed(channel: &Channel, kind: &str, i: u64) {
    let body = serde_json::to_vec(&serde_json::json!({"id": i, "body": "x".repeat(64)})).unwrap();
    channel
        .basic_publish(
            "".into(),
            queue(kind, "expand").as_str().into(),
            BasicPublishOptions::default(),
            &body,
            persistent(format!("s{i}")),
        )
        .await
        .unwrap();
}

impl Running {
    /// Waits until the sink has every line of `fanout`, stops; returns the
    /// seconds from the start of consuming to the last line in the sink.
    pub async fn finish(self, fanout: &Fanout) -> f64 {
        let ticks = crate::rss::machine_ticks();
        let cpu = crate::rss::cpu_seconds(std::process::id()).map_or(0.0, |(s, _)| s);
        let want = fanout.n * fanout.f;
        while self.written.load(Ordering::Relaxed) < want {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        if std::env::var_os("WARREN_BENCH_CPU").is_some() {
            let used = crate::rss::cpu_seconds(std::process::id()).map_or(0.0, |(s, _)| s) - cpu;
            eprintln!(
                "    bare: cpu {used:.2}s (all three stages), machine idle {:.0}% of the round",
                100.0 * crate::rss::idle_share(ticks, crate::rss::machine_ticks())
            );
        }
        self.stop().await;
        seconds
    }

    /// Sends seed `i` to the running stages and waits for its confirm.
    pub async fn send_confirmed(&self, i: u64) {
        send_seed(&self.setup, &self.kind, i).await;
        self.setup.wait_for_confirms().await.unwrap();
    }

    /// Stops the stages, deletes the queues and closes the connections.
    pub async fn stop(self) {
        for stage in &self.stages {
            stage.abort();
        }
        for stage in ["expand", "work", "sink"] {
            let _ = self
                .setup
                .queue_delete(
                    queue(&self.kind, stage).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.conn.close(200, "done".into()).await;
        if let Some(second) = self.second {
            let _ = second.close(200, "done".into()).await;
        }
    }
}

/// A stage that emits: each delivery's outputs are published, and the
/// delivery is acked (in order, `multiple`) once they are all confirmed.
async fn stage(
    consume: Channel,
    publish: Channel,
    from: String,
    to: String,
    prefetch: u16,
    handle: impl Fn(&[u8], &str) -> Vec<(Vec<u8>, String)>,
) {
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut consumer = crate::bare_sink::consumer(&consume, &from, prefetch).await;
    // Read once: the variables only choose how the run publishes.
    let like_warren = std::env::var_os("BARE_LIKE_WARREN").is_some();
    let default_exchange = std::env::var_os("BARE_DEFAULT_EXCHANGE").is_some();
    let mut pending = FuturesOrdered::new();
    let mut acked_to = 0u64;
    loop {
        tokio::select! {
            Some(Ok(delivery)) = consumer.next(), if pending.len() < prefetch as usize => {
                let id = delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
                let outputs = handle(&delivery.data, &id);
                let tag = delivery.delivery_tag;
                let publish = publish.clone();
                let to = to.clone();
                // Not awaited here: the frames are queued when the pipeline
                // polls this, and the loop goes on consuming.
                pending.push_back(async move {
                    let sends = outputs.iter().map(|(body, child)| {
                        if like_warren {
                            let mut headers = FieldTable::default();
                            headers.insert("x-warren-attempt".into(), AMQPValue::LongLongInt(1));
                            let props = persistent(child.clone()).with_headers(headers).with_timestamp(1);
                            let (exchange, key) = if default_exchange { ("", to.as_str()) } else { to.split_once('.').unwrap() };
                            publish.basic_publish(exchange.into(), key.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, body, props)
                        } else {
                            publish.basic_publish("".into(), to.as_str().into(), BasicPublishOptions::default(), body, persistent(child.clone()))
                        }
                    });
                    for confirm in futures_util::future::join_all(sends).await {
                        assert!(confirm.unwrap().await.unwrap().is_ack());
                    }
                    tag
                });
            }
            Some(tag) = pending.next() => {
                // In order: ack the prefix whenever the pipeline runs dry or
                // every 64 deliveries.
                if pending.is_empty() || tag - acked_to >= 64 {
                    consume.basic_ack(tag, BasicAckOptions { multiple: true }).await.unwrap();
                    acked_to = tag;
                }
            }
        }
    }
}
