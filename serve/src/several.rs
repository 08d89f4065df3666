//! One `warren serve` for several pipelines (`warren serve A.yaml
//! B.yaml`, or a folder): each pipeline's routes and pages are its own
//! server's, under `/p/{pipeline}/` ([`base`]); `/` lists the pipelines
//! with their figures, `/metrics` shows every pipeline's series (each
//! carries its `pipeline` label) and `/readyz` is ready when every
//! pipeline is. The routes of `/v1/` keep answering at the root where
//! they name one pipeline: a stage that only one pipeline has, a job that
//! one pipeline's job store knows. The door (tokens, TLS, host names) is
//! the same for all.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use maud::{Markup, html};
use serde_json::json;
use tower::ServiceExt as _;
use warren::jobs::JobState;

use super::{App, auth, dashboard, ingest::refuse, metrics, origin};

/// Where the routes of pipeline `name` are.
pub fn base(name: &str) -> String {
    format!("/p/{name}/")
}

/// The pipelines served, each with its router.
#[derive(Clone)]
struct Served {
    pipelines: Arc<Vec<(App, Router)>>,
    registry: Arc<prometheus_client::registry::Registry>,
}

/// The routes of several pipelines (see the module's text).
pub fn router(apps: &[App]) -> Router {
    let first = apps[0].clone();
    let served = Served {
        pipelines: Arc::new(
            apps.iter()
                .map(|app| (app.clone(), super::router(app.clone())))
                .collect(),
        ),
        registry: Arc::new(metrics::registry(
            apps.iter().map(|app| app.figures.clone()).collect(),
        )),
    };
    // /healthz and /login (the first pipeline's: the door is shared) need
    // no token; the pipelines' own routes check theirs (nested after the
    // layers, which apply to the routes added before them only).
    let mut root = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_page))
        .route("/readyz", get(readyz))
        .fallback(forward)
        .with_state(served.clone())
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/login",
            get(|| async { dashboard::login_page(None) })
                .post(dashboard::login)
                .layer(DefaultBodyLimit::max(super::MAX_LOGIN)),
        )
        .layer(DefaultBodyLimit::max(super::MAX_BODY))
        .layer(middleware::from_fn_with_state(first.clone(), auth::check))
        .layer(middleware::from_fn_with_state(first.clone(), origin::guard))
        .layer(super::limits());
    for (app, router) in served.pipelines.iter() {
        root = root.nest_service(&format!("/p/{}", app.pipeline.name), router.clone());
    }
    root.with_state(first)
}

/// `GET /`: the pipelines, with their figures at the last look.
async fn index(State(served): State<Served>) -> Markup {
    dashboard::list_page(
        "Pipelines",
        html! {
            h1 { "Pipelines" }
            div.wrap {
                table #pipelines {
                    tr {
                        th { "pipeline" } th { "stages" } th { "ready" } th { "in flight" }
                        th { "retrying" } th { "dead letters" } th { "workers (all boxes)" }
                        th { "failing" } th { "paused" }
                    }
                    @for (app, _) in served.pipelines.iter() {
                        @let snapshot = app.figures.lock().expect("metrics").clone();
                        @let sum = |f: &dyn Fn(&metrics::StageFigures) -> u64| -> u64 { snapshot.stages.values().map(f).sum() };
                        tr data-pipeline=(app.pipeline.name) {
                            td { a href=(base(&app.pipeline.name)) { (app.pipeline.name) } }
                            td.n { (app.pipeline.stages.len()) }
                            td.n { (sum(&|f| f.ready)) }
                            td.n { (sum(&|f| f.in_flight)) }
                            td.n { (sum(&|f| f.retrying)) }
                            td.n data-field="dead_letters" { (sum(&|f| f.dead)) }
                            td.n { (sum(&|f| u64::from(f.consumers))) }
                            td.n { (sum(&|f| u64::from(f.state == Some(warren_ops::status::StageState::Failing)))) }
                            td.n { (sum(&|f| u64::from(f.paused))) }
                        }
                    }
                }
            }
            p { "Each pipeline's dashboard, routes and metrics are under /p/{pipeline}/. Refreshed on reload." }
        },
    )
}

