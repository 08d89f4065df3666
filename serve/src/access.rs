//! Who may do what (DESIGN.md, *HTTP*): the tokens by scope and what each
//! route needs. `POST /v1/stages/{stage}/messages` needs `ingest`, every
//! other GET (or HEAD) `read`, and everything else (a cancel, a pause, a
//! replay or purge: any request that changes something) `admin`; an admin
//! token may do everything. Without any token every route is open and
//! every request counts as admin's.
//!
//! [`Access::scope_of`] compares a given token with every set token in
//! time that depends neither on where they differ nor on which one
//! matched.

use axum::http::Method;
use subtle::{Choice, ConstantTimeEq as _};
pub use warren::pipeline::Scope;
use warren::pipeline::Tokens;

/// The front door's tokens.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Tokens,
}

impl Access {
    /// Access by `tokens` (none: open).
    pub fn new(tokens: Tokens) -> Access {
        Access { tokens }
    }

    /// Whether every route is open (no token is set).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The scope of the token `given`, if it is one.
    pub fn scope_of(&self, given: &str) -> Option<Scope> {
        let mut found = None;
        for scope in Scope::ALL {
            let token = self.tokens.get(scope).unwrap_or("");
            // An unset scope is compared too (with nothing), so the time
            // taken says nothing about which scopes are set.
            let same: Choice = given.as_bytes().ct_eq(token.as_bytes())
                & Choice::from(u8::from(!token.is_empty()));
            if bool::from(same) {
                found = Some(scope);
            }
        }
        found
    }
}

/// What a request needs: `ingest` for posting messages, `read` for any
/// other GET or HEAD, `admin` for the rest.
pub fn needed(method: &Method, path: &str) -> Scope {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ingest =
        matches!(parts.as_slice(), ["v1", "stages", stage, "messages"] if !stage.is_empty());
    if *method == Method::POST && ingest {
        Scope::Ingest
    } else if matches!(*method, Method::GET | Method::HEAD) {
        Scope::Read
    } else {
        Scope::Admin
    }
}

/// What a scope may do, for the answer to a request it may not make.
pub fn said(scope: Scope) -> &'static str {
    match scope {
        Scope::Ingest => "it may only post messages",
        Scope::Read => "it may only read (GET)",
        Scope::Admin => "it may do everything",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Access {
        Access::new(Tokens {
            ingest: Some("i".repeat(20)),
            read: Some("r".repeat(20)),
            admin: None,
        })
    }

    #[test]
    fn each_token_has_its_scope_and_nothing_else_has_one() {
        let access = tokens();
        assert!(!access.is_open());
        assert_eq!(access.scope_of(&"i".repeat(20)), Some(Scope::Ingest));
        assert_eq!(access.scope_of(&"r".repeat(20)), Some(Scope::Read));
        assert_eq!(
            access.scope_of(""),
            None,
            "an unset admin token is no token"
        );
        assert_eq!(access.scope_of(&"r".repeat(19)), None);
        assert_eq!(access.scope_of(&"r".repeat(21)), None);
        assert!(Access::default().is_open());
        assert_eq!(Access::default().scope_of(""), None);
    }

    #[test]
    fn posting_messages_needs_ingest_reading_read_the_rest_admin() {
        let post = Method::POST;
        assert_eq!(needed(&post, "/v1/stages/a/messages"), Scope::Ingest);
        assert_eq!(needed(&Method::GET, "/v1/jobs/j"), Scope::Read);
        assert_eq!(needed(&Method::HEAD, "/metrics"), Scope::Read);
        assert_eq!(needed(&Method::GET, "/v1/stages/a/messages"), Scope::Read);
        for (method, path) in [
            (&post, "/v1/stages/a/pause"),
            (&post, "/v1/stages/a/resume"),
            (&post, "/stages/a/dead"),
            (&post, "/jobs/cancel"),
            (&post, "/v1/stages//messages"),
            (&post, "/v1/stages/a/messages/x"),
            (&Method::DELETE, "/v1/jobs/j"),
            (&Method::PUT, "/v1/stages/a/messages"),
        ] {
            assert_eq!(needed(method, path), Scope::Admin, "{method} {path}");
        }
    }
}
