//! Traces (DESIGN.md, *Traces*): the W3C trace context a message carries in
//! its `traceparent` and `tracestate` headers, and one span per handling in
//! that trace (a new trace when the message has none), exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! A handling's span ([`Handling`]) is the parent of everything the handling
//! emits: the emitted messages carry its context. Retries and dead letters
//! are copies of the message, headers and all, so they stay in the trace of
//! the handling that failed, as children of the same parent. Without an
//! endpoint nothing is exported and no span is made: a handling hands the
//! message's own (valid) trace headers on unchanged, so the trace still
//! crosses stages for a process further on that does export, and a message
//! without them costs a header lookup (`benches/traces.rs` prints it).

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use lapin::{BasicProperties, types::AMQPValue};
use opentelemetry::{
    Context, KeyValue, global,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::warn;

use crate::message;

/// The W3C header naming a message's trace and its parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header with vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";
/// Set to export spans over OTLP/HTTP (`http://collector:4318`; the
/// exporter adds `/v1/traces`).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The exporting of this process's spans, started by [`export_from_env`].
#[derive(Debug)]
pub struct Exporting(SdkTracerProvider);

/// Installs an OTLP/HTTP exporter of spans when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set (service name `warren`, or `OTEL_SERVICE_NAME`); `None`, and
/// nothing exported, when it is not. Must be called inside a Tokio runtime:
/// the export's requests run on it.
pub fn export_from_env() -> Option<Exporting> {
    let endpoint = std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client {
            http: reqwest::Client::new(),
            runtime: tokio::runtime::Handle::current(),
        })
        .with_timeout(Duration::from_secs(10))
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            warn!(%endpoint, %error, "cannot export traces: spans are not sent");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name())
                .build(),
        )
        .build();
    global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, Ordering::Relaxed);
    Some(Exporting(provider))
}

/// Spans are exported (an exporter was installed): handlings make spans.
/// Until then a handling only hands its message's trace headers on.
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "warren".to_string())
}

impl Exporting {
    /// Sends the spans still batched and stops exporting (at the end of
    /// the process's work).
    pub async fn finish(self) {
        let provider = self.0;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                warn!(%error, "the last spans were not all exported");
            }
        })
        .await;
    }
}

/// The export's HTTP client: reqwest, its requests run on the Tokio runtime
/// (the SDK's batch exporter calls from a thread of its own).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let http = self.http.clone();
        let request = reqwest::Request::try_from(request)?;
        let answered = self
            .runtime
            .spawn(async move {
                let response = http.execute(request).await?;
                let status = response.status();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .await??;
        Ok(opentelemetry_http::Response::builder()
            .status(answered.0)
            .body(answered.1)?)
    }
}

/// A message's headers, read as a carrier of trace context.
struct Headers<'a>(&'a BasicProperties);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.headers().as_ref()?.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .headers()
            .as_ref()
            .map(|h| h.inner().keys().map(|k| k.as_str()).collect())
            .unwrap_or_default()
    }
}

/// Trace headers written for a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeaders(Vec<(&'static str, String)>);

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}

impl TraceHeaders {
    /// The headers of `context` (none when it has no valid span).
    pub fn of(context: &Context) -> TraceHeaders {
        let mut headers = TraceHeaders::default();
        TraceContextPropagator::new().inject_context(context, &mut headers);
        headers
    }

    /// Reads the headers of an HTTP request or any other pairs: the trace
    /// context of `traceparent` and `tracestate`, if valid.
    pub fn from_pairs<'a>(mut get: impl FnMut(&str) -> Option<&'a str>) -> TraceHeaders {
        let parent = get(TRACEPARENT);
        let state = get(TRACESTATE);
        let pairs: Vec<(&str, &str)> = [(TRACEPARENT, parent), (TRACESTATE, state)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        let context = TraceContextPropagator::new().extract(&Pairs(&pairs));
        TraceHeaders::of(&context)
    }

    /// `properties` with these headers set.
    pub fn on(&self, mut properties: BasicProperties) -> BasicProperties {
        for (name, value) in &self.0 {
            properties = message::with_header(properties, name, message::text(value));
        }
        properties
    }

    /// The `traceparent` value, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == TRACEPARENT)
            .map(|(_, v)| v.as_str())
    }

    /// Each header and its value.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// The message's `traceparent`, when it is one a receiver may continue.
pub fn traceparent_of(properties: &BasicProperties) -> Option<String> {
    Headers(properties)
        .get(TRACEPARENT)
        .filter(|parent| valid_traceparent(parent))
        .map(str::to_string)
}

/// A W3C `traceparent` a receiver may continue, by the specification's
/// rules (the propagator used when spans are exported is a little more
/// lenient, with short ids among others): a version of 2 hex digits
/// (not `ff`; `00` has exactly four fields, a later one at least four), a
/// trace id of 32 lowercase hex digits, a parent id of 16, flags of 2,
/// neither id all zeros.
fn valid_traceparent(parent: &str) -> bool {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    let parts: Vec<&str> = parent.split('-').collect();
    let [version, trace, span, flags, rest @ ..] = parts.as_slice() else {
        return false;
    };
    version.len() == 2
        && hex(version)
        && *version != "ff"
        && (rest.is_empty() || *version != "00")
        && trace.len() == 32
        && span.len() == 16
        && flags.len() == 2
        && hex(trace)
        && hex(span)
        && hex(flags)
        && !zeros(trace)
        && !zeros(span)
}

