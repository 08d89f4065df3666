//! The dashboard, `GET /` (DESIGN.md, *HTTP*): the stages live, the dead
//! letters grouped by cause with replay and purge, a peek at the waiting
//! messages, the retrying messages with "retry now", the scheduled ones,
//! what workers handle now, the processes, the history, and jobs by id.
//! Every page but the history reads the broker, the refresher's last look,
//! the supervisors or the job store, so a restart loses nothing else; the
//! history (`history.rs`) is kept in the server's memory.
//! Replay and purge need `serve.allow_actions` (else 403) and an admin
//! token when tokens are set (a read token sees the pages without their
//! buttons; the routes answer it 403), and are confirmed on a page of their
//! own that says how many messages they touch; so does cancelling a job
//! (`job.rs`). Pausing and resuming a stage (`control.rs`) and sending
//! retrying messages back now (`retrying.rs`) need the same.

mod busy;
mod control;
pub mod groups;
mod history;
mod job;
mod page;
mod processes;
mod retrying;
mod scheduled;
mod schedules;
mod waiting;

pub use control::act as control_stage;
pub use job::cancel as cancel_job;
pub use retrying::{act as retry_now, list as retrying};
pub use scheduled::list as scheduled;
pub use waiting::list as waiting;

use axum::{
    Extension, Form, Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use tracing::info;
use warren::{dead_letters, dead_letters::DeadLetter};

use super::{App, access::Scope};
pub use page::{at_base, list_page, page};
use warren_ops::status::StageState;

/// Dead letters read per page at most, each with the start of its body
/// (`dead_letters::BODY_LISTED` bytes: the search looks at that much).
pub const MAX_LISTED: usize = 10_000;

/// Messages shown of a group.
const SHOWN: usize = 100;

/// `GET /`.
pub async fn overview(State(app): State<App>, Extension(who): Extension<Scope>) -> Markup {
    let snapshot = app.figures.lock().expect("metrics").clone();
    let actions = app.actions(who);
    page(
        "Overview",
        html! {
            h1 { "Pipeline " (app.pipeline.name) }
            p.bad #blocked { (if snapshot.broker_blocked { "the broker blocks publishing" } else { "" }) }
            div.wrap {
                table #overview {
                    tr {
                        th { "stage" } th { "kind" } th { "ready" } th { "in flight" }
                        th { "retrying" } th { "isolated" } th { "dead letters" } th { "workers (all boxes)" }
                        th { "workers (this box)" } th { "rate" } th { "" } th { "breaker open" } th { "failing" } th { "paused" }
                        @if actions { th { "" } }
                    }
                    @for stage in &app.pipeline.stages {
                        @let f = snapshot.stages.get(&stage.name).cloned().unwrap_or_default();
                        tr data-stage=(stage.name) {
                            td {
                                (stage.name) " " a.more href=(format!("stages/{}/waiting", stage.name)) { "waiting" }
                                " " a.more href=(format!("stages/{}/scheduled", stage.name)) { "scheduled" }
                            }
                            td { (stage.kind.label()) }
                            td.n data-field="ready" { (f.ready) }
                            td.n data-field="in_flight" { (f.in_flight) }
                            td.n {
                                a href=(format!("stages/{}/retrying", stage.name)) data-field="retrying" { (f.retrying) }
                            }
                            td.n data-field="isolated" { (f.isolated) }
                            td.n {
                                a href=(format!("stages/{}/dead", stage.name)) data-field="dead_letters" { (f.dead) }
                            }
                            td.n data-field="workers" { (f.consumers) }
                            td.n data-field="local_workers" { (f.workers) }
                            td.n data-rate { "-" }
                            td { svg.spark viewBox="0 0 120 24" { polyline fill="none" stroke="#0969da" points="" {} } }
                            td data-field="breaker_open" { (if f.counts.breaker_open { "yes" } else { "-" }) }
                            td data-field="failing" { (if f.state == Some(StageState::Failing) { "yes" } else { "-" }) }
                            td data-field="paused" { (if f.paused { "yes" } else { "-" }) }
                            @if actions {
                                td { (control::buttons(&stage.name, f.paused)) }
                            }
                        }
                    }
                }
            }
            p { "Ready, retrying, isolated (their worker stopped while holding them: handled one at a time), dead letters and workers (all boxes) come from the broker; the rest from this box's supervisors. Refreshed every 2 s." }
            (schedules::section(&app))
        },
    )
}

