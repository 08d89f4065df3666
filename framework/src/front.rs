//! The HTTP front door's settings (`serve:`; DESIGN.md, *HTTP*): who may
//! ask ([`Tokens`], each for a [`Scope`]), over what ([`Tls`]), and what
//! the front door takes.
//!
//! `serve.token` is the admin token (short for `serve.tokens.admin`; the
//! file may not hold both), and `WARREN_SERVE_TOKEN` replaces it. Tokens
//! are never displayed: [`Debug`] says only which scopes have one.

use std::path::PathBuf;

/// What a token lets its bearer do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// POST messages (`POST /v1/stages/{stage}/messages`), nothing else.
    Ingest,
    /// Every GET: the dashboard's pages (without their actions), jobs,
    /// metrics.
    Read,
    /// Everything: ingest, reading, and every change (cancel, pause,
    /// replay, purge).
    Admin,
}

impl Scope {
    /// Every scope, in the order `serve.tokens` lists them.
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    /// Its name in `serve.tokens`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a bearer of this scope may do what needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The front door's tokens, one per scope at most (`serve.tokens`, and
/// `serve.token` for admin). None set: every route is open.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `serve.tokens.ingest`.
    pub ingest: Option<String>,
    /// `serve.tokens.read`.
    pub read: Option<String>,
    /// `serve.tokens.admin` (or `serve.token`, or `WARREN_SERVE_TOKEN`).
    pub admin: Option<String>,
}

impl Tokens {
    /// The token of `scope`, if set.
    pub fn get(&self, scope: Scope) -> Option<&str> {
        match scope {
            Scope::Ingest => self.ingest.as_deref(),
            Scope::Read => self.read.as_deref(),
            Scope::Admin => self.admin.as_deref(),
        }
    }

    /// The set tokens with their scopes.
    pub fn iter(&self) -> impl Iterator<Item = (Scope, &str)> {
        Scope::ALL
            .into_iter()
            .filter_map(|scope| self.get(scope).map(|token| (scope, token)))
    }

    /// Whether no token is set (every route is open).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Two scopes that share a token, if any (a token must say its scope).
    pub fn shared(&self) -> Option<(Scope, Scope)> {
        let set: Vec<_> = self.iter().collect();
        set.iter().enumerate().find_map(|(n, (first, token))| {
            set[n + 1..]
                .iter()
                .find(|(_, other)| other == token)
                .map(|(second, _)| (*first, *second))
        })
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<&str> = self.iter().map(|(scope, _)| scope.name()).collect();
        write!(f, "Tokens(set for: {})", set.join(", "))
    }
}

/// `serve.tls`: the front door serves HTTPS with this certificate chain
/// and key (PEM files; paths resolved from the pipeline file's folder).
/// Read when the front door starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// `serve.tls.cert`: the certificate chain, the server's first.
    pub cert: PathBuf,
    /// `serve.tls.key`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The HTTP front door's settings (`serve:`; DESIGN.md, *HTTP*).
#[derive(Clone, Debug, PartialEq)]
pub struct Serve {
    /// The bearer tokens by scope (never displayed).
    pub tokens: Tokens,
    /// HTTPS, when set.
    pub tls: Option<Tls>,
    /// Ready messages in a stage queue above which ingest answers 429.
    pub max_backlog: u64,
    /// The dashboard may replay and purge dead letters (else it only
    /// shows them); only to an admin.
    pub allow_actions: bool,
    /// Host names (lower case, without port) the front door answers to
    /// besides its listen address (and `localhost` on loopback): requests
    /// naming any other host are refused, against DNS rebinding.
    pub hosts: Vec<String>,
}

impl Default for Serve {
    fn default() -> Serve {
        Serve {
            tokens: Tokens::default(),
            tls: None,
            max_backlog: 100_000,
            allow_actions: false,
            hosts: Vec::new(),
        }
    }
}

impl Serve {
    /// Whether `token` may be a front door token (from the file or
    /// `WARREN_SERVE_TOKEN`); why not, in words that never repeat it.
    pub fn check_token(token: &str) -> Result<(), &'static str> {
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(
                "must be at least 16 characters, without spaces (use a random one, like `openssl rand -hex 24`)",
            )
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_everything_the_others_only_their_own() {
        for needed in Scope::ALL {
            assert!(Scope::Admin.allows(needed));
        }
        assert!(Scope::Ingest.allows(Scope::Ingest));
        assert!(!Scope::Ingest.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Ingest));
        assert!(!Scope::Read.allows(Scope::Admin));
    }

    #[test]
    fn shared_tokens_are_found_and_none_is_shown() {
        let mut tokens = Tokens {
            ingest: Some("a".repeat(16)),
            read: Some("b".repeat(16)),
            admin: None,
        };
        assert_eq!(tokens.shared(), None);
        assert!(!tokens.is_empty());
        assert_eq!(format!("{tokens:?}"), "Tokens(set for: ingest, read)");
        tokens.admin = Some("a".repeat(16));
        assert_eq!(tokens.shared(), Some((Scope::Ingest, Scope::Admin)));
        assert!(!format!("{tokens:?}").contains("aaaa"));
        assert!(Tokens::default().is_empty());
    }
}
