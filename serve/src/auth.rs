//! The bearer token (`serve.token` or `WARREN_SERVE_TOKEN`): when one is
//! set, every route but `/healthz` and `/login` needs it, as
//! `Authorization: Bearer TOKEN` or as the dashboard's session cookie (set
//! by `/login`: HttpOnly, SameSite=Strict). Without it the API answers 401
//! and the dashboard's pages send the browser to `/login`. Compared in
//! constant time; never logged.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::{App, ingest::refuse};

/// Lets the request through when it carries the token (or none is set).
pub async fn check(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = match bearer {
        Some(given) => given.to_string(),
        None => cookie(request.headers()).unwrap_or_default(),
    };
    if matches(&given, token) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let api = ["/v1/", "/metrics", "/readyz", "/dashboard/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    if !api {
        return axum::response::Redirect::to("/login").into_response();
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

/// The dashboard's session cookie.
pub const COOKIE: &str = "warren_token";

/// The token the session cookie holds, if any.
fn cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Whether `given` is `token`, in time that does not depend on where they
/// differ.
pub fn matches(given: &str, token: &str) -> bool {
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
