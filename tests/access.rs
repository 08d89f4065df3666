//! Access to `warren serve` (DESIGN.md, *HTTP*) as a real process against
//! the real broker: scoped tokens (`serve.tokens`: ingest may only post
//! messages, read only GET, admin everything; a wrong or missing token is
//! 401, a right token of the wrong scope 403), the dashboard's actions only
//! for admin, cross-site POSTs refused even with a token, HTTPS with
//! `serve.tls` (a certificate made by `openssl` here) on `warren serve` and
//! `warren supervise --http`, plain HTTP to the HTTPS port failing, TLS
//! files that cannot be served stopping the start, and what the start says
//! about who may ask.

mod common;
#[path = "common/front_door.rs"]
mod front_door;

use std::{path::Path, time::Duration};

use common::*;
use front_door::{certificate, plain, start, trusting};
use serde_json::Value;

const INGEST: &str = "ingest-0123456789abcdef";
const READ: &str = "read-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

/// A tracked pipeline with one stage, no workers, tokens for every scope,
/// the dashboard's actions allowed, and `more` in `serve:`.
fn pipeline(prefix: &str, more: &str) -> PipelineFile {
    PipelineFile::new(
        prefix,
        &format!(
            "
pipeline: {{name}}
jobs: {{ track: true }}
serve:
  tokens: {{ ingest: {INGEST}, read: {READ}, admin: {ADMIN} }}
  allow_actions: true
{more}
stages:
  work:
    command: [unused]
"
        ),
    )
}

