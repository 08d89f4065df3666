//! The request bodies held at once, bounded: each request's body is read
//! here, whole, against one budget of bytes shared by every request
//! ([`MAX_HELD`]), and its share is given back when its answer is ready. A
//! body whose length is declared takes its share before it is read, so a
//! request past the budget is answered at once (503 with `Retry-After`),
//! before the client sends it; a body of unknown length (chunked) takes
//! its share chunk by chunk. A body over [`super::MAX_BODY`] is 413.
//!
//! It runs after the token check: a client without the token never makes
//! the server hold a byte of its body.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{MAX_BODY, ingest::refuse};

/// Bytes of request bodies held at once at most.
pub const MAX_HELD: usize = 64 * 1024 * 1024;

/// The budget every request's body draws from.
pub type Budget = Arc<Semaphore>;

/// A full budget.
pub fn budget() -> Budget {
    Arc::new(Semaphore::new(MAX_HELD))
}

/// Reads the request's body within the budget, then serves it.
pub async fn hold(State(budget): State<Budget>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(request).await;
    }
    if declared.is_some_and(|n| n > MAX_BODY) {
        return too_large();
    }
    let mut share = match declared {
        Some(n) => match take(&budget, n) {
            Some(share) => Some(share),
            None => return busy(),
        },
        None => None,
    };
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut read = Vec::with_capacity(declared.unwrap_or(0).min(64 * 1024));
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("the request's body could not be read: {error}"),
                    json!({}),
                );
            }
        };
        if read.len() + chunk.len() > MAX_BODY {
            return too_large();
        }
        if declared.is_none() {
            let Some(more) = take(&budget, chunk.len()) else {
                return busy();
            };
            match &mut share {
                Some(share) => share.merge(more),
                None => share = Some(more),
            }
        }
        read.extend_from_slice(&chunk);
    }
    let request = Request::from_parts(parts, Body::from(Bytes::from(read)));
    let answer = next.run(request).await;
    drop(share);
    answer
}

/// `bytes` of the budget, if it has them now.
fn take(budget: &Budget, bytes: usize) -> Option<OwnedSemaphorePermit> {
    let bytes = u32::try_from(bytes).ok()?;
    budget.clone().try_acquire_many_owned(bytes).ok()
}

fn busy() -> Response {
    let mut answer = refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the server holds {} MiB of request bodies already; try again in a moment",
            MAX_HELD / (1024 * 1024)
        ),
        json!({}),
    );
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    answer
}

fn too_large() -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the body is over {} MiB; send fewer messages per request",
            MAX_BODY / (1024 * 1024)
        ),
        json!({}),
    )
}