/// The span of one handling, in the trace of the message handled (none
/// when nothing is exported: the message's own trace context is handed on).
pub struct Handling {
    context: Option<Context>,
    headers: TraceHeaders,
}

impl fmt::Debug for Handling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handling")
            .field("headers", &self.headers)
            .finish()
    }
}

impl Handling {
    /// Starts the span of handling the message of `properties` (its id
    /// `id`, its job, at `attempt`) at `stage`, after it waited `waited` in
    /// its queue.
    pub fn start(
        stage: &str,
        id: &str,
        job: &str,
        attempt: u32,
        waited: Option<Duration>,
        properties: &BasicProperties,
    ) -> Handling {
        if !EXPORTING.load(Ordering::Relaxed) {
            // Nothing exported: no span, and the message's context as it is
            // (the cost of a header lookup for a message without one).
            let carrier = Headers(properties);
            let mut headers = TraceHeaders::default();
            if let Some(parent) = carrier.get(TRACEPARENT).filter(|p| valid_traceparent(p)) {
                headers.0.push((TRACEPARENT, parent.to_string()));
                if let Some(state) = carrier.get(TRACESTATE) {
                    headers.0.push((TRACESTATE, state.to_string()));
                }
            }
            return Handling {
                context: None,
                headers,
            };
        }
        let parent = TraceContextPropagator::new().extract(&Headers(properties));
        let tracer = global::tracer("warren");
        let mut attributes = vec![
            KeyValue::new("warren.stage", stage.to_string()),
            KeyValue::new("messaging.message.id", id.to_string()),
            KeyValue::new("warren.job", job.to_string()),
            KeyValue::new("warren.attempt", i64::from(attempt)),
        ];
        if let Some(waited) = waited {
            attributes.push(KeyValue::new(
                "warren.queue_wait_ms",
                waited.as_millis() as i64,
            ));
        }
        let span = tracer
            .span_builder(format!("handle {stage}"))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        let context = parent.with_span(span);
        let headers = TraceHeaders::of(&context);
        Handling {
            context: Some(context),
            headers,
        }
    }

    /// The trace headers of what this handling emits.
    pub fn headers(&self) -> &TraceHeaders {
        &self.headers
    }

    /// The trace's id (32 hex digits), or empty when the message has no
    /// trace and nothing is exported.
    pub fn trace_id(&self) -> &str {
        // traceparent: version-trace id-parent id-flags, validated.
        self.headers
            .traceparent()
            .and_then(|parent| parent.get(3..35))
            .unwrap_or_default()
    }

    /// Ends the span with the handling's outcome (`done`, `retried`,
    /// `dead`, ...); an outcome other than `done` with `reason`.
    pub fn end(self, outcome: &str, reason: Option<&str>) {
        let Some(context) = self.context else {
            return;
        };
        let span = context.span();
        span.set_attribute(KeyValue::new("warren.outcome", outcome.to_string()));
        if let Some(reason) = reason {
            span.set_status(Status::error(reason.to_string()));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn props(traceparent: Option<&str>) -> BasicProperties {
        let props = message::new_properties("m1", "m1");
        match traceparent {
            Some(value) => message::with_header(props, TRACEPARENT, message::text(value)),
            None => props,
        }
    }

    #[test]
    fn without_an_exporter_a_handling_hands_its_message_s_context_on() {
        let handling = Handling::start("a", "m1", "m1", 1, None, &props(Some(PARENT)));
        assert_eq!(handling.headers().traceparent(), Some(PARENT));
        assert_eq!(handling.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        handling.end("done", None);
    }

    #[test]
    fn a_message_without_a_trace_emits_none_when_nothing_is_exported() {
        let handling = Handling::start("a", "m1", "m1", 1, None, &props(None));
        assert_eq!(handling.headers(), &TraceHeaders::default());
        assert_eq!(handling.trace_id(), "");
    }

    #[test]
    fn a_malformed_traceparent_is_ignored_as_the_propagator_ignores_it() {
        for (parent, valid) in [
            (PARENT, true),
            (
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                true,
            ),
            (
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
                true,
            ),
            ("00-zz-01", false),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                false,
            ),
            (
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                false,
            ),
            (
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                false,
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                false,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                false,
            ),
        ] {
            assert_eq!(valid_traceparent(parent), valid, "{parent}");
            assert_eq!(traceparent_of(&props(Some(parent))).is_some(), valid);
            let handling = Handling::start("a", "m1", "m1", 1, None, &props(Some(parent)));
            assert_eq!(
                handling.headers().traceparent().is_some(),
                valid,
                "{parent}"
            );
            // The propagator, used when exporting, agrees.
            let parsed = TraceHeaders::from_pairs(|n| (n == TRACEPARENT).then_some(parent));
            assert_eq!(parsed.traceparent().is_some(), valid, "{parent}");
        }
    }

    #[test]
    fn request_headers_are_read_and_written_back_on_properties() {
        let headers = TraceHeaders::from_pairs(|name| match name {
            TRACEPARENT => Some(PARENT),
            TRACESTATE => Some("vendor=1"),
            _ => None,
        });
        let pairs: Vec<_> = headers.pairs().collect();
        assert_eq!(pairs, [(TRACEPARENT, PARENT), (TRACESTATE, "vendor=1")]);
        let props = headers.on(message::new_properties("m1", "m1"));
        assert_eq!(
            message::text_header(&props, TRACEPARENT).as_deref(),
            Some(PARENT)
        );
    }
}
