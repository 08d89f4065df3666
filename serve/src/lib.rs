//! `warren serve` (and `warren supervise --http`): the HTTP front door of
//! DESIGN.md, *HTTP*, on axum. One producer connection carries every
//! request's messages ([`ingest`]); tickets come from a job store kept
//! folded by a follower ([`tickets`]); `/metrics` shows the last look of a
//! refresher ([`metrics`], [`refresh`]). Every route but `/healthz` needs
//! a bearer token of a scope that allows it when any is set ([`auth`],
//! [`access`]), a `Host` this server answers to, and, for a change, the
//! `Origin` of its own pages ([`origin`]). With `serve.tls` it speaks
//! HTTPS only ([`tls`]).

pub mod access;
pub mod auth;
pub mod budget;
pub mod control;
pub mod dashboard;
mod history;
pub mod ingest;
pub mod metrics;
pub mod origin;
mod refresh;
pub mod several;
pub mod tickets;
pub mod tls;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::info;
use warren::{Pipeline, Producer, jobs::JobState};

use ingest::refuse;
use tickets::Tickets;

/// Largest request body (and [`budget::MAX_HELD`] for all at once).
pub const MAX_BODY: usize = 5 * 1024 * 1024;

/// Largest body of the sign-in form (which needs no token).
const MAX_LOGIN: usize = 16 * 1024;

/// Requests handled at once at most; more wait.
const MAX_REQUESTS: usize = 1024;

/// Longest time one request may take (a `?wait=` of up to a minute fits).
const REQUEST_TIME: Duration = Duration::from_secs(70);

/// Time a connection gets to send a request's headers.
pub const HEADER_TIME: Duration = Duration::from_secs(10);

/// Bytes of request headers at most (more: 431).
const MAX_HEADERS: usize = 64 * 1024;

/// Connections open at once at most.
const MAX_CONNECTIONS: usize = 4096;

/// What every handler shares: one pipeline's front door.
#[derive(Clone)]
pub struct App {
    pipeline: Arc<Pipeline>,
    producer: Producer,
    tickets: Option<Tickets>,
    figures: metrics::Shared,
    registry: Arc<prometheus_client::registry::Registry>,
    ready: Arc<AtomicBool>,
    access: access::Access,
    hosts: Arc<origin::Hosts>,
    /// Served over HTTPS (the session cookie is then `Secure`).
    https: bool,
    /// Where its routes are: `/`, or `/p/{pipeline}/` when one server
    /// serves several pipelines ([`several`]).
    base: Arc<str>,
    /// What each stage did per minute, for the dashboard's charts.
    history: Arc<Mutex<history::History>>,
}

/// Who may ask, and over what.
#[derive(Clone, Debug, Default)]
pub struct Door {
    /// The tokens by scope (none: open).
    pub access: access::Access,
    /// HTTPS, when set (from [`tls::load`]).
    pub tls: Option<tls::Acceptor>,
}