/// `GET /dashboard/overview.json`: what the overview refreshes.
pub async fn overview_json(State(app): State<App>) -> Json<serde_json::Value> {
    let snapshot = app.figures.lock().expect("metrics").clone();
    let stages: Vec<serde_json::Value> = app
        .pipeline
        .stages
        .iter()
        .map(|stage| {
            let f = snapshot
                .stages
                .get(&stage.name)
                .cloned()
                .unwrap_or_default();
            json!({
                "name": stage.name, "ready": f.ready, "in_flight": f.in_flight,
                "retrying": f.retrying, "isolated": f.isolated, "dead_letters": f.dead,
                "workers": f.consumers, "local_workers": f.workers, "done": f.counts.done,
                "breaker_open": f.counts.breaker_open,
                "failing": f.state == Some(StageState::Failing),
                "paused": f.paused,
            })
        })
        .collect();
    Json(json!({ "stages": stages, "broker_blocked": snapshot.broker_blocked }))
}

/// `?done=MESSAGE`.
#[derive(Debug, Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /processes`.
pub async fn processes(
    State(app): State<App>,
    Extension(who): Extension<Scope>,
    Query(done): Query<Done>,
) -> Markup {
    processes::page_of(&app, app.actions(who), done.done.as_deref()).await
}

/// `GET /history`.
pub async fn history(State(app): State<App>) -> Markup {
    history::page_of(&app)
}

/// `GET /busy`.
pub async fn busy(State(app): State<App>) -> Markup {
    busy::page_of(&app).await
}

/// `?group=CAUSE&q=TEXT&done=MESSAGE`, or `?id=ID` for one message whole.
#[derive(Debug, Deserialize)]
pub struct DeadQuery {
    group: Option<String>,
    q: Option<String>,
    done: Option<String>,
    id: Option<String>,
}

fn found_by(letter: &DeadLetter, q: Option<&str>) -> bool {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return true;
    };
    letter.id.contains(q)
        || letter.reason.contains(q)
        || String::from_utf8_lossy(&letter.body).contains(q)
}

