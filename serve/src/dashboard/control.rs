//! The overview's pause and resume buttons (`POST /stages/{stage}/control`
//! with `action=pause|resume`) and the processes page's restart button
//! (`action=restart`, after a confirmation page): shown and taken only
//! with `serve.allow_actions`; a pause goes through
//! [`crate::control::set`] (logged), then back to the overview; a restart
//! is the request `warren restart` writes, logged, then back to the
//! processes.

use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use tracing::info;

use super::page::{self, page};
use crate::App;

/// The form's fields.
#[derive(Debug, Deserialize)]
pub struct Action {
    action: String,
    /// `yes` from the confirmation page of a restart.
    confirmed: Option<String>,
}

/// The button a stage's row shows: resume when paused, else pause.
pub fn buttons(stage: &str, paused: bool) -> Markup {
    let (action, label) = if paused {
        ("resume", "Resume")
    } else {
        ("pause", "Pause")
    };
    html! {
        form method="post" action=(format!("stages/{stage}/control")) {
            input type="hidden" name="action" value=(action);
            button type="submit" data-action=(action) { (label) }
        }
    }
}

/// `POST /stages/{stage}/control`.
pub async fn act(
    State(app): State<App>,
    Path(stage): Path<String>,
    Form(action): Form<Action>,
) -> Response {
    if !app.pipeline.serve.allow_actions {
        return page::read_only("pausing or restarting a stage");
    }
    let paused = match action.action.as_str() {
        "pause" => true,
        "resume" => false,
        "restart" => {
            return restart(&app, &stage, action.confirmed.as_deref() == Some("yes")).await;
        }
        other => {
            return (
                StatusCode::BAD_REQUEST,
                page(
                    "Bad request",
                    html! { p.bad { "Unknown action " (other) ": pause, resume or restart." } },
                ),
            )
                .into_response();
        }
    };
    let answer = crate::control::set(&app, &stage, paused, "the dashboard").await;
    if answer.status() != StatusCode::OK {
        return answer;
    }
    page::redirect("").into_response()
}

/// A restart of `stage`'s workers: the confirmation page, or, `confirmed`,
/// the request every supervisor acts on (as `warren restart FILE STAGE`).
async fn restart(app: &App, stage: &str, confirmed: bool) -> Response {
    if app.pipeline.stage(stage).is_none() {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", html! { p { "No stage " (stage) "." } }),
        )
            .into_response();
    }
    if !confirmed {
        return super::processes::confirm_restart(stage).into_response();
    }
    match app
        .producer
        .request_restart(Some(stage), "the dashboard")
        .await
    {
        Ok(id) => {
            info!(target: "warren::access", who = "dashboard (token)", %stage, request = %id, "workers restart asked");
            let said = format!(
                "Restart of {stage}'s workers asked ({id}): every supervisor replaces them one at a time."
            );
            page::redirect(&format!("processes?done={}", super::urlencode(&said))).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                "Not restarted",
                html! { p.bad { "The restart was not written: " (error.to_string()) } },
            ),
        )
            .into_response(),
    }
}