/// Sends `request` with `token` (if any): its status and body.
async fn send(request: reqwest::RequestBuilder, token: Option<&str>) -> (u16, String) {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let answer = request.send().await.expect("an answer");
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Messages in a queue.
async fn held(queue: &str) -> u32 {
    let conn = connect().await;
    let (messages, _) = queue_state(&conn, queue).await.expect("the queue");
    let _ = conn.close(200, "".into()).await;
    messages
}

/// Puts `ids` in the stage's dead-letter queue.
async fn dead_letters(file: &PipelineFile, ids: &[&str]) {
    let conn = connect().await;
    for id in ids {
        publish_raw(
            &conn,
            "",
            &format!("{}.work.dead", file.name),
            b"{\"n\": 1}",
            Some(id),
        )
        .await;
    }
    let _ = conn.close(200, "".into()).await;
}

#[tokio::test]
async fn each_token_may_do_what_its_scope_allows_and_nothing_more() {
    let file = pipeline("access", "");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let client = plain();
    let (_server, base) = start(&file, "serve", "127.0.0.1", "http", &client).await;
    let queue = format!("{}.work", file.name);
    let dead_queue = format!("{}.work.dead", file.name);
    dead_letters(&file, &["d1"]).await;
    let ingest = format!("{base}/v1/stages/work/messages");
    let message = |id: &str| {
        client
            .post(&ingest)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", id)
            .body("{\"n\": 1}")
    };
    let metrics = || client.get(format!("{base}/metrics"));
    let job = |id: &str| client.get(format!("{base}/v1/jobs/{id}"));
    let cancel = |id: &str| client.delete(format!("{base}/v1/jobs/{id}"));
    let purge = || {
        client
            .post(format!("{base}/stages/work/dead"))
            .header("Origin", &base)
            .form(&[("action", "purge"), ("scope", "all"), ("confirmed", "yes")])
    };
    let pause = || client.post(format!("{base}/v1/stages/work/pause"));

    // No token, or a wrong one: 401 saying how to authenticate.
    for token in [None, Some("wrong-0123456789abcdef")] {
        let (code, body) = send(metrics(), token).await;
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("Bearer"), "{body}");
        assert_eq!(send(message("x"), token).await.0, 401);
    }
    assert_eq!(
        send(client.get(format!("{base}/healthz")), None).await.0,
        200
    );

    // Ingest: posts messages, and nothing else (403 naming the scope).
    let (code, body) = send(message("m1"), Some(INGEST)).await;
    assert_eq!(code, 202, "{body}");
    for (what, request) in [
        ("GET a job", job("m1")),
        ("GET /metrics", metrics()),
        ("GET /", client.get(format!("{base}/"))),
        ("DELETE a job", cancel("m1")),
        ("purge", purge()),
        ("pause", pause()),
    ] {
        let (code, body) = send(request, Some(INGEST)).await;
        assert_eq!(code, 403, "ingest may not {what}: {body}");
        assert!(body.contains("`ingest`"), "{what}: {body}");
    }

    // Read: every GET, no change.
    let queued = eventually(Duration::from_secs(30), || async {
        let (code, body) = send(job("m1"), Some(READ)).await;
        code == 200 && body.contains("queued")
    });
    assert!(queued.await, "{:?}", send(job("m1"), Some(READ)).await);
    let (code, body) = send(metrics(), Some(READ)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("warren_queue_ready"), "{body}");
    for (what, request) in [
        ("post a message", message("m2")),
        ("DELETE a job", cancel("m1")),
        ("purge", purge()),
        ("pause", pause()),
    ] {
        let (code, body) = send(request, Some(READ)).await;
        assert_eq!(code, 403, "read may not {what}: {body}");
        assert!(body.contains("`read`"), "{what}: {body}");
    }
    // The dashboard shows a read token the dead letters without buttons.
    let (code, page) = send(client.get(format!("{base}/stages/work/dead")), Some(READ)).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("1 messages"), "{page}");
    assert!(!page.contains("purge-all"), "no action for read: {page}");
    let (_, page) = send(client.get(format!("{base}/jobs?id=m1")), Some(READ)).await;
    assert!(
        page.contains("queued") && !page.contains("cancel-job"),
        "{page}"
    );
    assert_eq!(held(&dead_queue).await, 1, "nothing was purged");
    assert_eq!(held(&queue).await, 1, "only the ingest token's message");

    // Admin: everything.
    let (code, body) = send(message("m3"), Some(ADMIN)).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(send(metrics(), Some(ADMIN)).await.0, 200);
    let (_, page) = send(client.get(format!("{base}/stages/work/dead")), Some(ADMIN)).await;
    assert!(
        page.contains("purge-all"),
        "admin is offered the actions: {page}"
    );
    let (_, page) = send(client.get(format!("{base}/jobs?id=m3")), Some(ADMIN)).await;
    assert!(page.contains("cancel-job"), "{page}");
    let (code, body) = send(purge(), Some(ADMIN)).await;
    assert_eq!(code, 303, "{body}");
    let purged = eventually(Duration::from_secs(20), || async {
        held(&dead_queue).await == 0
    });
    assert!(purged.await, "the admin's purge");
    let (code, body) = send(cancel("m3"), Some(ADMIN)).await;
    assert_eq!(code, 202, "{body}");

    // The dashboard's sign-in: read and admin tokens get a session cookie
    // (a read one sees pages without buttons), an ingest token none.
    let login = |token: &str| {
        client
            .post(format!("{base}/login"))
            .header("Origin", &base)
            .form(&[("token", token)])
    };
    let answer = login(INGEST).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    assert!(answer.headers().get("set-cookie").is_none());
    assert_eq!(
        login("wrong-0123456789abcdef")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let answer = login(READ).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 303);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let (code, page) = send(
        client
            .get(format!("{base}/stages/work/dead"))
            .header("Cookie", &session),
        None,
    )
    .await;
    assert_eq!(code, 200, "{page}");
    let posted = client
        .post(format!("{base}/stages/work/dead"))
        .header("Cookie", &session)
        .header("Origin", &base)
        .form(&[("action", "purge"), ("scope", "all")]);
    assert_eq!(
        send(posted, None).await.0,
        403,
        "a read session changes nothing"
    );

    let log = serve_log(&file);
    for token in [INGEST, READ, ADMIN] {
        assert!(!log.contains(token), "a token was logged:\n{log}");
    }
}