/// `GET /stages/{stage}/dead`.
pub async fn dead(
    State(app): State<App>,
    Extension(who): Extension<Scope>,
    Path(stage): Path<String>,
    Query(query): Query<DeadQuery>,
) -> Response {
    if app.pipeline.stage(&stage).is_none() {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", html! { p { "No stage " (stage) "." } }),
        )
            .into_response();
    }
    if let Some(id) = &query.id {
        return dead_letter(&app, &stage, id, app.actions(who)).await;
    }
    let letters = match dead_letters::list(&app.pipeline, &stage, MAX_LISTED).await {
        Ok(letters) => letters,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                page("Dead letters", html! { p.bad { (error.to_string()) } }),
            )
                .into_response();
        }
    };
    let q = query.q.as_deref();
    let found: Vec<DeadLetter> = letters.into_iter().filter(|l| found_by(l, q)).collect();
    let groups = groups::group(&found);
    let actions = app.actions(who);
    let base = format!("stages/{stage}/dead");
    let chosen = query.group.as_deref();
    page(
        "Dead letters",
        html! {
            h1 { "Dead letters of " (stage) }
            @if let Some(done) = &query.done { p.note { (done) } }
            form method="get" action=(base) {
                input type="text" name="q" placeholder="id or text" value=(q.unwrap_or(""));
                " " button type="submit" { "Search" }
            }
            p { (found.len()) " messages" (if found.len() >= MAX_LISTED { " (the first 10,000)" } else { "" }) ", " (groups.len()) " causes." }
            @if actions && !found.is_empty() && q.is_none_or(str::is_empty) {
                (action_form(&stage, "replay", "all", None, "Replay all"))
                " " (action_form(&stage, "purge", "all", None, "Purge all"))
            }
            div.wrap {
                table #groups {
                    tr { th { "cause" } th { "messages" } th { "newest" } @if actions { th { "" } } }
                    @for group in &groups {
                        tr data-cause=(group.cause) {
                            td { a href=(format!("{base}?group={}", urlencode(&group.cause))) { (group.cause) } }
                            td.n.count { (group.letters.len()) }
                            td { (found[group.letters[0]].id) }
                            @if actions {
                                td {
                                    (action_form(&stage, "replay", "group", Some(&group.cause), "Replay group"))
                                    " " (action_form(&stage, "purge", "group", Some(&group.cause), "Purge group"))
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(cause) = chosen {
                @if let Some(group) = groups.iter().find(|g| g.cause == cause) {
                    h2 { (cause) }
                    @for &i in group.letters.iter().take(SHOWN) {
                        @let letter = &found[i];
                        div.letter data-id=(letter.id) {
                            h3 { (letter.id) " (attempt " (letter.attempts) ")" }
                            p { (letter.reason) }
                            @if letter.is_cut() {
                                pre.payload { (String::from_utf8_lossy(&letter.body)) "..." }
                                p.note {
                                    "The first " (letter.body.len()) " of " (letter.body_len) " bytes; "
                                    a href=(format!("{base}?id={}", urlencode(&letter.id))) { "the whole message" } "."
                                }
                            } @else {
                                pre.payload { (pretty(&letter.body)) }
                            }
                            details { summary { "headers" } (headers_table(&letter.headers)) }
                            @if actions {
                                (action_form(&stage, "replay", "one", Some(&letter.id), "Replay"))
                                " " (action_form(&stage, "purge", "one", Some(&letter.id), "Purge"))
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

/// `GET /stages/{stage}/dead?id=ID`: one dead letter, whole (a listing
/// holds only the start of each body).
async fn dead_letter(app: &App, stage: &str, id: &str, actions: bool) -> Response {
    let letter = match dead_letters::find(&app.pipeline, stage, id).await {
        Ok(Some(letter)) => letter,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    html! { p { "No dead letter " (id) " in " (stage) "." } },
                ),
            )
                .into_response();
        }
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                page("Dead letter", html! { p.bad { (error.to_string()) } }),
            )
                .into_response();
        }
    };
    page(
        "Dead letter",
        html! {
            h1 { "Dead letter " (letter.id) " of " (stage) }
            p { a href=(format!("stages/{stage}/dead")) { "All dead letters of " (stage) } }
            div.letter data-id=(letter.id) {
                h3 { (letter.id) " (attempt " (letter.attempts) ")" }
                p { (letter.reason) }
                p { (letter.body_len) " bytes" }
                pre.payload { (pretty(&letter.body)) }
                (headers_table(&letter.headers))
                @if actions {
                    (action_form(stage, "replay", "one", Some(&letter.id), "Replay"))
                    " " (action_form(stage, "purge", "one", Some(&letter.id), "Purge"))
                }
            }
        },
    )
    .into_response()
}

/// A listed message's body (its start, marked as cut, or pretty JSON) and
/// its headers, folded: as the retrying, scheduled and waiting pages show
/// each message.
fn body_and_headers(body: &[u8], cut: bool, headers: &[(String, String)]) -> Markup {
    html! {
        pre.payload {
            @if cut { (String::from_utf8_lossy(body)) "..." }
            @else { (pretty(body)) }
        }
        details { summary { "headers" } (headers_table(headers)) }
    }
}

/// A message's headers, one row each.
fn headers_table(headers: &[(String, String)]) -> Markup {
    html! {
        table { @for (name, value) in headers { tr { td { (name) } td { (shown_header(value)) } } } }
    }
}

fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

pub(super) fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn action_form(
    stage: &str,
    action: &str,
    scope: &str,
    target: Option<&str>,
    label: &str,
) -> Markup {
    html! {
        form.inline method="post" action=(format!("stages/{stage}/dead")) {
            input type="hidden" name="action" value=(action);
            input type="hidden" name="scope" value=(scope);
            @if let Some(target) = target { input type="hidden" name="target" value=(target); }
            button type="submit" class=(format!("{action}-{scope}")) { (label) }
        }
    }
}

/// A replay or purge, as posted.
#[derive(Debug, Deserialize)]
pub struct Action {
    action: String,
    scope: String,
    target: Option<String>,
    confirmed: Option<String>,
}

/// `POST /stages/{stage}/dead`: without `confirmed`, a page that says how
/// many messages the action touches; with it, the action.
pub async fn act(
    State(app): State<App>,
    Path(stage): Path<String>,
    Form(action): Form<Action>,
) -> Response {
    if !app.pipeline.serve.allow_actions {
        return page::read_only("replaying or purging dead letters");
    }
    if app.pipeline.stage(&stage).is_none() || !matches!(action.action.as_str(), "replay" | "purge")
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let target = action.target.clone().unwrap_or_default();
    let chosen = |letter: &DeadLetter| match action.scope.as_str() {
        "one" => letter.id == target,
        "group" => groups::mask(&letter.reason) == target,
        _ => true,
    };
    if action.confirmed.is_none() {
        let count = match dead_letters::list(&app.pipeline, &stage, MAX_LISTED).await {
            Ok(letters) => letters.iter().filter(|l| chosen(l)).count(),
            Err(error) => {
                return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response();
            }
        };
        return page(
            "Confirm",
            html! {
                h1 { "Confirm" }
                p #confirm-count { (action.action) " " (count) " message(s) of " (stage) (if target.is_empty() { String::new() } else { format!(" ({target})") }) "?" }
                form method="post" action=(format!("stages/{stage}/dead")) {
                    input type="hidden" name="action" value=(action.action);
                    input type="hidden" name="scope" value=(action.scope);
                    input type="hidden" name="target" value=(target);
                    input type="hidden" name="confirmed" value="yes";
                    button type="submit" #confirm { "Yes, " (action.action) " " (count) }
                    " " a href=(format!("stages/{stage}/dead")) { "Cancel" }
                }
            },
        )
        .into_response();
    }
    // The same code as `warren dlq replay|purge`.
    let done = match action.action.as_str() {
        "replay" => dead_letters::replay_matching(&app.pipeline, &stage, usize::MAX, chosen).await,
        _ => dead_letters::purge_matching(&app.pipeline, &stage, chosen).await,
    };
    match done {
        Ok(n) => {
            info!(target: "warren::access", who = "dashboard (token)", stage, action = %action.action, scope = %action.scope, messages = n, "dead letters {}ed", action.action);
            let said = format!(
                "{} {n} message(s)",
                if action.action == "replay" {
                    "Replayed"
                } else {
                    "Purged"
                }
            );
            page::redirect(&format!("stages/{stage}/dead?done={}", urlencode(&said)))
                .into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// `?id=JOB` (and `done=` what an action did).
#[derive(Debug, Deserialize)]
pub struct JobQuery {
    id: Option<String>,
    done: Option<String>,
}

/// `GET /jobs`.
pub async fn jobs(
    State(app): State<App>,
    Extension(who): Extension<Scope>,
    Query(query): Query<JobQuery>,
) -> Markup {
    let Some(tickets) = &app.tickets else {
        return page(
            "Jobs",
            html! { p { "Pipeline " (app.pipeline.name) " does not track jobs (jobs.track)." } },
        );
    };
    let view = match query.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => Some(tickets.lookup(id).await),
        None => None,
    };
    let failed = tickets.failed(20).unwrap_or_default();
    page(
        "Jobs",
        html! {
            h1 { "Jobs" }
            form method="get" action="jobs" {
                input type="text" name="id" placeholder="job id" value=(query.id.clone().unwrap_or_default());
                " " button type="submit" { "Look up" }
            }
            @match view {
                Some(Ok(view)) => (job::job(&view, app.actions(who), query.done.as_deref())),
                Some(Err(error)) => p.bad { (error) },
                None => {},
            }
            h2 { "Recent failed jobs" }
            @if failed.is_empty() { p { "None." } }
            ul { @for f in &failed { li { a href=(format!("jobs?id={}", urlencode(&f.id))) { (f.id) } " (" (f.dead_letters.len()) " dead letters)" } } }
        },
    )
}

/// A length of time in two units at most: `3d 4h`, `2h 5m`, `4m 10s`,
/// `12s`.
pub(super) fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

pub(super) fn ms(at: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at))
}

/// `GET /login`, and the answer to a token that does not sign in (`why`).
pub fn login_page(why: Option<&str>) -> Markup {
    page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(why) = why { p.bad { (why) } }
            form method="post" action="/login" {
                input type="password" name="token" placeholder="a read or admin token" autofocus;
                " " button type="submit" { "Sign in" }
            }
        },
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: with a read or admin token, an HttpOnly, SameSite=Strict
/// cookie holding it (Secure over HTTPS), and the overview. An ingest
/// token sees no page: 403.
pub async fn login(State(app): State<App>, Form(login): Form<Login>) -> Response {
    if app.access.is_open() {
        return Redirect::to("/").into_response();
    }
    match app.access.scope_of(&login.token) {
        Some(Scope::Read | Scope::Admin) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{}={}; HttpOnly; SameSite=Strict; Path=/{}",
                    super::auth::COOKIE,
                    urlencode(&login.token),
                    if app.https { "; Secure" } else { "" }
                ),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Some(Scope::Ingest) => (
            StatusCode::FORBIDDEN,
            login_page(Some("That is an ingest token: it may only post messages. Sign in with a read or admin token.")),
        )
            .into_response(),
        None => (StatusCode::UNAUTHORIZED, login_page(Some("That is not a token."))).into_response(),
    }
}

/// A header's value as the page shows it: a URL without its password or
/// query (a producer's `x-warren-callback` may hold both).
fn shown_header(value: &str) -> String {
    if value.contains("://") {
        warren_ops::redact::url(value)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans_read_in_two_units_at_most() {
        assert_eq!(span(12_400), "12s");
        assert_eq!(span(250_000), "4m 10s");
        assert_eq!(span(7_500_000), "2h 5m");
        assert_eq!(span(273_600_000), "3d 4h");
    }
}
