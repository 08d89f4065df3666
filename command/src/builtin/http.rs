//! The built-in `http` stage: one HTTP call per message.
//!
//! - 2xx: the answer's JSON (or the input with the answer's fields over it,
//!   `emit: merge`) goes to the stage's outputs;
//! - 429 and 5xx: retried, after `Retry-After` when the server sent one;
//! - other 4xx: dead-lettered with the status and the start of the answer;
//! - no answer (connection refused, timeout): retried;
//! - a 2xx answer over `http.max_response` (10 MiB unless set): dead-lettered
//!   with that reason, without reading it whole (only the answers of a stage
//!   that emits are read; of a refusal, only its start).
//!
//! The message id goes in the `Idempotency-Key` header (or the name the
//! file gives, `http.idempotency_key`), so an API that dedupes can make a
//! repeated call harmless: after a crash, a lost answer or a redelivery,
//! the same message is sent with the same key. An id that is not plain
//! printable ASCII (or holds `%`) is sent percent-encoded.
//!
//! Header values from environment variables are read once at start and are
//! marked sensitive, so they appear in no log. URLs in messages and logs lose
//! their password and their query string, where keys sometimes hide
//! (`warren_ops::redact`).

use std::{str::FromStr, time::Duration};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::{
    Method, StatusCode,
    header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER},
};
use serde_json::Value;
use warren::{
    Context, Failure, Outcome,
    message::one_line,
    pipeline::{HeaderValue as Configured, HttpEmit, HttpSpec},
    template,
};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A configured http stage.
pub struct HttpStage {
    spec: HttpSpec,
    method: Method,
    headers: HeaderMap,
    client: reqwest::Client,
    emits: bool,
    idempotency_key: Option<HeaderName>,
}

impl HttpStage {
    /// Prepares the stage: resolves header variables (a missing one is an
    /// error naming the variable). The templates were checked by validation.
    pub fn new(spec: &HttpSpec, concurrency: u32, emits: bool) -> Result<HttpStage, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let text = match value {
                Configured::Literal(text) => text.clone(),
                Configured::Env(var) => std::env::var(var).map_err(|_| {
                    format!("http.headers.{name}: the environment variable {var} is not set")
                })?,
            };
            let name = HeaderName::from_str(name)
                .map_err(|_| format!("http.headers.{name}: not a valid header name"))?;
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| format!("http.headers.{name}: not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(concurrency as usize)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let method = Method::from_str(&spec.method)
            .map_err(|_| format!("http.method: `{}` is not a method", spec.method))?;
        let idempotency_key = match &spec.idempotency_key {
            Some(name) => Some(
                HeaderName::from_str(name)
                    .map_err(|_| format!("http.idempotency_key: `{name}` is not a header name"))?,
            ),
            None => None,
        };
        Ok(HttpStage {
            spec: spec.clone(),
            method,
            headers,
            client,
            emits,
            idempotency_key,
        })
    }

    /// Handles one message.
    pub async fn call(&self, message: Value, ctx: Context) -> Outcome {
        let url = template::url(&self.spec.url, &message).map_err(Failure::dead)?;
        let shown = warren_ops::redact::url(&url);
        let mut request = self
            .client
            .request(self.method.clone(), &url)
            .headers(self.headers.clone())
            .timeout(self.spec.timeout);
        if let Some(name) = &self.idempotency_key {
            request = request.header(name, idempotency_value(ctx.id()));
        }
        // The call continues the message's trace (W3C trace context).
        if let Some(traceparent) = ctx.traceparent() {
            request = request.header(warren::traces::TRACEPARENT, traceparent);
        }
        let body = match &self.spec.body {
            Some(template) => Some(template::body(template, &message).map_err(Failure::dead)?),
            None if matches!(self.method, Method::GET | Method::HEAD | Method::DELETE) => None,
            None => Some(message.clone()),
        };
        if let Some(body) = &body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request.send().await.map_err(|error| {
            if error.is_timeout() {
                Failure::retry(format!(
                    "no answer from {shown} within {}s",
                    self.spec.timeout.as_secs_f64()
                ))
            } else {
                Failure::retry(format!(
                    "calling {shown} failed: {}",
                    chain(&error.without_url())
                ))
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if status.is_success() {
            if !self.emits {
                return Ok(()); // the answer is not needed: not read
            }
            let bytes = read_up_to(response, self.spec.max_response, &shown).await?;
            let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
                Failure::retry(format!(
                    "HTTP {} from {shown} is not JSON: {}",
                    status.as_u16(),
                    snippet(&bytes)
                ))
            })?;
            let out = match self.spec.emit {
                HttpEmit::Response => answer,
                HttpEmit::Merge => merge(message, answer),
            };
            ctx.emit(&out).await?;
            return Ok(());
        }
        let bytes = read_start(response, SNIPPET_BYTES).await;
        let reason = format!("HTTP {} from {shown}: {}", status.as_u16(), snippet(&bytes));
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(match retry_after {
                Some(delay) => Failure::retry_after(delay, reason),
                None => Failure::retry(reason),
            });
        }
        Err(Failure::dead(reason))
    }
}

