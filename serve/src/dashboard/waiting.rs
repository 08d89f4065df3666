//! `GET /stages/{stage}/waiting`: a peek at the first messages waiting in a
//! stage's queue ([`SHOWN`], or `?n=` up to [`MOST`]), in queue order, each
//! with its attempt, payload and headers. They stay in the queue, in their
//! place, and their workers take them as if nobody had looked
//! (`warren::waiting`); workers take the messages behind them meanwhile.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use warren::{waiting, waiting::Waiting};

use super::{body_and_headers, page};
use crate::App;

/// Messages shown unless `?n=` says otherwise.
pub const SHOWN: usize = 50;

/// Messages shown at most.
pub const MOST: usize = 1000;

/// `?n=COUNT`.
#[derive(Debug, Deserialize)]
pub struct Asked {
    n: Option<usize>,
}

/// `GET /stages/{stage}/waiting`.
pub async fn list(
    State(app): State<App>,
    Path(stage): Path<String>,
    Query(asked): Query<Asked>,
) -> Response {
    if app.pipeline.stage(&stage).is_none() {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", html! { p { "No stage " (stage) "." } }),
        )
            .into_response();
    }
    let shown = asked.n.unwrap_or(SHOWN).clamp(1, MOST);
    let peeked = match waiting::peek(&app.pipeline, &stage, shown).await {
        Ok(peeked) => peeked,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                page("Waiting", html! { p.bad { (error.to_string()) } }),
            )
                .into_response();
        }
    };
    page(
        "Waiting",
        html! {
            h1 { "Waiting messages of " (stage) }
            p #waiting-count {
                (peeked.ready) " messages were ready"
                @if peeked.messages.len() < peeked.ready { "; the first " (peeked.messages.len()) }
                "."
            }
            p.note { "In queue order, behind the ones workers hold. Looking leaves them in their place, uncharged." }
            @for message in &peeked.messages { (one(message)) }
        },
    )
    .into_response()
}

fn one(message: &Waiting) -> Markup {
    html! {
        div.letter data-id=(message.id) {
            h3 { @if message.id.is_empty() { "(no id yet)" } @else { (message.id) } }
            p.attempt { "attempt " (message.attempt) }
            (body_and_headers(&message.body, message.is_cut(), &message.headers))
        }
    }
}
