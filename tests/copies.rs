//! What warren's copies of a message carry (retries, dead letters), against
//! the real broker: a producer's `user_id` and `expiration` stay behind
//! (in `x-warren-original-*` headers), so a web app that publishes as its
//! own broker user with `user_id` set does not stop warren's retries and
//! dead letters, and a producer's TTL does not make dead letters expire.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use lapin::{BasicProperties, options::BasicPublishOptions};
use serde_json::{Value, json};
use warren::{Context, Failure, Worker, broker::BrokerUrls};

const FLAKY: &str = "
pipeline: {name}
stages:
  flaky:
    command: [unused]
    concurrency: 8
    retry: { attempts: 3, backoff: [200ms] }
";

/// A broker user of its own for warren, deleted when dropped.
struct User {
    name: String,
    password: String,
}

impl User {
    fn add(prefix: &str) -> User {
        let user = User {
            name: unique_name(prefix),
            password: uuid::Uuid::now_v7().simple().to_string(),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]);
        user
    }

    /// The tests' broker URL, logged in as this user.
    fn url(&self) -> String {
        let url = amqp_url();
        let host = &url[url
            .rfind('@')
            .map_or(url.find("://").unwrap() + 3, |at| at + 1)..];
        format!("amqp://{}:{}@{host}", self.name, self.password)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// Publishes `body` as user `guest`, with `user_id: guest` and
/// `expiration` when `producer_props` (a web app's publish).
async fn publish(
    conn: &lapin::Connection,
    exchange: &str,
    key: &str,
    body: &Value,
    producer_props: bool,
) {
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if producer_props {
        props = props
            .with_user_id("guest".into())
            .with_expiration("4000".into());
    }
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body.to_string().as_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = channel.close(200, "".into()).await;
}

/// Attempts per message: `n` -> attempt numbers seen.
type Seen = Arc<Mutex<BTreeMap<u64, Vec<u32>>>>;

fn flaky_worker(pipeline: &warren::Pipeline, seen: &Seen) -> Worker {
    let seen = seen.clone();
    Worker::new()
        .pipeline(pipeline.clone())
        .stage("flaky", move |body: Value, ctx: Context| {
            let seen = seen.clone();
            async move {
                let n = body["n"].as_u64().unwrap();
                seen.lock()
                    .unwrap()
                    .entry(n)
                    .or_default()
                    .push(ctx.attempt());
                if body["poison"].as_bool() == Some(true) {
                    return Err(Failure::retry("poison"));
                }
                if body["dead"].as_bool() == Some(true) {
                    return Err(Failure::dead("for good"));
                }
                Ok(())
            }
        })
}

/// The dead letters now in `queue`, taken out: (`n`, properties).
async fn dead_letters(conn: &lapin::Connection, queue: &str) -> Vec<(u64, BasicProperties)> {
    drain_queue(conn, queue)
        .await
        .into_iter()
        .map(|m| {
            let body: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            (body["n"].as_u64().unwrap(), m.delivery.properties)
        })
        .collect()
}

/// Checks a dead letter of a producer's message: dead at `attempt`, its
/// `user_id` and `expiration` gone, kept as headers.
fn check_dead_letter(props: &BasicProperties, attempt: u32) {
    assert_eq!(warren::message::attempt_of(props), attempt);
    assert_eq!(props.user_id(), &None);
    assert_eq!(props.expiration(), &None);
    assert_eq!(
        header(props, "x-warren-original-user-id").as_deref(),
        Some("guest")
    );
    assert_eq!(
        header(props, "x-warren-original-expiration").as_deref(),
        Some("4000")
    );
}

/// A web app publishes as `guest` with `user_id: guest`; warren runs as a
/// user of its own. The broker refuses any publish whose `user_id` is not
/// the publishing connection's user, so a retry that kept it failed, the
/// worker's session restarted, the message never reached the dead-letter
/// queue and the messages around it were delivered again.
#[tokio::test]
async fn a_producers_user_id_does_not_stop_retries_or_dead_letters() {
    let file = PipelineFile::new("userid", FLAKY);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let user = User::add("copies");
    let mut pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    pipeline.broker.urls = BrokerUrls::parse(&user.url()).unwrap();
    let seen: Seen = Arc::default();
    let running = spawn_worker(flaky_worker(&pipeline, &seen));
    let conn = connect().await;
    for n in 0..40u64 {
        let poison = n % 10 == 3;
        publish(
            &conn,
            &file.name,
            "flaky",
            &json!({"n": n, "poison": poison}),
            poison,
        )
        .await;
    }
    let dead = format!("{}.flaky.dead", file.name);
    let all_dead = eventually(Duration::from_secs(30), || async {
        queue_state(&conn, &dead).await.map(|(ready, _)| ready) == Some(4)
    })
    .await;
    // Give extra deliveries, if any, time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        all_dead,
        "the poison messages were not dead-lettered: {seen:?}"
    );
    for (n, attempts) in &seen {
        let wanted: &[u32] = if n % 10 == 3 { &[1, 2, 3] } else { &[1] };
        assert_eq!(attempts, wanted, "message {n}");
    }
    assert_eq!(seen.len(), 40);
    let letters = dead_letters(&conn, &dead).await;
    assert_eq!(letters.len(), 4);
    for (n, props) in &letters {
        assert_eq!(n % 10, 3);
        check_dead_letter(props, 3);
    }
}

/// A producer's `expiration` (a TTL per message) was kept on a dead
/// letter, which then expired out of the dead-letter queue. (A retry lost
/// it on the way: the broker drops `expiration` when its retry queue
/// dead-letters the message back; a message that fails for good at once
/// did not.)
#[tokio::test]
async fn a_producers_expiration_does_not_expire_its_dead_letter() {
    let file = PipelineFile::new("expiry", FLAKY);
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let seen: Seen = Arc::default();
    let running = spawn_worker(flaky_worker(&pipeline, &seen));
    let conn = connect().await;
    publish(
        &conn,
        &file.name,
        "flaky",
        &json!({"n": 1, "dead": true}),
        true,
    )
    .await;
    publish(
        &conn,
        &file.name,
        "flaky",
        &json!({"n": 2, "poison": true}),
        true,
    )
    .await;
    let dead = format!("{}.flaky.dead", file.name);
    let dead_lettered = eventually(Duration::from_secs(20), || async {
        queue_state(&conn, &dead).await.map(|(ready, _)| ready) == Some(2)
    })
    .await;
    running.stop().await.unwrap();
    assert!(dead_lettered, "{:?}", seen.lock().unwrap());
    // Longer than the producer's 4 s expiration.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut letters = dead_letters(&conn, &dead).await;
    letters.sort_by_key(|(n, _)| *n);
    assert_eq!(letters.len(), 2, "a dead letter expired");
    check_dead_letter(&letters[0].1, 1);
    check_dead_letter(&letters[1].1, 3);
}
