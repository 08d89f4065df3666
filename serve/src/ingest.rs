//! `POST /v1/stages/{stage}/messages`: an `application/json` body is one
//! message, an `application/x-ndjson` body up to 500 (one per line); any
//! other type is refused (415), since a form or plain text is what a page
//! of another site can send. Every line is
//! checked before anything is sent (a bad one refuses the request whole,
//! 400, naming each bad line); the messages go out on the front door's one
//! connection, and the answer (202) comes only once the broker confirmed
//! every one of them. A 503 (the broker is unreachable) lists every
//! message's id, made up ones included, so that the client can send them
//! again under the same ids.

use std::time::Duration;

use axum::body::Bytes;
use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use warren::{
    delay::{self, When},
    message,
    traces::TraceHeaders,
};

use super::App;

/// Messages in one request at most.
pub const MAX_LINES: usize = 500;

/// Time a request waits for a new connection to the broker.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// Time the broker gets to confirm a request's messages once written.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// What a 503 asks of the client. Its `ids` are every message's id in
/// order (given or made up here), so that what was sent already is
/// recognised downstream.
const SEND_AGAIN: &str = "send them again with the same ids (`ids`, in order: Idempotency-Key for one message, ?id_field= for a batch)";

/// The query string.
#[derive(Debug, Deserialize)]
pub struct Params {
    /// The field of each message that holds its id.
    id_field: Option<String>,
    /// The URL to POST each job's state to when it settles.
    callback: Option<String>,
    /// Handle the messages this long after they are sent (`30s`).
    delay: Option<String>,
    /// Handle the messages at this time or later (RFC 3339).
    at: Option<String>,
}

impl Params {
    /// When the messages are to be handled (`?delay=`, `?at=`), or why
    /// the query cannot say.
    fn when(&self) -> Result<Option<When>, String> {
        match (&self.delay, &self.at) {
            (Some(_), Some(_)) => Err("give ?delay= or ?at=, not both".into()),
            (Some(delay), None) => delay::parse_delay(delay)
                .map(|d| Some(When::After(d)))
                .map_err(|e| format!("?delay=: {e}")),
            (None, Some(at)) => {
                let at = delay::parse_at(at).map_err(|e| format!("?at=: {e}"))?;
                delay::check(at, message::epoch_ms()).map_err(|e| format!("?at=: {e}"))?;
                Ok(Some(When::At(at)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// An error answer: `{"error": ..., more}`.
pub fn refuse(status: StatusCode, error: impl Into<String>, more: Value) -> Response {
    let mut body = json!({ "error": error.into() });
    if let (Some(body), Value::Object(more)) = (body.as_object_mut(), more) {
        body.extend(more);
    }
    (status, Json(body)).into_response()
}

/// The handler.
pub async fn post(
    State(app): State<App>,
    Path(stage): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if app.pipeline.stage(&stage).is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("pipeline `{}` has no stage `{stage}`", app.pipeline.name),
            json!({ "stages": app.pipeline.stage_names() }),
        );
    }
    let when = match params.when() {
        Ok(when) => when,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why, json!({})),
    };
    if let Some(url) = &params.callback {
        let fine = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !fine {
            return refuse(
                StatusCode::BAD_REQUEST,
                "?callback= is not an http or https URL",
                json!({}),
            );
        }
        if !app.pipeline.jobs.track {
            return refuse(
                StatusCode::BAD_REQUEST,
                "?callback= needs a pipeline that tracks jobs (jobs.track)",
                json!({}),
            );
        }
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let batch = match kind.as_deref() {
        Some("application/json") => false,
        Some("application/x-ndjson") => true,
        _ => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send `Content-Type: application/json` (one message) or `application/x-ndjson` (one per line)",
                json!({}),
            );
        }
    };
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string));
    let messages = match parse(&body, batch, key, params.id_field.as_deref()) {
        Ok(messages) => messages,
        Err(refused) => return *refused,
    };
    // The messages hold their own copies: while the broker confirms them,
    // the request holds about its budget's share (`budget`), not twice it.
    drop(body);
    if let Some(ready) = app.backlog(&stage)
        && ready > app.pipeline.serve.max_backlog
    {
        let mut answer = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "stage `{stage}` has {ready} messages waiting, over serve.max_backlog ({}); try again later",
                app.pipeline.serve.max_backlog
            ),
            json!({}),
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return answer;
    }
    if !app.ready.load(std::sync::atomic::Ordering::Relaxed) {
        // The last look (every second) found the broker away: say so now
        // rather than make the request wait for a connection.
        let ids: Vec<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the broker is unreachable; nothing was sent; {SEND_AGAIN}"),
            json!({ "ids": ids, "confirmed": [] }),
        );
    }
    // The messages continue the caller's trace (W3C trace context).
    let trace = TraceHeaders::from_pairs(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    send(
        &app,
        &stage,
        &messages,
        params.callback.as_deref(),
        when,
        &trace,
    )
    .await
}

