//! A job on the dashboard (`GET /jobs?id=`): its state, counts per stage,
//! progress, result, delay and dead letters, and a button that cancels it
//! (`POST /jobs/cancel`, which needs `serve.allow_actions` like replay and
//! purge, and asks for confirmation first).

use axum::{
    Form,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use tracing::info;
use warren::jobs::{JobState, JobView};

use super::{
    App, ms,
    page::{self, page},
    urlencode,
};

/// The job as the page shows it; `actions`: the cancel button is offered
/// (while the job is not settled); `done`: what an action just did.
pub(super) fn job(view: &JobView, actions: bool, done: Option<&str>) -> Markup {
    let state = serde_json::to_value(view.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let open = view.state != JobState::Unknown && !view.state.is_settled();
    html! {
        @if let Some(done) = done { p.note { (done) } }
        h2 { "Job " (view.id) ": " span #job-state class=(if matches!(state.as_str(), "failed" | "cancelled") { "bad" } else { "ok" }) { (state) } }
        p { "created " (view.created_ms.map_or("-".into(), ms)) ", started " (view.started_ms.map_or("-".into(), ms)) ", finished " (view.finished_ms.map_or("-".into(), ms)) }
        @if let Some(until) = view.not_before_ms.filter(|_| view.state == JobState::Scheduled) {
            p #job-not-before { "scheduled: waits on the broker until " (ms(until)) }
        }
        @if open && actions {
            form.inline method="post" action="jobs/cancel" {
                input type="hidden" name="id" value=(view.id);
                button type="submit" #cancel-job { "Cancel job" }
            }
        }
        table {
            tr { th { "stage" } th { "waiting" } th { "scheduled" } th { "retrying" } th { "held" } th { "done" } th { "dead" } th { "cancelled" } }
            @for (stage, c) in &view.stages {
                tr { td { (stage) } td.n { (c.waiting) } td.n { (c.scheduled) } td.n { (c.retrying) } td.n { (c.held) } td.n { (c.done) } td.n { (c.dead) } td.n { (c.cancelled) } }
            }
        }
        @if !view.progress.is_empty() {
            h3 { "Progress" }
            table #job-progress {
                tr { th { "stage" } th { "done" } th { "note" } th { "message" } }
                @for (stage, p) in &view.progress {
                    tr data-stage=(stage) {
                        td { (stage) }
                        td.n.fraction { (format!("{:.0}%", p.fraction.0 * 100.0)) }
                        td.progress-note { (p.note) }
                        td { (p.id) }
                    }
                }
            }
        }
        @if let Some(result) = &view.result {
            h3 { "Result" }
            @if view.result_truncated { p.bad #result-truncated { "Truncated: more bodies reached the result stage than jobs.result_max holds." } }
            pre #job-result { (serde_json::to_string_pretty(result).unwrap_or_default()) }
        }
        @if !view.dead_letters.is_empty() {
            h3 { "Dead letters" }
            ul { @for d in &view.dead_letters { li { (d.id) " at " (d.stage) ": " (d.reason) } } }
        }
    }
}

/// The cancel form.
#[derive(Debug, Deserialize)]
pub struct Cancel {
    id: String,
    confirmed: Option<String>,
}

/// `POST /jobs/cancel`: without `confirmed`, a page that asks; with it,
/// the cancel (`Producer::cancel`), then the job's page.
pub async fn cancel(State(app): State<App>, Form(cancel): Form<Cancel>) -> Response {
    if !app.pipeline.serve.allow_actions {
        return page::read_only("cancelling a job");
    }
    if cancel.confirmed.is_none() {
        return page(
            "Confirm",
            html! {
                h1 { "Confirm" }
                p #confirm-count { "cancel job " (cancel.id) "? Its queued messages are dropped and its running handlers told to stop." }
                form method="post" action="jobs/cancel" {
                    input type="hidden" name="id" value=(cancel.id);
                    input type="hidden" name="confirmed" value="yes";
                    button type="submit" #confirm { "Yes, cancel it" }
                    " " a href=(format!("jobs?id={}", urlencode(&cancel.id))) { "Back" }
                }
            },
        )
        .into_response();
    }
    match app.producer.cancel(&cancel.id).await {
        Ok(()) => {
            info!(target: "warren::access", who = "dashboard (token)", job = %cancel.id, "job cancelled");
            page::redirect(&format!(
                "jobs?id={}&done={}",
                urlencode(&cancel.id),
                urlencode("Cancelled")
            ))
            .into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}
