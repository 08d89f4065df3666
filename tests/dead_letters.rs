//! Looking at dead letters, against the real broker: listing them (`warren
//! dlq list`, the dashboard) and picking some to replay or purge never
//! drops or reorders the others, even in a dead-letter queue whose
//! delivery limit would drop a message handed back a few times (as
//! RabbitMQ 4's default of 20 does on a queue declared without one); and a
//! listing holds only the start of each body, the whole body being there
//! when one message is asked for.

mod common;

use std::time::Duration;

use common::*;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use warren::dead_letters;

const ONE_STAGE: &str = "
pipeline: {name}
serve: { allow_actions: true }
stages:
  a:
    command: [unused]
";

/// The pipeline `ONE_STAGE` declared on the broker (removed when
/// dropped), a connection, and the name of stage `a`'s dead-letter queue.
struct OneStage {
    file: PipelineFile,
    pipeline: warren::Pipeline,
    conn: lapin::Connection,
    dead: String,
    _cleanup: Cleanup,
}

async fn one_stage(prefix: &str) -> OneStage {
    let file = PipelineFile::new(prefix, ONE_STAGE);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dead = format!("{}.a.dead", file.name);
    OneStage {
        file,
        pipeline,
        conn: connect().await,
        dead,
        _cleanup,
    }
}

/// Publishes a dead letter `id` with `body` straight into `queue`, as a
/// worker writes one.
async fn dead_letter(conn: &lapin::Connection, queue: &str, id: &str, body: &[u8]) {
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "x-warren-error".into(),
        AMQPValue::LongString(format!("boom {id}").into()),
    );
    headers.insert("x-warren-attempt".into(), AMQPValue::LongLongInt(3));
    let props = BasicProperties::default()
        .with_message_id(id.into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack() && confirm.take_message().is_none());
    let _ = channel.close(200, "".into()).await;
}

/// A dashboard page's HTML.
async fn page(base: &str, path: &str) -> String {
    let answer = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
    answer.text().await.unwrap()
}