impl App {
    /// Connects, starts the job tickets and the refresher of `pipeline`,
    /// served at `base`.
    async fn start(
        pipeline: Pipeline,
        door: &Door,
        hosts: Arc<origin::Hosts>,
        base: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<App> {
        let producer = Producer::connect(&pipeline).await?;
        let tickets = if pipeline.jobs.track {
            Some(Tickets::start(&pipeline, stop.clone()).await?)
        } else {
            None
        };
        let schedules: Vec<&str> = pipeline.schedules.iter().map(|s| s.name.as_str()).collect();
        let figures: metrics::Shared = Arc::new(Mutex::new(
            metrics::Snapshot::empty(&pipeline.name, &pipeline.stage_names())
                .with_schedules(&schedules),
        ));
        let ready = Arc::new(AtomicBool::new(true));
        let history = Arc::new(Mutex::new(history::History::default()));
        tokio::spawn(refresh::run(
            pipeline.clone(),
            figures.clone(),
            history.clone(),
            tickets.clone(),
            ready.clone(),
            stop.clone(),
        ));
        Ok(App {
            registry: Arc::new(metrics::registry(vec![figures.clone()])),
            pipeline: Arc::new(pipeline),
            producer,
            tickets,
            figures,
            ready,
            access: door.access.clone(),
            hosts,
            https: door.tls.is_some(),
            base: base.into(),
            history,
        })
    }

    /// Whether a bearer of `scope` is offered the dashboard's actions
    /// (`serve.allow_actions`, and admin).
    fn actions(&self, scope: access::Scope) -> bool {
        self.pipeline.serve.allow_actions && scope == access::Scope::Admin
    }

    /// The ready messages of `stage` at the last look, if known.
    fn backlog(&self, stage: &str) -> Option<u64> {
        self.figures
            .lock()
            .expect("metrics")
            .stages
            .get(stage)
            .map(|f| f.ready)
    }
}

/// Serves `pipeline` on `listener` until `stop`; then finishes the requests
/// in flight (their confirms included) and returns.
pub async fn serve(
    pipeline: Pipeline,
    listener: tokio::net::TcpListener,
    door: Door,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    serve_all(vec![pipeline], listener, door, stop).await
}

/// Serves `pipelines` on `listener` until `stop`, as [`serve`] does one.
/// One pipeline is served at `/`; several each at `/p/{pipeline}/`, with
/// a list of them at `/`, one `/metrics` for all, and the routes of
/// `/v1/` at the root still answered where they name one pipeline
/// ([`several`]). The door (tokens, TLS, host names) is the first
/// pipeline's.
pub async fn serve_all(
    pipelines: Vec<Pipeline>,
    listener: tokio::net::TcpListener,
    door: Door,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let first = pipelines.first().context("no pipeline to serve")?;
    let address = listener.local_addr()?;
    let mut hosts = origin::Hosts::new(address, &first.serve.hosts);
    if door.tls.is_some() {
        hosts = hosts.over_https();
    }
    let hosts = Arc::new(hosts);
    let one = pipelines.len() == 1;
    let mut apps = Vec::new();
    for pipeline in pipelines {
        let base = if one {
            "/".to_string()
        } else {
            several::base(&pipeline.name)
        };
        apps.push(App::start(pipeline, &door, hosts.clone(), &base, &stop).await?);
    }
    let router = if one {
        router(apps[0].clone())
    } else {
        several::router(&apps)
    };
    let scheme = if door.tls.is_some() { "https" } else { "http" };
    info!("warren serve: listening on {scheme}://{address}");
    accept(listener, router, door.tls, stop).await;
    for app in apps {
        app.producer.close().await;
    }
    Ok(())
}

/// Serves connections until `stop`, then lets the requests in flight finish
/// (idle connections close at once). Each connection gets
/// [`HEADER_TIME`] to finish its TLS handshake (with `tls`) and again to
/// send its request headers (a slow client cannot hold a connection open
/// by trickling them), at most [`MAX_HEADERS`] bytes of them, and at most
/// [`MAX_CONNECTIONS`] are open at once (more are closed as they come).
async fn accept(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tls::Acceptor>,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!("{MAX_CONNECTIONS} connections open: closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, router, watcher).await,
                Some(tls) => match tokio::time::timeout(HEADER_TIME, tls.0.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, router, watcher).await,
                    // Plain HTTP to the HTTPS port, among others.
                    Ok(Err(error)) => tracing::debug!(%error, "a TLS handshake failed"),
                    Err(_) => tracing::debug!("a TLS handshake took too long"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it closes.
async fn connection<I>(io: I, router: Router, watcher: hyper_util::server::graceful::Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIME)
        .max_header_size(MAX_HEADERS);
    let connection = http.serve_connection(
        hyper_util::rt::TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(router),
    );
    let _ = watcher.watch(connection).await;
}

/// The routes and their layers.
pub fn router(app: App) -> Router {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route("/v1/stages/{stage}/messages", post(ingest::post))
        .route("/v1/jobs/{id}", get(job).delete(cancel))
        .route("/v1/stages/{stage}/pause", post(control::pause))
        .route("/v1/stages/{stage}/resume", post(control::resume))
        .route("/v1/jobs", get(jobs))
        .route("/", get(dashboard::overview))
        .route("/dashboard/overview.json", get(dashboard::overview_json))
        .route(
            "/stages/{stage}/dead",
            get(dashboard::dead).post(dashboard::act),
        )
        .route(
            "/stages/{stage}/retrying",
            get(dashboard::retrying).post(dashboard::retry_now),
        )
        .route("/stages/{stage}/scheduled", get(dashboard::scheduled))
        .route("/stages/{stage}/waiting", get(dashboard::waiting))
        .route("/jobs", get(dashboard::jobs))
        .route("/processes", get(dashboard::processes))
        .route("/busy", get(dashboard::busy))
        .route("/history", get(dashboard::history))
        .route("/jobs/cancel", post(dashboard::cancel_job))
        .route("/stages/{stage}/control", post(dashboard::control_stage))
        .layer(middleware::from_fn_with_state(
            budget::budget(),
            budget::hold,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/login",
            get(|| async { dashboard::login_page(None) })
                .post(dashboard::login)
                .layer(DefaultBodyLimit::max(MAX_LOGIN)),
        )
        .merge(guarded)
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such route", json!({})) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Every route but /healthz and /login, and unknown ones (a route
        // added later is covered by itself).
        .layer(middleware::from_fn_with_state(app.clone(), auth::check))
        .layer(middleware::from_fn_with_state(app.clone(), origin::guard))
        .layer(middleware::from_fn_with_state(app.clone(), at_base))
        .layer(middleware::from_fn_with_state(
            app.figures.clone(),
            access_log,
        ))
        .layer(limits())
        .with_state(app)
}

/// What every request gets at most: [`REQUEST_TIME`] (then 408), and
/// [`MAX_REQUESTS`] handled at once (more wait).
fn limits() -> impl tower::Layer<
    axum::routing::Route,
    Service: tower::Service<
        Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
                 + Send
                 + Sync
                 + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(|_| async {
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the request took too long",
                json!({}),
            )
        }))
        .timeout(REQUEST_TIME)
        .concurrency_limit(MAX_REQUESTS)
}

/// Answers the request with the pipeline's pages at its base (`/`, or
/// `/p/{pipeline}/` among several).
async fn at_base(State(app): State<App>, request: Request, next: Next) -> Response {
    dashboard::at_base(app.base.clone(), next.run(request)).await
}

/// One line per request at info: method, route template, status, time;
/// counted in `warren_http_requests_total`. Bodies and query strings are
/// never logged.
async fn access_log(
    State(figures): State<metrics::Shared>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(no route)".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    info!(
        target: "warren::access",
        %method,
        route,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    figures
        .lock()
        .expect("metrics")
        .answered(&route, response.status().as_u16());
    response
}

/// 200 when the broker answers and job tickets are current; 503 saying
/// why not.
async fn readyz(State(app): State<App>) -> Response {
    if !app.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is unreachable\n",
        )
            .into_response();
    }
    if let Some(behind) = app.tickets.as_ref().and_then(Tickets::behind) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{behind}\n")).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics_page(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::encode(&app.registry),
    )
        .into_response()
}

