//! The dashboard (`GET /` of `warren serve`) in a real browser: headless
//! Chromium driven through WebDriver (`chromedriver`, Debian's
//! `chromium-driver`; `.ci/test` installs it) against a real `warren
//! serve` and the real broker. A backlog shown falling, dead letters in
//! their group with their payload, a group replayed after confirming and
//! then processed, a job looked up by id, and a read-only dashboard with
//! no actions and 403 from the action route; over HTTPS, a read token's
//! pages without buttons and an admin token's purge; the Pause and Resume
//! buttons; retrying messages sent back now; a stage's scheduled messages;
//! the history of what each stage did.
//! Screenshots go to `target/`.

mod common;
#[path = "common/front_door.rs"]
mod front_door;

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use warren::{Context, Failure, Producer, Worker};

const TOKEN: &str = "0123456789abcdef0123";

fn pipeline_text(allow_actions: bool) -> String {
    format!(
        "
pipeline: {{name}}
jobs: {{ track: true }}
serve: {{ token: \"{TOKEN}\", allow_actions: {allow_actions} }}
defaults:
  retry: {{ attempts: 1 }}
stages:
  work:
    command: [unused]
    concurrency: 20
"
    )
}

/// `work` dead-letters a message with a `company` field while `broken` is
/// set, with the reason `HTTP 404 for /company/{n}`, and one with a `dead`
/// field always, with that reason; it takes 2 ms per message otherwise.
fn worker(pipeline: &warren::Pipeline, broken: Arc<AtomicBool>) -> Worker {
    Worker::new()
        .pipeline(pipeline.clone())
        .stage("work", move |body: Value, _ctx: Context| {
            let broken = broken.clone();
            async move {
                if let Some(reason) = body["dead"].as_str() {
                    return Err(Failure::dead(reason));
                }
                if let Some(n) = body["company"].as_u64()
                    && broken.load(Ordering::SeqCst)
                {
                    return Err(Failure::dead(format!("HTTP 404 for /company/{n}")));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(())
            }
        })
}

/// chromedriver and the Chromium it starts, whose profile is in `dir`:
/// killed when dropped, also when a test fails before closing its session
/// (Chromium would outlive chromedriver otherwise).
struct Driver {
    _driver: ChildGuard,
    dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.dir.path().display().to_string()])
            .status();
    }
}

/// chromedriver on a free port and a headless Chromium session.
async fn browser() -> (Driver, Client) {
    browser_with(&[]).await
}

/// [`browser`] with more Chromium arguments.
async fn browser_with(more: &[&str]) -> (Driver, Client) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let driver = ChildGuard(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: chromium chromium-driver; .ci/test installs them)"),
    );
    let up = eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver did not start");
    let mut args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,800".into(),
        format!("--user-data-dir={}", dir.path().display()),
    ];
    args.extend(more.iter().map(|arg| arg.to_string()));
    let capabilities = json!({
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
    });
    // Plain HTTP to chromedriver on this box: no TLS stack needed.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (
        Driver {
            _driver: driver,
            dir,
        },
        client,
    )
}

/// Fills the sign-in page the browser is on with the token and sends it.
async fn sign_in(client: &Client) {
    sign_in_with(client, TOKEN).await;
}

