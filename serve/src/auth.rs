//! The bearer tokens (`serve.token`, `serve.tokens` or
//! `WARREN_SERVE_TOKEN`; [`crate::access`]): when one is set, every route
//! but `/healthz` and `/login` needs one whose scope allows the request,
//! as `Authorization: Bearer TOKEN` or as the dashboard's session cookie
//! (set by `/login`: HttpOnly, SameSite=Strict, and Secure over HTTPS).
//! No token or a wrong one: the API answers 401 (with `WWW-Authenticate`)
//! and the dashboard's pages send the browser to `/login`; a right token
//! whose scope does not allow the request: 403 naming the scope needed.
//! Tokens are compared in constant time and never logged.
//!
//! The request goes on with its bearer's [`Scope`] among its extensions
//! (admin when no token is set): the dashboard offers its actions only to
//! admin.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use serde_json::json;

use super::{
    App,
    access::{self, Scope},
    ingest::refuse,
};

/// Lets the request through when it carries a token whose scope allows it
/// (or none is set).
pub async fn check(State(app): State<App>, mut request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/login") {
        return next.run(request).await;
    }
    if app.access.is_open() {
        request.extensions_mut().insert(Scope::Admin);
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = match bearer {
        Some(given) => given.to_string(),
        None => cookie(request.headers()).unwrap_or_default(),
    };
    let needed = access::needed(request.method(), request.uri().path());
    match app.access.scope_of(&given) {
        Some(scope) if scope.allows(needed) => {
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Some(scope) => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this token's scope is `{scope}` ({}); this request needs a token of scope `{needed}` (serve.tokens.{needed}) or admin",
                access::said(scope)
            ),
            json!({}),
        ),
        None => unauthorized(request.uri().path()),
    }
}

/// No token, or a wrong one: 401 for the API, the sign-in page for a
/// browser.
fn unauthorized(path: &str) -> Response {
    let api = ["/v1/", "/metrics", "/readyz", "/dashboard/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    if !api {
        return axum::response::Redirect::to("/login").into_response();
    }
    let mut answer = refuse(
        StatusCode::UNAUTHORIZED,
        "this route needs `Authorization: Bearer TOKEN` (serve.token or serve.tokens)",
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
