//! The overview's pause and resume buttons (`POST /stages/{stage}/control`
//! with `action=pause|resume`): shown and taken only with
//! `serve.allow_actions`; the change goes through [`crate::control::set`]
//! (logged), then back to the overview.

use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, page};
use crate::App;

/// The form's field.
#[derive(Debug, Deserialize)]
pub struct Action {
    action: String,
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
        return page::read_only("pausing a stage");
    }
    let paused = match action.action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                page(
                    "Bad request",
                    html! { p.bad { "Unknown action " (other) ": pause or resume." } },
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