/// Fills the sign-in page the browser is on with `token` and sends it.
async fn sign_in_with(client: &Client, token: &str) {
    let field = client
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap();
    field.send_keys(token).await.unwrap();
    client
        .find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of `css` once the page has it (after a click that navigates,
/// say), or `None` after 20 s.
async fn wait_text(client: &Client, css: &str) -> Option<String> {
    let found = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .ok()?;
    found.text().await.ok()
}

/// The text of the first element `css` finds, if any.
async fn text(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Reloads `url` until `css` has text `wanted` (or `limit` passes).
async fn until_text(client: &Client, url: &str, css: &str, wanted: &str, limit: Duration) -> bool {
    eventually(limit, || async {
        client.goto(url).await.unwrap();
        text(client, css).await.as_deref() == Some(wanted)
    })
    .await
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("dashboard-{name}.png")), png).unwrap();
}

#[tokio::test]
async fn an_operator_watches_a_backlog_and_replays_a_group_of_dead_letters() {
    let file = PipelineFile::new("dash", &pipeline_text(true));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let (_driver, client) = browser().await;

    // Signing in: the overview sends the browser to /login first.
    client.goto(&format!("{base}/")).await.unwrap();
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/login")
    );
    sign_in(&client).await;
    assert!(wait_text(&client, "#overview").await.is_some());
    assert_eq!(client.current_url().await.unwrap().path(), "/");

    // A backlog, shown live, then falling to nothing once a worker runs.
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..300 {
        producer
            .send_with_id("work", &format!("m{n}"), &json!({ "n": n }))
            .await
            .unwrap();
    }
    let ready = "tr[data-stage=work] td[data-field=ready]";
    let shown = eventually(Duration::from_secs(20), || async {
        text(&client, ready).await.as_deref() == Some("300")
    })
    .await;
    assert!(
        shown,
        "the overview showed {:?}",
        text(&client, ready).await
    );
    screenshot(&client, "overview").await;
    let broken = Arc::new(AtomicBool::new(false));
    let running = spawn_worker(worker(&pipeline, broken.clone()));
    let fell = eventually(Duration::from_secs(60), || async {
        text(&client, ready).await.as_deref() == Some("0")
    })
    .await;
    assert!(
        fell,
        "without reloading, the overview showed {:?}",
        text(&client, ready).await
    );

    // Five dead letters of one cause, and one of another.
    broken.store(true, Ordering::SeqCst);
    for n in 1..=5 {
        producer
            .send_with_id("work", &format!("d{n}"), &json!({ "company": n * 111 }))
            .await
            .unwrap();
    }
    producer
        .send_with_id("work", "other", &json!({ "dead": "deadline exceeded" }))
        .await
        .unwrap();
    let dead_page = format!("{base}/stages/work/dead");
    let group = "tr[data-cause='HTTP # for /company/#'] td.count";
    assert!(
        until_text(&client, &dead_page, group, "5", Duration::from_secs(30)).await,
        "{}",
        client.source().await.unwrap()
    );
    client
        .find(Locator::Css("tr[data-cause='HTTP # for /company/#'] a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let payload = text(&client, ".letter[data-id=d3] pre.payload")
        .await
        .unwrap();
    assert!(payload.contains("\"company\": 333"), "{payload}");
    screenshot(&client, "dead-letters").await;

    // Replay the group: a page says how many, then they are processed.
    broken.store(false, Ordering::SeqCst);
    client
        .find(Locator::Css(
            "tr[data-cause='HTTP # for /company/#'] button.replay-group",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = wait_text(&client, "#confirm-count").await.unwrap();
    assert!(asked.contains("replay 5 message(s)"), "{asked}");
    client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = wait_text(&client, "p.note").await.unwrap_or_default();
    assert_eq!(said, "Replayed 5 message(s)");
    let jobs = format!("{base}/jobs?id=d3");
    assert!(
        until_text(
            &client,
            &jobs,
            "#job-state",
            "done",
            Duration::from_secs(30)
        )
        .await,
        "{}",
        client.source().await.unwrap()
    );
    screenshot(&client, "job").await;
    // The other cause is still there, alone.
    client.goto(&dead_page).await.unwrap();
    assert_eq!(
        text(&client, "#groups tr[data-cause] td.count")
            .await
            .as_deref(),
        Some("1")
    );
    client.close().await.unwrap();
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_read_only_dashboard_shows_no_actions_and_refuses_them() {
    let file = PipelineFile::new("dashro", &pipeline_text(false));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let broken = Arc::new(AtomicBool::new(true));
    let running = spawn_worker(worker(&pipeline, broken));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("work", "d1", &json!({ "company": 7 }))
        .await
        .unwrap();
    let (_driver, client) = browser().await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;
    let dead_page = format!("{base}/stages/work/dead");
    let group = "tr[data-cause='HTTP # for /company/#'] td.count";
    assert!(until_text(&client, &dead_page, group, "1", Duration::from_secs(30)).await);
    let buttons = client
        .find_all(Locator::Css("button.replay-group, button.purge-all"))
        .await
        .unwrap();
    assert!(buttons.is_empty(), "a read-only dashboard shows actions");
    client.goto(&format!("{base}/")).await.unwrap();
    assert!(wait_text(&client, "#overview").await.is_some());
    let controls = client
        .find_all(Locator::Css("button[data-action]"))
        .await
        .unwrap();
    assert!(
        controls.is_empty(),
        "a read-only dashboard shows pause buttons"
    );
    client.close().await.unwrap();
    let refused = reqwest::Client::new()
        .post(format!("{base}/stages/work/control"))
        .bearer_auth(TOKEN)
        .form(&[("action", "pause")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status().as_u16(),
        403,
        "pausing from a read-only dashboard"
    );
    let refused = reqwest::Client::new()
        .post(format!("{base}/stages/work/dead"))
        .bearer_auth(TOKEN)
        .form(&[("action", "purge"), ("scope", "all"), ("confirmed", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let refused = reqwest::Client::new()
        .post(format!("{base}/stages/work/retrying"))
        .bearer_auth(TOKEN)
        .form(&[("scope", "all"), ("confirmed", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403, "retry now, read-only");
    let conn = connect().await;
    let (dead, _) = queue_state(&conn, &format!("{}.work.dead", file.name))
        .await
        .unwrap();
    assert_eq!(dead, 1, "nothing was purged");
    let _ = conn.close(200, "".into()).await;
    running.stop().await.unwrap();
}

/// Three messages wait an hour in the retry queue after their first
/// attempt failed (a third party was down). Once it is back, the operator
/// sends one back now, then the rest: each handled once more, at its
/// second attempt, none twice; the page lists what still waits.
#[tokio::test]
async fn an_operator_sends_retrying_messages_back_now() {
    let file = PipelineFile::new(
        "dashretry",
        &format!(
            "
pipeline: {{name}}
serve: {{ token: \"{TOKEN}\", allow_actions: true }}
stages:
  work:
    command: [unused]
    retry: {{ attempts: 3, backoff: [1h] }}
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let down = Arc::new(AtomicBool::new(true));
    let handled: Arc<std::sync::Mutex<Vec<(String, u32)>>> = Arc::default();
    let worker = {
        let (down, handled) = (down.clone(), handled.clone());
        Worker::new()
            .pipeline(pipeline.clone())
            .stage("work", move |_body: Value, ctx: Context| {
                let (down, handled) = (down.clone(), handled.clone());
                async move {
                    handled
                        .lock()
                        .unwrap()
                        .push((ctx.id().to_string(), ctx.attempt()));
                    if down.load(Ordering::SeqCst) {
                        return Err(Failure::retry("HTTP 503 from the partner API"));
                    }
                    Ok(())
                }
            })
    };
    let running = spawn_worker(worker);
    let producer = Producer::connect(&pipeline).await.unwrap();
    for id in ["r1", "r2", "r3"] {
        producer
            .send_with_id("work", id, &json!({ "order": id }))
            .await
            .unwrap();
    }
    let (_driver, client) = browser().await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;
    let page = format!("{base}/stages/work/retrying");
    let count = "#retrying-count";
    let three = "3 messages wait for their next attempt.";
    assert!(
        until_text(&client, &page, count, three, Duration::from_secs(30)).await,
        "{}",
        client.source().await.unwrap()
    );
    let heading = text(&client, ".letter[data-id=r2] h3").await.unwrap();
    assert_eq!(heading, "r2 (attempt 2, waits 1h)");
    let payload = text(&client, ".letter[data-id=r2] pre.payload")
        .await
        .unwrap();
    assert!(payload.contains("\"order\": \"r2\""), "{payload}");
    let reason = text(&client, ".letter[data-id=r2] p").await.unwrap();
    assert_eq!(reason, "HTTP 503 from the partner API");
    screenshot(&client, "retrying").await;

    // The partner is back: r2 now, after confirming.
    down.store(false, Ordering::SeqCst);
    client
        .find(Locator::Css(".letter[data-id=r2] button.retry-one"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = wait_text(&client, "#confirm-count").await.unwrap();
    assert_eq!(asked, "Retry 1 message(s) of work now (r2)?");
    client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = wait_text(&client, "#done").await.unwrap_or_default();
    assert_eq!(said, "Sent 1 message(s) back to work now");
    let attempts = |id: &str| -> Vec<u32> {
        let handled = handled.lock().unwrap();
        handled
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, a)| *a)
            .collect()
    };
    let done = eventually(Duration::from_secs(30), || async {
        attempts("r2") == [1, 2]
    })
    .await;
    assert!(done, "r2 was handled at {:?}", attempts("r2"));
    let two = "2 messages wait for their next attempt.";
    assert!(until_text(&client, &page, count, two, Duration::from_secs(10)).await);
    assert!(
        client
            .find(Locator::Css(".letter[data-id=r2]"))
            .await
            .is_err()
    );

    // The rest at once.
    client
        .find(Locator::Css("button.retry-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = wait_text(&client, "#confirm-count").await.unwrap();
    assert_eq!(asked, "Retry 2 message(s) of work now?");
    client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = wait_text(&client, "#done").await.unwrap_or_default();
    assert_eq!(said, "Sent 2 message(s) back to work now");
    let done = eventually(Duration::from_secs(30), || async {
        attempts("r1") == [1, 2] && attempts("r3") == [1, 2]
    })
    .await;
    assert!(
        done,
        "r1 at {:?}, r3 at {:?}",
        attempts("r1"),
        attempts("r3")
    );
    let none = "0 messages wait for their next attempt.";
    assert!(until_text(&client, &page, count, none, Duration::from_secs(10)).await);
    // None handled again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        handled.lock().unwrap().len(),
        6,
        "{:?}",
        handled.lock().unwrap()
    );
    client.close().await.unwrap();
    running.stop().await.unwrap();
}

/// Messages sent with a delay wait in the pipeline's delay cascade: the
/// stage's Scheduled page lists its own, soonest first, with when each is
/// due, and looking moves none of them.
#[tokio::test]
async fn the_scheduled_page_lists_a_stages_delayed_messages_soonest_first() {
    let file = PipelineFile::new(
        "dashsched",
        &format!(
            "
pipeline: {{name}}
serve: {{ token: \"{TOKEN}\" }}
stages:
  work:
    command: [unused]
  other:
    command: [unused]
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    let hour = Duration::from_secs(3600);
    let later = producer
        .send_after("work", 2 * hour, &json!({ "invoice": "later" }))
        .await
        .unwrap();
    let sooner = producer
        .send_after("work", hour, &json!({ "invoice": "sooner" }))
        .await
        .unwrap();
    producer
        .send_after("other", hour / 2, &json!({ "invoice": "not this stage" }))
        .await
        .unwrap();
    let (_driver, client) = browser().await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;
    assert!(wait_text(&client, "#overview").await.is_some());
    client
        .find(Locator::Css("tr[data-stage=work] a.more[href$=scheduled]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let count = wait_text(&client, "#scheduled-count").await.unwrap();
    assert_eq!(count, "2 messages wait for their time.");
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for letter in client.find_all(Locator::Css(".letter")).await.unwrap() {
            ids.push(letter.attr("data-id").await.unwrap().unwrap());
        }
        ids
    };
    assert_eq!(ids, [sooner.clone(), later.clone()]);
    let due = text(&client, &format!(".letter[data-id='{sooner}'] p.due"))
        .await
        .unwrap();
    assert!(due.starts_with("due ") && due.contains("(in 59m "), "{due}");
    let payload = text(&client, &format!(".letter[data-id='{later}'] pre.payload"))
        .await
        .unwrap();
    assert!(payload.contains("\"invoice\": \"later\""), "{payload}");
    screenshot(&client, "scheduled").await;
    // Looking moved nothing: all three still wait in the cascade.
    client.refresh().await.unwrap();
    let count = wait_text(&client, "#scheduled-count").await.unwrap();
    assert_eq!(count, "2 messages wait for their time.");
    let conn = connect().await;
    let mut waiting = 0;
    for level in 0..warren::delay::LEVELS {
        let queue = warren::names::delay_level(&file.name, level);
        waiting += queue_state(&conn, &queue).await.unwrap().0;
    }
    assert_eq!(waiting, 3);
    let _ = conn.close(200, "".into()).await;
    client.close().await.unwrap();
}

/// The Waiting page peeks at the first messages of a stage's queue, in
/// order, and leaves them to their workers uncharged: with one attempt
/// each, a message whose redelivery after the peek were taken for a crash
/// would be dead-lettered. Peeked once with no worker running (a worker
/// started later reads the peek), then again while a worker handles them
/// (its worker follows the peek live).
#[tokio::test]
async fn the_waiting_page_peeks_at_a_stage_without_charging_its_messages() {
    let file = PipelineFile::new(
        "dashwait",
        &format!(
            "
pipeline: {{name}}
serve: {{ token: \"{TOKEN}\" }}
defaults:
  retry: {{ attempts: 1 }}
stages:
  work:
    command: [unused]
    concurrency: 1
    prefetch: 2
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let producer = Producer::connect(&pipeline).await.unwrap();
    let mut sent = Vec::new();
    for n in 0..30 {
        let id = format!("w{n:02}");
        producer
            .send_with_id("work", &id, &json!({ "invoice": n }))
            .await
            .unwrap();
        sent.push(id);
    }
    let (_driver, client) = browser().await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;
    assert!(wait_text(&client, "#overview").await.is_some());
    client
        .find(Locator::Css("tr[data-stage=work] a.more[href$=waiting]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let count = wait_text(&client, "#waiting-count").await.unwrap();
    assert_eq!(count, "30 messages were ready.");
    assert_eq!(shown_ids(&client).await, sent);
    let payload = text(&client, ".letter[data-id=w07] pre.payload")
        .await
        .unwrap();
    assert!(payload.contains("\"invoice\": 7"), "{payload}");
    screenshot(&client, "waiting").await;
    // Given back, all of them.
    let conn = connect().await;
    let queue = warren::names::stage_queue(&file.name, "work");
    let back = eventually(Duration::from_secs(20), || async {
        queue_state(&conn, &queue).await.map(|s| s.0) == Some(30)
    })
    .await;
    assert!(back, "{:?}", queue_state(&conn, &queue).await);

    // A worker takes them; a peek while it works shows those still
    // waiting, in order.
    let handled = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = handled.clone();
    let running = spawn_worker(Worker::new().pipeline(pipeline.clone()).stage(
        "work",
        move |_body: Value, ctx: Context| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(ctx.id().to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
        },
    ));
    let started = eventually(Duration::from_secs(30), || async {
        handled.lock().unwrap().len() >= 3
    })
    .await;
    assert!(started);
    client.refresh().await.unwrap();
    let shown = shown_ids(&client).await;
    assert!(!shown.is_empty() && shown.len() < 30, "{shown:?}");
    assert!(sent.ends_with(&shown), "{shown:?}");
    let done = eventually(Duration::from_secs(90), || async {
        handled.lock().unwrap().len() >= 30
    })
    .await;
    assert!(done, "{:?}", handled.lock().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop().await.unwrap();
    let mut handled = handled.lock().unwrap().clone();
    handled.sort();
    assert_eq!(handled, sent, "each handled once");
    let dead = warren::names::dead_queue(&file.name, "work");
    let isolated = warren::names::isolation_queue(&file.name, "work");
    assert_eq!(queue_state(&conn, &dead).await.map(|s| s.0), Some(0));
    assert_eq!(queue_state(&conn, &isolated).await.map(|s| s.0), Some(0));
    let _ = conn.close(200, "".into()).await;
    client.close().await.unwrap();
}

/// The ids of the messages a page lists, in its order.
async fn shown_ids(client: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for letter in client.find_all(Locator::Css(".letter")).await.unwrap() {
        ids.push(letter.attr("data-id").await.unwrap().unwrap());
    }
    ids
}

/// `supervise --http`'s History page: what its workers did, per stage,
/// in the last hour and day, and a chart of the day; then its Busy page
/// with a message being handled.
#[tokio::test]
async fn the_history_page_counts_and_charts_what_each_stage_did() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py");
    let file = PipelineFile::new(
        "dashhist",
        &format!(
            "
pipeline: {{name}}
stages:
  work:
    exec: [python3, {}]
    retry: {{ attempts: 3, backoff: [1s] }}
",
            script.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let (_supervisor, base) = supervise_http(&file).await;
    let (_driver, client) = browser().await;
    let page = format!("{base}/history");
    let none = "0 done, 0 retried, 0 dead";
    let hour = "tr[data-stage=work] td[data-field=hour]";
    assert!(until_text(&client, &page, hour, none, Duration::from_secs(30)).await);
    let pipeline = warren::config::load(&file.path).unwrap();
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..30 {
        producer.send("work", &json!({ "n": n })).await.unwrap();
    }
    for n in 0..2 {
        producer
            .send("work", &json!({ "n": n, "retry_until": 2 }))
            .await
            .unwrap();
    }
    for n in 0..3 {
        producer
            .send("work", &json!({ "n": n, "dead": "bad input" }))
            .await
            .unwrap();
    }
    let counted = "32 done, 2 retried, 3 dead";
    assert!(
        until_text(&client, &page, hour, counted, Duration::from_secs(60)).await,
        "{}",
        client.source().await.unwrap()
    );
    let day = text(&client, "tr[data-stage=work] td[data-field=day]").await;
    assert_eq!(day.as_deref(), Some(counted));
    let lines = client
        .find_all(Locator::Css("tr[data-stage=work] svg.history polyline"))
        .await
        .unwrap();
    assert_eq!(lines.len(), 3);
    screenshot(&client, "history").await;
    // The Busy page while a message takes its time.
    producer
        .send_with_id("work", "slow-1", &json!({ "sleep_ms": 20_000 }))
        .await
        .unwrap();
    let busy = format!("{base}/busy");
    let one = "1 message(s) being handled.";
    assert!(until_text(&client, &busy, "#busy-count", one, Duration::from_secs(30)).await);
    let attempt = text(&client, "#busy tr[data-id=slow-1] td:nth-child(6)").await;
    assert_eq!(attempt.as_deref(), Some("1"));
    screenshot(&client, "busy").await;
    client.close().await.unwrap();
}

/// The overview's Pause button stops a running worker's stage (the
/// backlog waits, the row says paused), Resume starts it again; both are
/// logged.
#[tokio::test]
async fn the_pause_button_stops_a_stage_and_resume_starts_it_again() {
    let file = PipelineFile::new("dashpause", &pipeline_text(true));
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = handled.clone();
    let running = spawn_worker(Worker::new().pipeline(pipeline.clone()).stage(
        "work",
        move |_body: Value, _ctx: Context| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
    ));
    let queue = format!("{}.work", file.name);
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue_state(&connect().await, &queue)
                .await
                .is_some_and(|(_, consumers)| consumers == 1)
        })
        .await
    );
    let (_driver, client) = browser().await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;
    assert!(wait_text(&client, "#overview").await.is_some());
    let row = "tr[data-stage='work']";
    client
        .find(Locator::Css(&format!("{row} button[data-action='pause']")))
        .await
        .expect("a Pause button")
        .click()
        .await
        .unwrap();
    let paused_cell = format!("{row} td[data-field='paused']");
    // Read where the form's answer lands (the overview, whose cells
    // follow the live figures): navigating away at once could cancel the
    // form's POST on a loaded machine.
    assert!(
        eventually(Duration::from_secs(30), || async {
            text(&client, &paused_cell).await.as_deref() == Some("yes")
        })
        .await,
        "the row says paused"
    );
    // The cell follows the live figures; the button is drawn with the page
    // (a page drawn just before the figures changed still offers Pause).
    let resume = format!("{row} button[data-action='resume']");
    assert!(
        eventually(Duration::from_secs(30), || async {
            client.goto(&format!("{base}/")).await.unwrap();
            client.find(Locator::Css(&resume)).await.is_ok()
        })
        .await,
        "a Resume button once paused"
    );
    // The worker takes nothing while paused: the backlog waits (what it
    // prefetched unstarted in it, the rest in the queue).
    let producer = Producer::connect(&pipeline).await.unwrap();
    for n in 0..100 {
        producer.send("work", &json!({ "n": n })).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 0, "handled while paused");
    let (ready, _) = queue_state(&connect().await, &queue).await.unwrap();
    assert!(
        ready >= 30,
        "the backlog waits in the queue ({ready} ready)"
    );
    screenshot(&client, "paused").await;
    client
        .find(Locator::Css(&resume))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Read where the form's answer lands (the overview, whose cells
    // follow the live figures): navigating away at once could cancel the
    // form's POST on a loaded machine.
    assert!(
        eventually(Duration::from_secs(30), || async {
            text(&client, &paused_cell).await.as_deref() == Some("-")
        })
        .await,
        "the row says running again"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue_state(&connect().await, &queue).await == Some((0, 1))
        })
        .await,
        "the backlog is handled after the resume"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            handled.load(Ordering::SeqCst) == 100
        })
        .await,
        "handled after the resume: {}",
        handled.load(Ordering::SeqCst)
    );
    client.close().await.unwrap();
    let log = serve_log(&file);
    assert!(
        log.contains("stage paused on every box") && log.contains("route=the dashboard"),
        "the button's action is logged: {log}"
    );
    running.stop().await.unwrap();
}

/// A page of another site the operator has open posts a purge form and a
/// `text/plain` message to the dashboard of the default setup (loopback,
/// no token, actions allowed): neither changes anything. The dashboard's
/// own forms still purge.
#[tokio::test]
async fn a_page_of_another_site_can_neither_purge_nor_ingest() {
    let file = PipelineFile::new(
        "dashcsrf",
        "
pipeline: {name}
serve: { allow_actions: true }
stages:
  work:
    command: [unused]
",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let dead_queue = format!("{}.work.dead", file.name);
    let conn = connect().await;
    for id in ["d1", "d2"] {
        publish_raw(&conn, "", &dead_queue, b"{\"n\": 1}", Some(id)).await;
    }
    let count = |queue: String| async move {
        let conn = connect().await;
        let (n, _) = queue_state(&conn, &queue).await.unwrap();
        let _ = conn.close(200, "".into()).await;
        n
    };
    // The other site: `localhost` is another origin than `127.0.0.1`.
    let page = format!(
        r#"<!doctype html><html><body>
<form id="f" method="post" action="{base}/stages/work/dead">
<input type="hidden" name="action" value="purge"><input type="hidden" name="scope" value="all">
<input type="hidden" name="confirmed" value="yes"></form>
<script>
fetch('{base}/v1/stages/work/messages', {{method: 'POST', mode: 'no-cors', body: '{{"n": 1}}'}})
  .catch(() => {{}})
  .finally(() => document.getElementById('f').submit());
</script></body></html>"#
    );
    let evil = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, evil).await });

    let (_driver, client) = browser().await;
    client
        .goto(&format!("http://localhost:{evil_port}/"))
        .await
        .unwrap();
    let dead_page = format!("{base}/stages/work/dead");
    let submitted = eventually(Duration::from_secs(30), || async {
        client
            .current_url()
            .await
            .is_ok_and(|url| url.as_str().starts_with(&dead_page))
    })
    .await;
    assert!(submitted, "the other site's form was never sent");
    screenshot(&client, "cross-site-refused").await;
    assert_eq!(
        count(dead_queue.clone()).await,
        2,
        "a cross-site form purged"
    );
    assert_eq!(
        count(format!("{}.work", file.name)).await,
        0,
        "a cross-site fetch ingested"
    );

    // The operator's own purge, from the dashboard's page.
    client.goto(&dead_page).await.unwrap();
    client
        .find(Locator::Css("button.purge-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = wait_text(&client, "#confirm-count").await.unwrap();
    assert!(asked.contains("purge 2 message(s)"), "{asked}");
    client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = wait_text(&client, "p.note").await.unwrap_or_default();
    assert_eq!(said, "Purged 2 message(s)");
    assert_eq!(count(dead_queue.clone()).await, 0);
    client.close().await.unwrap();
    let _ = conn.close(200, "".into()).await;
}

/// The job page shows a job's result and progress, a delayed job's wait,
/// and its cancel button
/// (after a confirmation) cancels a running job, whose handler stops.
#[tokio::test]
async fn a_job_page_shows_result_and_progress_and_cancels_the_job() {
    let file = PipelineFile::new(
        "dashjob",
        &format!(
            "
pipeline: {{name}}
jobs: {{ track: true, result: work }}
serve: {{ token: \"{TOKEN}\", allow_actions: true }}
stages:
  work:
    command: [unused]
    concurrency: 2
    prefetch: 2
    timeout: 120s
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let (_server, base) = serve(&file).await;
    let stopped = Arc::new(AtomicBool::new(false));
    let running = spawn_worker(Worker::new().pipeline(pipeline.clone()).stage("work", {
        let stopped = stopped.clone();
        move |body: Value, ctx: Context| {
            let stopped = stopped.clone();
            async move {
                if body["slow"] == json!(true) {
                    ctx.progress(0.3, "page 3 of 10");
                    ctx.cancelled().await;
                    stopped.store(ctx.job_cancelled(), Ordering::SeqCst);
                    return Ok(());
                }
                ctx.progress(1.0, "all pages");
                Ok(())
            }
        }
    }));
    let producer = Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("work", "r", &json!({ "answer": 42 }))
        .await
        .unwrap();
    producer
        .send_with_id("work", "s", &json!({ "slow": true }))
        .await
        .unwrap();
    let (_driver, client) = browser().await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;

    let done = format!("{base}/jobs?id=r");
    assert!(
        until_text(
            &client,
            &done,
            "#job-state",
            "done",
            Duration::from_secs(30)
        )
        .await,
        "{}",
        client.source().await.unwrap()
    );
    let result = text(&client, "#job-result").await.unwrap_or_default();
    assert!(result.contains("\"answer\": 42"), "{result}");
    assert_eq!(
        text(&client, "#job-progress tr[data-stage=work] td.fraction")
            .await
            .as_deref(),
        Some("100%")
    );
    assert!(
        client
            .find_all(Locator::Css("#cancel-job"))
            .await
            .unwrap()
            .is_empty(),
        "a settled job offers no cancel"
    );
    screenshot(&client, "job-result").await;

    // A delayed job shows that it waits, and until when.
    let later = producer
        .send_after("work", Duration::from_secs(3600), &json!({ "later": true }))
        .await
        .unwrap();
    assert!(
        until_text(
            &client,
            &format!("{base}/jobs?id={later}"),
            "#job-state",
            "scheduled",
            Duration::from_secs(30)
        )
        .await,
        "{}",
        client.source().await.unwrap()
    );
    let waits = text(&client, "#job-not-before").await.unwrap_or_default();
    assert!(waits.contains("waits on the broker until"), "{waits}");

    let slow = format!("{base}/jobs?id=s");
    let note = "#job-progress tr[data-stage=work] td.progress-note";
    assert!(
        until_text(
            &client,
            &slow,
            note,
            "page 3 of 10",
            Duration::from_secs(30)
        )
        .await,
        "{}",
        client.source().await.unwrap()
    );
    assert_eq!(
        text(&client, "#job-state").await.as_deref(),
        Some("running")
    );
    client
        .find(Locator::Css("#cancel-job"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = wait_text(&client, "#confirm-count").await.unwrap();
    assert!(asked.contains("cancel job s"), "{asked}");
    client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        wait_text(&client, "p.note").await.as_deref(),
        Some("Cancelled")
    );
    assert!(
        until_text(
            &client,
            &slow,
            "#job-state",
            "cancelled",
            Duration::from_secs(30)
        )
        .await,
        "{}",
        client.source().await.unwrap()
    );
    let told = eventually(Duration::from_secs(30), || async {
        stopped.load(Ordering::SeqCst)
    })
    .await;
    assert!(told, "the running handler never saw the cancel");
    screenshot(&client, "job-cancelled").await;
    client.close().await.unwrap();
    running.stop().await.unwrap();
}

/// Over HTTPS (`serve.tls`) with scoped tokens: a read token signs in and
/// sees the dead letters without buttons; an admin token's session (a
/// Secure cookie, the page's own https origin) purges them through the
/// buttons, after confirming.
#[tokio::test]
async fn over_https_a_read_token_sees_no_buttons_and_an_admin_purges() {
    const READ: &str = "read-0123456789abcdef";
    let file = PipelineFile::new(
        "dashtls",
        &format!(
            "
pipeline: {{name}}
serve:
  token: \"{TOKEN}\"
  tokens: {{ read: {READ} }}
  allow_actions: true
  tls: {{ cert: tls-cert.pem, key: tls-key.pem }}
stages:
  work:
    command: [unused]
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    front_door::certificate(file.dir.path(), "tls");
    let trusting = front_door::trusting(file.dir.path(), "tls");
    let (_server, base) = front_door::start(&file, "serve", "127.0.0.1", "https", &trusting).await;
    let dead_queue = format!("{}.work.dead", file.name);
    let conn = connect().await;
    for id in ["d1", "d2"] {
        publish_raw(&conn, "", &dead_queue, b"{\"n\": 1}", Some(id)).await;
    }
    let _ = conn.close(200, "".into()).await;
    let dead_page = format!("{base}/stages/work/dead");
    let group = "table#groups td.count";

    // The test's own CA is not the browser's: it is told to go on.
    let (driver, client) = browser_with(&["--ignore-certificate-errors"]).await;
    client.goto(&format!("{base}/")).await.unwrap();
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/login")
    );
    sign_in_with(&client, READ).await;
    assert!(wait_text(&client, "#overview").await.is_some());
    assert!(until_text(&client, &dead_page, group, "2", Duration::from_secs(30)).await);
    let buttons = client
        .find_all(Locator::Css(
            "button.replay-all, button.purge-all, button.purge-group",
        ))
        .await
        .unwrap();
    assert!(buttons.is_empty(), "a read token is offered actions");
    screenshot(&client, "read-token").await;
    client.close().await.unwrap();
    drop(driver);

    let (_driver, client) = browser_with(&["--ignore-certificate-errors"]).await;
    client.goto(&format!("{base}/login")).await.unwrap();
    sign_in(&client).await;
    assert!(wait_text(&client, "#overview").await.is_some());
    assert!(until_text(&client, &dead_page, group, "2", Duration::from_secs(30)).await);
    client
        .find(Locator::Css("button.purge-all"))
        .await
        .expect("the admin's purge button")
        .click()
        .await
        .unwrap();
    let asked = wait_text(&client, "#confirm-count")
        .await
        .unwrap_or_default();
    assert!(asked.contains("purge 2 message(s)"), "{asked}");
    client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = wait_text(&client, "p.note").await.unwrap_or_default();
    assert!(done.contains("Purged 2"), "{done}");
    let conn = connect().await;
    let (dead, _) = queue_state(&conn, &dead_queue).await.unwrap();
    let _ = conn.close(200, "".into()).await;
    assert_eq!(dead, 0, "the admin's purge");
    client.close().await.unwrap();
}

/// One server of two pipelines (a folder) in a browser: the list at `/`,
/// each pipeline's overview at its base refreshing live (its script asks
/// relative to the base), its links staying in it, and its pause button
/// pausing its own stage only.
#[tokio::test]
async fn several_pipelines_each_have_their_own_dashboard() {
    let file = PipelineFile::new("dashmany", &pipeline_text(true));
    let second = unique_name("dashmany2");
    let second_path = file.file("second.yaml");
    std::fs::write(
        &second_path,
        format!(
            "pipeline: {second}\nserve: {{ allow_actions: true }}\nstages:\n  work:\n    command: [unused]\n"
        ),
    )
    .unwrap();
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let _cleanup_second = Cleanup::pipeline(&second_path, &[]);
    let other = warren::config::load(&second_path).unwrap();
    let (_server, base) = serve_paths(&file, &[file.dir.path()]).await;
    let (_driver, client) = browser().await;

    client.goto(&format!("{base}/")).await.unwrap();
    sign_in(&client).await;
    assert!(wait_text(&client, "#pipelines").await.is_some());
    assert_eq!(client.current_url().await.unwrap().path(), "/");
    screenshot(&client, "pipelines").await;
    client
        .find(Locator::Css(&format!("tr[data-pipeline='{second}'] a")))
        .await
        .expect("a link to the second pipeline")
        .click()
        .await
        .unwrap();
    assert!(wait_text(&client, "#overview").await.is_some());
    let home = format!("/p/{second}/");
    assert_eq!(client.current_url().await.unwrap().path(), home);

    // Its figures, live.
    let producer = Producer::connect(&other).await.unwrap();
    for n in 0..40 {
        producer.send("work", &json!({ "n": n })).await.unwrap();
    }
    let ready = "tr[data-stage=work] td[data-field=ready]";
    let shown = eventually(Duration::from_secs(20), || async {
        text(&client, ready).await.as_deref() == Some("40")
    })
    .await;
    assert!(
        shown,
        "the overview showed {:?}",
        text(&client, ready).await
    );
    screenshot(&client, "pipeline").await;

    // Its pause button pauses its stage, not the first pipeline's.
    client
        .find(Locator::Css(
            "tr[data-stage='work'] button[data-action='pause']",
        ))
        .await
        .expect("a Pause button")
        .click()
        .await
        .unwrap();
    let paused = "tr[data-stage='work'] td[data-field='paused']";
    // Where the form's answer lands, without navigating away from it.
    assert!(
        eventually(Duration::from_secs(30), || async {
            text(&client, paused).await.as_deref() == Some("yes")
        })
        .await,
        "the second pipeline's stage says paused"
    );
    client
        .goto(&format!("{base}/p/{}/", file.name))
        .await
        .unwrap();
    assert!(wait_text(&client, "#overview").await.is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(text(&client, paused).await.as_deref(), Some("-"));

    // Its links stay in it; the header leads back to the list.
    client.goto(&format!("{base}{home}")).await.unwrap();
    client
        .find(Locator::Css("header a[href='jobs']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = wait_text(&client, "main p").await.unwrap_or_default();
    assert!(said.contains("does not track jobs"), "{said}");
    assert_eq!(
        client.current_url().await.unwrap().path(),
        format!("{home}jobs")
    );
    client
        .find(Locator::Css("header a[href='/']"))
        .await
        .expect("a link to the list")
        .click()
        .await
        .unwrap();
    assert!(wait_text(&client, "#pipelines").await.is_some());
    assert_eq!(client.current_url().await.unwrap().path(), "/");
}
