//! A settled job's completion callback (DESIGN.md, *Jobs*): its state POSTed
//! as JSON with the job id as `Idempotency-Key`, tried again with growing
//! delays (the shared [`warren::backoff::Backoff`]) until a 2xx answers or
//! the job is forgotten.

use std::time::Duration;

/// Time a callback server gets to answer one POST.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The delays between attempts: doubling from a second, at most five
/// minutes before jitter.
pub fn backoff() -> warren::backoff::Backoff {
    warren::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
}

/// An HTTP client for callbacks.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with a timeout builds")
}

/// POSTs `body` (the job's state) to `url`, with the job's `traceparent`
/// when it has one; the HTTP status of a 2xx, or
/// why it failed.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    job: &str,
    body: Vec<u8>,
    traceparent: Option<&str>,
) -> Result<u16, String> {
    let mut request = client
        .post(url)
        .header("Content-Type", warren::message::JSON)
        .header("Idempotency-Key", job);
    // It continues the trace the job was sent in.
    if let Some(traceparent) = traceparent {
        request = request.header(warren::traces::TRACEPARENT, traceparent);
    }
    let answer = request.body(body).send().await.map_err(|error| {
        let error = error.without_url();
        format!("POST {}: {error}", crate::redact::url(url))
    })?;
    let status = answer.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("POST {}: HTTP {status}", crate::redact::url(url)))
    }
}