/// The ids in `queue`, in order, taken out.
async fn ids_in(conn: &lapin::Connection, queue: &str) -> Vec<String> {
    drain_queue(conn, queue)
        .await
        .iter()
        .map(|m| {
            warren::message::id_of(&m.delivery.properties)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Lists, and replays and purges what matches nothing, `rounds` times each;
/// then purges `d2` and replays `d4`.
async fn look_many_times(file: &PipelineFile, pipeline: &warren::Pipeline, rounds: usize) {
    for _ in 0..rounds {
        let out = warren(&["dlq", file.path.to_str().unwrap(), "a", "list"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains("5 dead letters") || stdout.contains("4 dead letters"),
            "{stdout}"
        );
        let listed = dead_letters::list(pipeline, "a", 100).await.unwrap();
        assert!(listed.len() >= 4, "{listed:?}");
        assert_eq!(
            dead_letters::replay_matching(pipeline, "a", usize::MAX, |_| false)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            dead_letters::purge_matching(pipeline, "a", |_| false)
                .await
                .unwrap(),
            0
        );
    }
    let purged = dead_letters::purge_matching(pipeline, "a", |l| l.id == "d2")
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let replayed = dead_letters::replay_matching(pipeline, "a", usize::MAX, |l| l.id == "d4")
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    for _ in 0..rounds {
        dead_letters::list(pipeline, "a", 2).await.unwrap();
    }
}

/// A dead-letter queue that drops a message handed back twice (RabbitMQ 4
/// does so after 20 on a queue declared without a limit): six rounds of
/// looking lose nothing and keep the order.
#[tokio::test]
async fn looking_at_dead_letters_never_drops_them_where_the_broker_would() {
    let setup = one_stage("dlqlimit").await;
    let channel = setup.conn.create_channel().await.unwrap();
    channel
        .queue_delete(setup.dead.as_str().into(), Default::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(2));
    channel
        .queue_declare(
            setup.dead.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    for n in 0..5 {
        dead_letter(&setup.conn, &setup.dead, &format!("d{n}"), b"{\"n\": 1}").await;
    }
    look_many_times(&setup.file, &setup.pipeline, 6).await;
    assert_eq!(ids_in(&setup.conn, &setup.dead).await, ["d0", "d1", "d3"]);
    let replayed = ids_in(&setup.conn, &format!("{}.a", setup.file.name)).await;
    assert_eq!(replayed, ["d4"]);
}

/// The same on the dead-letter queue warren declares.
#[tokio::test]
async fn looking_at_dead_letters_keeps_them_in_order() {
    let setup = one_stage("dlqorder").await;
    for n in 0..5 {
        dead_letter(&setup.conn, &setup.dead, &format!("d{n}"), b"{\"n\": 1}").await;
    }
    look_many_times(&setup.file, &setup.pipeline, 6).await;
    assert_eq!(ids_in(&setup.conn, &setup.dead).await, ["d0", "d1", "d3"]);
    assert_eq!(
        ids_in(&setup.conn, &format!("{}.a", setup.file.name)).await,
        ["d4"]
    );
}

/// A listing keeps the first KiB of each body (10,000 dead letters of 1 MB
/// each were 10 GB on one dashboard page); the whole body is shown where
/// one message is asked for: `warren dlq FILE STAGE show --id ID`, the
/// dashboard's page of that message.
#[tokio::test]
async fn listings_cut_bodies_and_one_message_shows_it_whole() {
    let setup = one_stage("dlqbody").await;
    let big = format!(
        "{{\"text\": \"{}\", \"end\": \"the very end\"}}",
        "x".repeat(300_000)
    );
    dead_letter(&setup.conn, &setup.dead, "small", b"{\"n\": 1}").await;
    dead_letter(&setup.conn, &setup.dead, "big", big.as_bytes()).await;

    let listed = dead_letters::list(&setup.pipeline, "a", 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].body, b"{\"n\": 1}");
    assert_eq!(listed[0].body_len, 8);
    assert!(listed[1].body.len() <= 1024, "{}", listed[1].body.len());
    assert_eq!(listed[1].body_len, big.len());
    let whole = dead_letters::find(&setup.pipeline, "a", "big")
        .await
        .unwrap();
    assert_eq!(whole.map(|l| l.body), Some(big.as_bytes().to_vec()));
    assert!(
        dead_letters::find(&setup.pipeline, "a", "nothing")
            .await
            .unwrap()
            .is_none()
    );

    let out = warren(&[
        "dlq",
        setup.file.path.to_str().unwrap(),
        "a",
        "show",
        "--id",
        "big",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("the very end") && stdout.len() > 300_000,
        "{stderr}"
    );
    let out = warren(&[
        "dlq",
        setup.file.path.to_str().unwrap(),
        "a",
        "show",
        "--id",
        "nothing",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);

    let (_serve, base) = serve(&setup.file).await;
    let group = page(&base, "/stages/a/dead").await;
    assert!(
        group.contains("boom big"),
        "{}",
        &group[..group.len().min(2000)]
    );
    let listing = page(&base, "/stages/a/dead?group=boom%20big").await;
    assert!(
        listing.contains("the whole message") && !listing.contains("the very end"),
        "{}",
        &listing[..listing.len().min(3000)]
    );
    let one = page(&base, "/stages/a/dead?id=big").await;
    assert!(
        one.contains("the very end"),
        "{}",
        &one[..one.len().min(2000)]
    );
    // Both still there, in order.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ids_in(&setup.conn, &setup.dead).await, ["small", "big"]);
}

/// When a listing returns, what it held is ready in the queue again: the
/// broker answers a channel's close before it has put the messages back
/// (on a loaded machine a look right after found none of them ready, and
/// the page of one dead letter, asked right after the listing that showed
/// it, said it was not there).
#[tokio::test]
async fn a_listing_that_returned_has_given_every_message_back() {
    let setup = one_stage("dlqback").await;
    for n in 0..20 {
        dead_letter(&setup.conn, &setup.dead, &format!("d{n}"), b"{\"n\": 1}").await;
    }
    for round in 0..50 {
        let listed = dead_letters::list(&setup.pipeline, "a", 50).await.unwrap();
        assert_eq!(listed.len(), 20, "round {round}");
        let ready = queue_state(&setup.conn, &setup.dead)
            .await
            .map(|(ready, _)| ready);
        assert_eq!(ready, Some(20), "round {round}: not all back");
    }
}