/// Bytes of a refusal's answer read for its reason.
const SNIPPET_BYTES: usize = 400;

/// The answer's body, if it is at most `max` bytes (`http.max_response`);
/// a larger one (declared, or found while reading) is dead-lettered
/// without being read whole: the same call would answer the same.
async fn read_up_to(
    mut response: reqwest::Response,
    max: u64,
    shown: &str,
) -> Result<Vec<u8>, Failure> {
    let too_large = || {
        Failure::dead(format!(
            "the answer of {shown} is larger than http.max_response ({}); raise it and replay the message",
            size(max)
        ))
    };
    if response.content_length().is_some_and(|length| length > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        Failure::retry(format!(
            "reading the answer of {shown}: {}",
            e.without_url()
        ))
    })? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `max` bytes of the answer (fewer if reading it fails).
async fn read_start(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(max);
    body
}

/// `10 MiB`, `512 KiB`, or bytes.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// What is encoded in an id sent as a header: anything that is not
/// printable ASCII, spaces, and `%` (so that an encoded id never equals
/// another id sent as it is).
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// The message id as a header value: as it is when it is printable ASCII
/// without `%`, else percent-encoded (one id, one key, always).
fn idempotency_value(id: &str) -> HeaderValue {
    let plain = id.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%')
        && !id.starts_with(' ')
        && !id.ends_with(' ');
    let text = if plain {
        id.to_string()
    } else {
        utf8_percent_encode(id, HEADER_UNSAFE).to_string()
    };
    HeaderValue::from_str(&text).expect("printable ASCII is a valid header value")
}

/// The input with the answer's fields over it; an answer that is not an
/// object goes under `response`.
fn merge(input: Value, answer: Value) -> Value {
    match (input, answer) {
        (Value::Object(mut base), Value::Object(over)) => {
            base.extend(over);
            Value::Object(base)
        }
        (Value::Object(mut base), other) => {
            base.insert("response".into(), other);
            Value::Object(base)
        }
        (input, answer) => serde_json::json!({ "input": input, "response": answer }),
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(text: &str) -> Option<Duration> {
    let delay = match text.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(text.trim())
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The start of an answer, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]);
    let text = one_line(&text, 200);
    if text.is_empty() {
        "(empty answer)".into()
    } else {
        text
    }
}

/// An error with its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_puts_the_answer_over_the_input() {
        assert_eq!(
            merge(json!({"a": 1, "b": 2}), json!({"b": 3})),
            json!({"a": 1, "b": 3})
        );
        assert_eq!(
            merge(json!({"a": 1}), json!([1])),
            json!({"a": 1, "response": [1]})
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        let in_a_minute =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(61));
        let parsed = parse_retry_after(&in_a_minute).unwrap();
        assert!(
            parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(61),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn ids_become_one_header_value_each() {
        assert_eq!(idempotency_value("c0.3.1"), "c0.3.1");
        assert_eq!(idempotency_value("a b"), "a b");
        assert_eq!(idempotency_value("a\nb"), "a%0Ab");
        assert_eq!(
            idempotency_value("a%0Ab"),
            "a%250Ab",
            "never the same as another id"
        );
        assert_eq!(idempotency_value("é\"q\""), "%C3%A9\"q\"");
        assert_eq!(idempotency_value(" pad"), "%20pad");
    }

    #[test]
    fn sizes_are_shown_in_their_unit() {
        assert_eq!(size(10 * 1024 * 1024), "10 MiB");
        assert_eq!(size(1536 * 1024), "1536 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[test]
    fn shown_urls_and_snippets_hide_and_shorten() {
        assert_eq!(snippet(b""), "(empty answer)");
        assert_eq!(snippet(b"line1\nline2"), "line1 line2");
    }
}
