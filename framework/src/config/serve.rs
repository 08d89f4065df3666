//! `serve:`: the front door's tokens by scope, TLS files, backlog limit,
//! actions and host names. Tokens are never repeated in a problem.
//!
//! `serve.token` is the admin token; writing it and `serve.tokens.admin`
//! both is a problem (which one would hold?), and so is a token given to
//! two scopes (its bearer's scope would be unknown).

use super::{
    check::Checker,
    raw::{RawServe, RawTls},
};
use crate::front::{Scope, Serve, Tls, Tokens};

/// The validated `serve:` section (defaults when absent).
pub(super) fn check(v: &mut Checker, raw: Option<&RawServe>) -> Serve {
    let mut serve = Serve::default();
    let Some(raw) = raw else {
        return serve;
    };
    serve.tokens = tokens(v, raw);
    serve.tls = raw.tls.as_ref().and_then(|tls| self::tls(v, tls));
    if let Some(n) = raw.max_backlog {
        serve.max_backlog = v
            .whole("serve.max_backlog", n, 1, 1_000_000_000)
            .unwrap_or(serve.max_backlog);
    }
    serve.allow_actions = raw.allow_actions.unwrap_or(false);
    for (n, host) in raw.hosts.iter().flatten().enumerate() {
        match host_name(host) {
            Some(name) => serve.hosts.push(name),
            None => v.problem(
                format!("serve.hosts[{n}]"),
                format!("`{host}` is not a host name; write only the name the front door is reached by, like warren.internal (no scheme, port or path)"),
            ),
        }
    }
    serve
}

/// `serve.token` and `serve.tokens`, each checked where it is written.
fn tokens(v: &mut Checker, raw: &RawServe) -> Tokens {
    let mut tokens = Tokens::default();
    let given = |v: &mut Checker, path: &str, token: &Option<String>| {
        let token = token.as_ref()?;
        match Serve::check_token(token) {
            Ok(()) => Some(token.clone()),
            Err(why) => {
                v.problem(path, why);
                None
            }
        }
    };
    tokens.admin = given(v, "serve.token", &raw.token);
    if let Some(scoped) = &raw.tokens {
        tokens.ingest = given(v, "serve.tokens.ingest", &scoped.ingest);
        tokens.read = given(v, "serve.tokens.read", &scoped.read);
        if raw.token.is_some() && scoped.admin.is_some() {
            v.problem(
                "serve.tokens.admin",
                "serve.token is the admin token already; keep one of the two",
            );
        } else if scoped.admin.is_some() {
            tokens.admin = given(v, "serve.tokens.admin", &scoped.admin);
        }
        if scoped.ingest.is_none() && scoped.read.is_none() && scoped.admin.is_none() {
            v.problem(
                "serve.tokens",
                "holds no token; give one for ingest, read or admin, or leave serve.tokens out",
            );
        }
    }
    if let Some((first, second)) = tokens.shared() {
        v.problem(
            path_of(raw, second),
            format!(
                "is the same token as {}; each scope needs its own token",
                path_of(raw, first)
            ),
        );
    }
    tokens
}

/// Where the token of `scope` is written.
fn path_of(raw: &RawServe, scope: Scope) -> String {
    if scope == Scope::Admin && raw.token.is_some() {
        "serve.token".into()
    } else {
        format!("serve.tokens.{scope}")
    }
}

/// `serve.tls`: both paths, resolved from the file's folder. The files are
/// read when the front door starts (this file may be validated elsewhere).
fn tls(v: &mut Checker, raw: &RawTls) -> Option<Tls> {
    let mut path = |field: &str, given: &Option<String>| match given.as_deref().map(str::trim) {
        Some("") => {
            v.problem(
                format!("serve.tls.{field}"),
                "is empty; give the path of a PEM file",
            );
            None
        }
        Some(path) => Some(v.resolve(path)),
        None => {
            v.problem(
                format!("serve.tls.{field}"),
                "missing; serve.tls needs cert (the certificate chain) and key (its private key), both PEM files",
            );
            None
        }
    };
    let cert = path("cert", &raw.cert);
    let key = path("key", &raw.key);
    Some(Tls {
        cert: cert?,
        key: key?,
    })
}

/// A host name as `serve.hosts` holds it (lower case), if `text` is one.
fn host_name(text: &str) -> Option<String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let fine = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    fine.then_some(name)
}