/// `GET /metrics`: every pipeline's series.
async fn metrics_page(State(served): State<Served>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::encode(&served.registry),
    )
        .into_response()
}

/// `GET /readyz`: 200 when every pipeline is ready, else 503 naming those
/// that are not.
async fn readyz(State(served): State<Served>) -> Response {
    let mut not = Vec::new();
    for (app, _) in served.pipelines.iter() {
        if !app.ready.load(Ordering::Relaxed) {
            not.push(format!("{}: the broker is unreachable", app.pipeline.name));
        } else if let Some(behind) = app.tickets.as_ref().and_then(|t| t.behind()) {
            not.push(format!("{}: {behind}", app.pipeline.name));
        }
    }
    if not.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", not.join("\n")),
        )
            .into_response()
    }
}

/// A route at the root that names no pipeline: answered by the pipeline
/// it can only mean, else refused saying which routes to use.
async fn forward(State(served): State<Served>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let names = || names_of(served.pipelines.iter().map(|(app, _)| app));
    if let Some(rest) = path.strip_prefix("/v1/stages/") {
        let stage = rest.split('/').next().unwrap_or_default();
        let owners: Vec<&(App, Router)> = served
            .pipelines
            .iter()
            .filter(|(app, _)| app.pipeline.stage(stage).is_some())
            .collect();
        return match owners.as_slice() {
            [(_, router)] => answer(router, request).await,
            [] => refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "no pipeline served here ({}) has a stage `{stage}`",
                    names()
                ),
                json!({}),
            ),
            several => refuse(
                StatusCode::CONFLICT,
                format!(
                    "pipelines {} each have a stage `{stage}`: name one, /p/{{pipeline}}{path}",
                    names_of(several.iter().map(|(app, _)| app))
                ),
                json!({}),
            ),
        };
    }
    let job = path
        .strip_prefix("/v1/jobs/")
        .filter(|id| !id.is_empty() && !id.contains('/'));
    if let (Some(job), true) = (
        job,
        matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::DELETE
        ),
    ) {
        let job = percent_encoding::percent_decode_str(job)
            .decode_utf8_lossy()
            .into_owned();
        let (mut knowing, mut behind) = (Vec::new(), Vec::new());
        for (app, router) in served.pipelines.iter() {
            let Some(tickets) = &app.tickets else {
                continue;
            };
            if matches!(tickets.lookup(&job).await, Ok(view) if view.state != JobState::Unknown) {
                knowing.push((app, router));
            } else if let Some(why) = tickets.behind() {
                behind.push(format!("{}: {why}", app.pipeline.name));
            }
        }
        return match knowing.as_slice() {
            [(_, router)] => answer(router, request).await,
            [] if !behind.is_empty() => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}; job `{job}` may exist, ask again", behind.join("; ")),
                json!({}),
            ),
            [] => refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "no pipeline served here ({}) knows job `{job}`; ask /p/{{pipeline}}{path}",
                    names()
                ),
                json!({}),
            ),
            several => refuse(
                StatusCode::CONFLICT,
                format!(
                    "pipelines {} each know a job `{job}`: name one, /p/{{pipeline}}{path}",
                    names_of(several.iter().map(|(app, _)| *app))
                ),
                json!({}),
            ),
        };
    }
    refuse(
        StatusCode::NOT_FOUND,
        format!(
            "no such route: this server serves several pipelines ({}), each under /p/{{pipeline}}/",
            names()
        ),
        json!({}),
    )
}

/// The names of `apps`, for a message.
fn names_of<'a>(apps: impl Iterator<Item = &'a App>) -> String {
    apps.map(|app| app.pipeline.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `request`, answered by one pipeline's `router` as if it came to it.
async fn answer(router: &Router, request: Request) -> Response {
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
