//! `GET /stages/{stage}/scheduled`: the messages sent to a stage with a
//! delay or a time that still wait for it (the first [`LISTED`], soonest
//! first), each with when it is due, its payload and headers. They stay
//! where they are (`warren::scheduled`).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use warren::{message::epoch_ms, scheduled, scheduled::Scheduled};

use super::{body_and_headers, ms, page, span};
use crate::App;

/// Scheduled messages listed at most.
pub const LISTED: usize = 1000;

/// `GET /stages/{stage}/scheduled`.
pub async fn list(State(app): State<App>, Path(stage): Path<String>) -> Response {
    if app.pipeline.stage(&stage).is_none() {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", html! { p { "No stage " (stage) "." } }),
        )
            .into_response();
    }
    let listing = match scheduled::list(&app.pipeline, &stage, LISTED).await {
        Ok(listing) => listing,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                page("Scheduled", html! { p.bad { (error.to_string()) } }),
            )
                .into_response();
        }
    };
    let now = epoch_ms();
    page(
        "Scheduled",
        html! {
            h1 { "Scheduled messages of " (stage) }
            p #scheduled-count {
                (listing.found) " messages wait for their time"
                (if listing.found > listing.messages.len() { format!(" (the first {})", listing.messages.len()) } else { String::new() })
                "."
            }
            @if listing.partial {
                p.note { "Only the first " (scheduled::SCANNED) " delayed messages of the pipeline were read: there may be more." }
            }
            @for message in &listing.messages { (one(message, now)) }
        },
    )
    .into_response()
}

fn one(message: &Scheduled, now: u64) -> Markup {
    html! {
        div.letter data-id=(message.id) {
            h3 { (message.id) }
            p.due { "due " (ms(message.due_ms)) " (in " (span(message.due_ms.saturating_sub(now))) ")" }
            (body_and_headers(&message.body, message.is_cut(), &message.headers))
        }
    }
}
