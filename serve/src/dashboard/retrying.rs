//! `GET /stages/{stage}/retrying`: the messages of a stage that wait in its
//! retry queues for their next attempt (the first [`LISTED`], shortest
//! wait first), each with its attempt, why the one before failed, its body
//! and headers; they stay where they are. With `serve.allow_actions` and
//! an admin, one or all of them can be sent back to the stage now
//! (`POST`, after a confirmation page that says how many; logged), at the
//! attempt they wait for: the fix for a third-party outage is out, and
//! nobody wants to wait for the backoff.

use axum::{
    Extension, Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use tracing::info;
use warren::{duration, retrying, retrying::Retrying};

use super::{body_and_headers, page, urlencode};
use crate::{App, access::Scope};

/// Retrying messages listed at most.
pub const LISTED: usize = 1000;

/// `?done=MESSAGE`.
#[derive(Debug, Deserialize)]
pub struct Shown {
    done: Option<String>,
}

/// `GET /stages/{stage}/retrying`.
pub async fn list(
    State(app): State<App>,
    Extension(who): Extension<Scope>,
    Path(stage): Path<String>,
    Query(shown): Query<Shown>,
) -> Response {
    if app.pipeline.stage(&stage).is_none() {
        return not_found(&stage);
    }
    let messages = match retrying::list(&app.pipeline, &stage, LISTED).await {
        Ok(messages) => messages,
        Err(error) => return unavailable(&error.to_string()),
    };
    let actions = app.actions(who);
    page(
        "Retrying",
        html! {
            h1 { "Retrying messages of " (stage) }
            @if let Some(done) = &shown.done { p.ok #done { (done) } }
            p #retrying-count {
                (messages.len()) " messages wait for their next attempt"
                (if messages.len() >= LISTED { " (the first 1,000)" } else { "" }) "."
            }
            @if actions && !messages.is_empty() { (form(&stage, "all", None, "Retry all now")) }
            @for message in &messages { (one(&stage, message, actions)) }
        },
    )
    .into_response()
}

fn one(stage: &str, message: &Retrying, actions: bool) -> Markup {
    html! {
        div.letter data-id=(message.id) {
            h3 { (message.id) " (attempt " (message.attempt) ", waits " (duration::format(message.wait)) ")" }
            p { (message.reason) }
            (body_and_headers(&message.body, message.is_cut(), &message.headers))
            @if actions && !message.id.is_empty() { (form(stage, "one", Some(&message.id), "Retry now")) }
        }
    }
}

fn form(stage: &str, scope: &str, target: Option<&str>, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(format!("stages/{stage}/retrying")) {
            input type="hidden" name="scope" value=(scope);
            @if let Some(target) = target { input type="hidden" name="target" value=(target); }
            button type="submit" class=(format!("retry-{scope}")) { (label) }
        }
    }
}

/// A "retry now", as posted: `scope` is `one` (the message `target`) or
/// `all`.
#[derive(Debug, Deserialize)]
pub struct RetryNow {
    scope: String,
    target: Option<String>,
    confirmed: Option<String>,
}

/// `POST /stages/{stage}/retrying`: without `confirmed`, a page that says
/// how many messages it sends; with it, sends them.
pub async fn act(
    State(app): State<App>,
    Path(stage): Path<String>,
    Form(retry): Form<RetryNow>,
) -> Response {
    if !app.pipeline.serve.allow_actions {
        return page::read_only("retrying messages now");
    }
    if app.pipeline.stage(&stage).is_none() || !matches!(retry.scope.as_str(), "one" | "all") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let target = retry.target.clone().unwrap_or_default();
    let one = retry.scope == "one";
    if one && target.is_empty() {
        // A message without an id cannot be named: never "the first one".
        return (
            StatusCode::BAD_REQUEST,
            page(
                "Bad request",
                html! { p.bad { "Retry now of one message needs its id (the form's target); a message without an id can only be sent back with Retry all now." } },
            ),
        )
            .into_response();
    }
    let at_most = if one { 1 } else { usize::MAX };
    let chosen = |message: &Retrying| !one || message.id == target;
    if retry.confirmed.is_none() {
        let count = match retrying::list(&app.pipeline, &stage, usize::MAX).await {
            Ok(messages) => messages.iter().filter(|m| chosen(m)).count().min(at_most),
            Err(error) => return unavailable(&error.to_string()),
        };
        return page(
            "Confirm",
            html! {
                h1 { "Confirm" }
                p #confirm-count { "Retry " (count) " message(s) of " (stage) " now" (if target.is_empty() { String::new() } else { format!(" ({target})") }) "?" }
                form method="post" action=(format!("stages/{stage}/retrying")) {
                    input type="hidden" name="scope" value=(retry.scope);
                    input type="hidden" name="target" value=(target);
                    input type="hidden" name="confirmed" value="yes";
                    button type="submit" #confirm { "Yes, retry " (count) " now" }
                    " " a href=(format!("stages/{stage}/retrying")) { "Cancel" }
                }
            },
        )
        .into_response();
    }
    match retrying::retry_now(&app.pipeline, &stage, chosen, at_most).await {
        Ok(n) => {
            info!(target: "warren::access", who = "dashboard (token)", stage, action = "retry now", scope = %retry.scope, messages = n, "retrying messages sent back now");
            let said = format!("Sent {n} message(s) back to {stage} now");
            page::redirect(&format!(
                "stages/{stage}/retrying?done={}",
                urlencode(&said)
            ))
            .into_response()
        }
        Err(error) => unavailable(&error.to_string()),
    }
}

fn not_found(stage: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        page("Not found", html! { p { "No stage " (stage) "." } }),
    )
        .into_response()
}

fn unavailable(error: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        page("Retrying", html! { p.bad { (error) } }),
    )
        .into_response()
}