/// One request written by hand (any `Host`), answered on a fresh
/// connection: (status, body).
async fn raw_request(base: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// A page of another site, or a name of its own made to resolve to this
/// box, can change nothing even when the browser holds an admin session:
/// the origin and host checks come before the token's scope.
#[tokio::test]
async fn a_cross_site_post_is_refused_even_with_an_admin_token() {
    let file = pipeline("accesscsrf", "");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let client = plain();
    let (_server, base) = start(&file, "serve", "127.0.0.1", "http", &client).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let dead_queue = format!("{}.work.dead", file.name);
    dead_letters(&file, &["d1", "d2"]).await;
    let session = format!("warren_token={ADMIN}");
    let form = [("action", "purge"), ("scope", "all"), ("confirmed", "yes")];

    // A foreign Origin, with the session cookie or a bearer token.
    let cookie = client
        .post(format!("{base}/stages/work/dead"))
        .header("Cookie", &session)
        .header("Origin", "http://evil.example")
        .form(&form);
    let (code, body) = send(cookie, None).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("another site"), "{body}");
    let bearer = client
        .post(format!("{base}/v1/stages/work/messages"))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "application/json")
        .body("{}");
    assert_eq!(send(bearer, Some(ADMIN)).await.0, 403);
    let cancel = client
        .delete(format!("{base}/v1/jobs/j1"))
        .header("Sec-Fetch-Site", "cross-site");
    assert_eq!(send(cancel, Some(ADMIN)).await.0, 403);

    // A foreign Host (DNS rebinding), even with its own matching Origin.
    let body = "action=purge&scope=all&confirmed=yes";
    let (code, answer) = raw_request(
        &base,
        &format!(
            "POST /stages/work/dead HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nCookie: {session}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("serve.hosts"), "{answer}");
    assert_eq!(held(&dead_queue).await, 2, "nothing was purged");

    // The page's own origin with the admin session: purged.
    let own = client
        .post(format!("{base}/stages/work/dead"))
        .header("Cookie", &session)
        .header("Origin", &base)
        .form(&form);
    assert_eq!(send(own, None).await.0, 303);
    let purged = eventually(Duration::from_secs(20), || async {
        held(&dead_queue).await == 0
    });
    assert!(purged.await, "the dashboard's own purge");
}

#[tokio::test]
async fn serve_tls_speaks_https_only_with_its_certificate() {
    let file = pipeline(
        "accesstls",
        "  tls: { cert: tls-cert.pem, key: tls-key.pem }",
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    certificate(file.dir.path(), "tls");
    let client = trusting(file.dir.path(), "tls");
    let (_server, base) = start(&file, "serve", "127.0.0.1", "https", &client).await;
    assert!(
        serve_log(&file).contains(&format!("listening on {base}")),
        "{}",
        serve_log(&file)
    );

    // HTTPS: the routes, the tokens and the origin check as over HTTP.
    let (code, body) = send(client.get(format!("{base}/metrics")), Some(READ)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        send(client.get(format!("{base}/metrics")), None).await.0,
        401
    );
    let message = || {
        client
            .post(format!("{base}/v1/stages/work/messages"))
            .header("Content-Type", "application/json")
            .body("{\"n\": 1}")
    };
    let (code, body) = send(message(), Some(INGEST)).await;
    assert_eq!(code, 202, "{body}");
    let own = message().header("Origin", &base);
    assert_eq!(send(own, Some(INGEST)).await.0, 202);
    let plain_origin = message().header("Origin", base.replace("https:", "http:"));
    assert_eq!(
        send(plain_origin, Some(INGEST)).await.0,
        403,
        "another origin"
    );
    let answer = client
        .post(format!("{base}/login"))
        .header("Origin", &base)
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    let cookie = answer.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("; Secure"),
        "over HTTPS the cookie is Secure: {cookie}"
    );
    let queue = format!("{}.work", file.name);
    assert!(
        eventually(Duration::from_secs(20), || async {
            held(&queue).await == 2
        })
        .await
    );

    // Plain HTTP to the HTTPS port gets no answer; nor does a client that
    // does not trust the certificate.
    let http = base.replace("https:", "http:");
    let refused = plain().get(format!("{http}/healthz")).send().await;
    assert!(refused.is_err(), "plain HTTP answered: {refused:?}");
    let (code, answer) = raw_request(
        &http,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 0, "{answer}");
    let untrusting = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
}

#[tokio::test]
async fn supervise_http_serves_https_too() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/exec_stage.py");
    let file = PipelineFile::new(
        "accesssup",
        &format!(
            "
pipeline: {{name}}
serve:
  tokens: {{ read: {READ} }}
  tls: {{ cert: tls-cert.pem, key: tls-key.pem }}
stages:
  work:
    exec: [python3, {}]
",
            script.display()
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    certificate(file.dir.path(), "tls");
    let client = trusting(file.dir.path(), "tls");
    let (_supervisor, base) = start(&file, "supervise", "127.0.0.1", "https", &client).await;
    let (code, body) = send(
        client.get(format!("{base}/dashboard/overview.json")),
        Some(READ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).unwrap();
    assert!(overview.to_string().contains("work"), "{overview}");
    let refused = plain()
        .get(format!("{}/healthz", base.replace("https:", "http:")))
        .send()
        .await;
    assert!(refused.is_err(), "plain HTTP answered: {refused:?}");
}

#[test]
fn tls_files_that_cannot_be_served_stop_the_start_naming_field_and_file() {
    let file = pipeline(
        "accessbadtls",
        "  tls: { cert: tls-cert.pem, key: other-key.pem }",
    );
    let path = file.path.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", path, "--listen", "127.0.0.1:1"];
        args.extend_from_slice(extra);
        warren_env(&args, &[("WARREN_SERVE_TOKEN", "")])
    };
    let out = serve(&[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("serve.tls.cert")
            && stderr.contains("tls-cert.pem")
            && stderr.contains("cannot read"),
        "{stderr}"
    );
    certificate(file.dir.path(), "tls");
    let out = serve(&[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("serve.tls.key") && stderr.contains("other-key.pem"),
        "{stderr}"
    );
    // A key that is not the certificate's.
    certificate(file.dir.path(), "other");
    let out = serve(&[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("serve.tls.key") && stderr.contains("does not serve with"),
        "{stderr}"
    );
    let out = warren_env(
        &["supervise", path, "--http", "127.0.0.1:1"],
        &[("WARREN_SERVE_TOKEN", "")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("serve.tls.key"), "{stderr}");
}

#[tokio::test]
async fn the_start_says_who_may_ask() {
    // No token: loopback only, said so.
    let open = PipelineFile::new(
        "accessopen",
        "
pipeline: {name}
stages:
  work:
    command: [unused]
",
    );
    let _cleanup = Cleanup::pipeline(&open.path, &[]);
    let client = plain();
    let (server, _) = start(&open, "serve", "127.0.0.1", "http", &client).await;
    drop(server);
    let log = serve_log(&open);
    assert!(
        log.contains("listening on loopback only, without authentication"),
        "{log}"
    );

    // Tokens on every address, without TLS: said that they travel in clear.
    let file = pipeline("accessclear", "");
    let _cleanup = Cleanup::pipeline(&file.path, &[]);
    let (server, base) = start(&file, "serve", "0.0.0.0", "http", &client).await;
    assert_eq!(
        send(client.get(format!("{base}/metrics")), Some(READ))
            .await
            .0,
        200
    );
    drop(server);
    let log = serve_log(&file);
    assert!(log.contains("in clear text"), "{log}");
    assert!(!log.contains("without authentication"), "{log}");

    // WARREN_SERVE_TOKEN may not be another scope's token.
    let out = warren_env(
        &[
            "serve",
            file.path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ],
        &[("WARREN_SERVE_TOKEN", READ)],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("serve.tokens.read") && !stderr.contains(READ),
        "{stderr}"
    );
}
