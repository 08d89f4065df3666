//! The bearer token (`serve.token` or `WARREN_SERVE_TOKEN`): when one is
//! set, every route but `/healthz` answers 401 without
//! `Authorization: Bearer TOKEN`. Compared in constant time; never logged.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::{App, ingest::refuse};

/// Lets the request through when it carries the token (or none is set).
pub async fn check(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if matches(given, token) {
        return next.run(request).await;
    }
    let mut answer = refuse(
        StatusCode::UNAUTHORIZED,
        "this route needs `Authorization: Bearer TOKEN` (serve.token)",
        json!({}),
    );
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    answer
}

/// Whether `given` is `token`, in time that does not depend on where they
/// differ.
fn matches(given: &str, token: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_token_matches() {
        assert!(super::matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!super::matches("0123456789abcdeX", "0123456789abcdef"));
        assert!(!super::matches("", "0123456789abcdef"));
        assert!(!super::matches("0123456789abcdef0", "0123456789abcdef"));
    }
}
