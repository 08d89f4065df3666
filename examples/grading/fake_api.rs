//! A stand-in for a third-party grading API, to run the grading example
//! without the internet: `POST /grade` with `{"website": ...}` answers
//! `{"website", "grade"}` after a delay, and misbehaves on request.
//!
//! ```text
//! fake-grading-api [--port 8089] [--latency 30ms] [--error-rate 0.02]
//!                  [--rate-limit 300] [--outage 20s..40s] [--reject text]
//! ```
//!
//! `--rate-limit N` answers 429 with `Retry-After: 1` beyond N requests a
//! second; `--outage A..B` answers 503 from A to B after the start; `--reject
//! TEXT` answers 422 for companies whose name contains TEXT (dead letters).
//! Like an API that dedupes, a request with an `Idempotency-Key` it answered
//! with a grade before gets that same answer again, without grading twice.
//! `GET /stats` answers the number of requests, the most seen in one second,
//! the gradings made (`graded`: what a real API would have done, a tweet
//! posted, a card charged) and the requests answered from a key seen before
//! (`repeated`). With `--port 0` it picks a free port. It prints `listening
//! on ADDRESS` once ready.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "A fake grading API for the grading example")]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Time taken by each answer.
    #[arg(long, default_value = "30ms", value_parser = duration)]
    latency: Duration,
    /// Share of requests answered with 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Requests per second beyond which it answers 429.
    #[arg(long)]
    rate_limit: Option<u32>,
    /// A window after the start, like `20s..40s`, answered with 503.
    #[arg(long, value_parser = window)]
    outage: Option<(Duration, Duration)>,
    /// Companies whose name contains this text are refused with 422.
    #[arg(long)]
    reject: Option<String>,
}

fn duration(text: &str) -> Result<Duration, String> {
    warren::duration::parse(text)
}

fn window(text: &str) -> Result<(Duration, Duration), String> {
    let (from, to) = text.split_once("..").ok_or("write it like 20s..40s")?;
    Ok((duration(from)?, duration(to)?))
}

struct Api {
    args: Args,
    started: Instant,
    requests: AtomicU64,
    /// Requests of the current second, and the most seen in one second.
    second: Mutex<(u64, u32, u32)>,
    /// Answers given, by idempotency key.
    answered: Mutex<HashMap<String, Value>>,
    /// Gradings made.
    graded: AtomicU64,
    /// Requests answered from a key seen before.
    repeated: AtomicU64,
}

/// `GET /stats`: requests so far and the most in one second.
async fn stats(State(api): State<Arc<Api>>) -> Json<Value> {
    let busiest = api.second.lock().unwrap().2;
    Json(json!({
        "requests": api.requests.load(Ordering::Relaxed),
        "max_per_second": busiest,
        "graded": api.graded.load(Ordering::Relaxed),
        "repeated": api.repeated.load(Ordering::Relaxed),
    }))
}

async fn grade(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = api.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(api.args.latency).await;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(before) = key
        .as_ref()
        .and_then(|key| api.answered.lock().unwrap().get(key).cloned())
    {
        api.repeated.fetch_add(1, Ordering::Relaxed);
        return answer(StatusCode::OK, None, before);
    }
    let since = api.started.elapsed();
    if let Some((from, to)) = api.args.outage
        && since >= from
        && since < to
    {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            json!({"error": "down for maintenance"}),
        );
    }
    let this_second = {
        let mut second = api.second.lock().unwrap();
        let now = since.as_secs();
        if second.0 != now {
            second.0 = now;
            second.1 = 0;
        }
        second.1 += 1;
        second.2 = second.2.max(second.1);
        second.1
    };
    if api.args.rate_limit.is_some_and(|limit| this_second > limit) {
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            Some("1"),
            json!({"error": "slow down"}),
        );
    }
    if spread(n) < api.args.error_rate {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            json!({"error": "internal error"}),
        );
    }
    let company = body
        .get("company")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(text) = &api.args.reject
        && company.contains(text.as_str())
    {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            json!({"error": format!("cannot grade {company}")}),
        );
    }
    let Some(website) = body.get("website").and_then(Value::as_str) else {
        return answer(
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "website missing"}),
        );
    };
    let grade = website
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 101;
    let graded = json!({"website": website, "grade": grade});
    if let Some(key) = key {
        let mut answered = api.answered.lock().unwrap();
        if let Some(before) = answered.get(&key) {
            // Another request with this key was graded meanwhile.
            api.repeated.fetch_add(1, Ordering::Relaxed);
            return answer(StatusCode::OK, None, before.clone());
        }
        answered.insert(key, graded.clone());
    }
    api.graded.fetch_add(1, Ordering::Relaxed);
    answer(StatusCode::OK, None, graded)
}

fn answer(status: StatusCode, retry_after: Option<&'static str>, body: Value) -> Response {
    match retry_after {
        Some(seconds) => (status, [("retry-after", seconds)], Json(body)).into_response(),
        None => (status, Json(body)).into_response(),
    }
}

/// A number in [0, 1) spread evenly over request numbers.
fn spread(n: u64) -> f64 {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as f64 / u64::MAX as f64
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let address = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    let api = Arc::new(Api {
        args,
        started: Instant::now(),
        requests: AtomicU64::new(0),
        second: Mutex::new((0, 0, 0)),
        answered: Mutex::default(),
        graded: AtomicU64::new(0),
        repeated: AtomicU64::new(0),
    });
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new()
        .route("/grade", post(grade))
        .route("/stats", get(stats))
        .with_state(api);
    axum::serve(listener, app).await
}