/// `?wait=30s`.
#[derive(Debug, Deserialize)]
struct Wait {
    wait: Option<String>,
}

async fn job(State(app): State<App>, Path(id): Path<String>, Query(wait): Query<Wait>) -> Response {
    let Some(tickets) = &app.tickets else {
        return untracked(&app);
    };
    let view = match wait.wait.as_deref() {
        None => tickets.lookup(&id).await,
        Some(text) => match warren::duration::parse(text) {
            Ok(wait) => tickets.wait(&id, wait).await,
            Err(error) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("?wait={text}: {error}"),
                    json!({}),
                );
            }
        },
    };
    match view {
        Ok(view) if view.state == JobState::Unknown => match tickets.behind() {
            // Not read yet, maybe: not a 404.
            Some(behind) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{behind}; job {id} may exist, ask again"),
                json!({}),
            ),
            None => (StatusCode::NOT_FOUND, Json(view)).into_response(),
        },
        Ok(view) => match tickets.gap(&id) {
            Ok(Some(gap)) => {
                let mut answer = serde_json::to_value(&view).expect("a view is JSON");
                answer["gap"] = gap.into();
                Json(answer).into_response()
            }
            Ok(None) => Json(view).into_response(),
            Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, error, json!({})),
        },
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, error, json!({})),
    }
}

/// `DELETE /v1/jobs/{id}`: cancels the job (`Producer::cancel`); 202 once
/// the broker confirmed the cancel, whatever the job's state (a job that
/// settled before stays as it was; one not seen yet is cancelled when it
/// comes).
async fn cancel(State(app): State<App>, Path(id): Path<String>) -> Response {
    if app.tickets.is_none() {
        return untracked(&app);
    }
    match app.producer.cancel(&id).await {
        Ok(()) => {
            info!(job = %id, "job cancelled");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "job": id, "cancelled": true })),
            )
                .into_response()
        }
        Err(warren::Error::Setup(why)) => refuse(StatusCode::BAD_REQUEST, why, json!({})),
        Err(error) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cancel was not written: {error}"),
            json!({}),
        ),
    }
}

/// `?state=failed&limit=50`.
#[derive(Debug, Deserialize)]
struct Listing {
    state: Option<String>,
    limit: Option<usize>,
}

async fn jobs(State(app): State<App>, Query(listing): Query<Listing>) -> Response {
    let Some(tickets) = &app.tickets else {
        return untracked(&app);
    };
    if listing.state.as_deref() != Some("failed") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "list jobs with ?state=failed (the most recent failures first)",
            json!({}),
        );
    }
    match tickets.failed(listing.limit.unwrap_or(50).min(1000)) {
        Ok(views) => Json(json!({ "jobs": views })).into_response(),
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, error, json!({})),
    }
}

fn untracked(app: &App) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        format!(
            "pipeline `{}` does not track jobs (jobs.track is off)",
            app.pipeline.name
        ),
        json!({}),
    )
}