/// The messages of a body, each with its id; or the 400 (or 413) answer.
fn parse(
    body: &[u8],
    batch: bool,
    key: Option<Result<String, header::ToStrError>>,
    id_field: Option<&str>,
) -> Result<Vec<(String, Vec<u8>)>, Box<Response>> {
    let lines: Vec<(usize, &[u8])> = if batch {
        body.split(|b| *b == b'\n')
            .enumerate()
            .map(|(n, line)| (n + 1, line.strip_suffix(b"\r").unwrap_or(line)))
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .collect()
    } else {
        vec![(1, body)]
    };
    if lines.is_empty() {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "no message in the body",
            json!({}),
        )));
    }
    if lines.len() > MAX_LINES {
        return Err(Box::new(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} messages; at most {MAX_LINES} per request", lines.len()),
            json!({}),
        )));
    }
    let key = match key {
        Some(Ok(key)) if lines.len() == 1 => Some(key),
        Some(Ok(_)) => {
            return Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key names one message; give the ids of a batch with ?id_field=",
                json!({}),
            )));
        }
        Some(Err(_)) => {
            return Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key is not visible ASCII",
                json!({}),
            )));
        }
        None => None,
    };
    let mut messages = Vec::with_capacity(lines.len());
    let mut bad = Vec::new();
    for (n, line) in lines {
        // A document tree only when something must be read from it (the
        // id field) or rewritten (a body over several lines); otherwise the
        // line is only checked.
        let spans_lines = line.contains(&b'\n');
        let value = if spans_lines || (key.is_none() && id_field.is_some()) {
            match serde_json::from_slice::<Value>(line) {
                Ok(value) => Some(value),
                Err(error) => {
                    bad.push(json!({"line": n, "error": format!("not valid JSON: {error}")}));
                    continue;
                }
            }
        } else {
            if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                bad.push(json!({"line": n, "error": format!("not valid JSON: {error}")}));
                continue;
            }
            None
        };
        let id = match (&key, id_field, &value) {
            (Some(key), _, _) => key.clone(),
            (None, Some(field), Some(value)) => match &value[field] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    bad.push(json!({"line": n, "error": format!("no string or number field `{field}` for its id")}));
                    continue;
                }
            },
            _ => message::new_id(),
        };
        if id.is_empty() || id.len() > message::MAX_ID {
            bad.push(json!({"line": n, "error": format!("an id must be 1 to {} bytes long", message::MAX_ID)}));
            continue;
        }
        // One line per message on the broker: compact what spans lines.
        let text = match (&value, spans_lines) {
            (Some(value), true) => serde_json::to_vec(value).expect("JSON"),
            _ => line.to_vec(),
        };
        messages.push((id, text));
    }
    if !bad.is_empty() {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            format!("{} bad line(s); nothing was sent", bad.len()),
            json!({ "lines": bad }),
        )));
    }
    Ok(messages)
}

/// Publishes the messages and waits for every confirm.
async fn send(
    app: &App,
    stage: &str,
    messages: &[(String, Vec<u8>)],
    callback: Option<&str>,
    when: Option<When>,
    trace: &TraceHeaders,
) -> Response {
    let refs: Vec<(&str, &[u8])> = messages
        .iter()
        .map(|(id, body)| (id.as_str(), body.as_slice()))
        .collect();
    let ids: Vec<&str> = refs.iter().map(|(id, _)| *id).collect();
    // Without a connection the send must make one: a web request waits 2 s
    // for that at most, not the producer's whole send timeout.
    let connected = app.producer.is_connected().await;
    let not_before = when.map(|when| when.not_before_ms(message::epoch_ms()));
    let publishing = app
        .producer
        .publish_many_traced(stage, &refs, callback, not_before, trace);
    let published = if connected {
        publishing.await
    } else {
        tokio::time::timeout(CONNECT_WITHIN, publishing)
            .await
            .unwrap_or_else(|_| {
                Err(warren::Error::Unreachable {
                    address: app.pipeline.broker.urls.addresses(),
                    reason: format!("no connection within {}s", CONNECT_WITHIN.as_secs()),
                })
            })
    };
    let sent = match published {
        Ok(sent) => sent,
        Err(error) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the broker did not take the messages: {error}; {SEND_AGAIN}"),
                json!({ "ids": ids, "confirmed": [] }),
            );
        }
    };
    let mut confirmed = Vec::with_capacity(sent.len());
    let mut failure = None;
    let waiting = async {
        for (sent, id) in sent.into_iter().zip(&ids) {
            match sent.confirmed().await {
                Ok(()) => confirmed.push(*id),
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(CONFIRM_WITHIN, waiting).await.is_err() {
        failure = Some("no confirm in time".into());
    }
    if let Some(failure) = failure {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} of {} messages confirmed by the broker: {failure}; {SEND_AGAIN}",
                confirmed.len(),
                ids.len()
            ),
            json!({ "ids": ids, "confirmed": confirmed }),
        );
    }
    let mut answer = json!({ "ids": ids, "jobs": ids });
    if ids.len() == 1 {
        answer["job"] = json!(ids[0]);
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}
