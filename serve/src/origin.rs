//! Who may ask (DESIGN.md, *HTTP*: CSRF and DNS-rebinding checks). Two
//! rules, for every route but `/healthz`:
//!
//! - **Host.** A request must name a host this server answers to: its
//!   listen address (any address when it listens on all of them; any
//!   loopback address when it listens on loopback), `localhost` when it
//!   listens on loopback or on all addresses, or a name of `serve.hosts`.
//!   A web page of another site whose name was made to resolve to this
//!   box (DNS rebinding) names its own host, and is refused.
//! - **Origin.** A request that changes something (any method but GET,
//!   HEAD, OPTIONS) sent by a browser must come from one of this server's
//!   own pages: its `Origin` is this server (the scheme it serves, http or
//!   https, with the `Host` it asked for; or a name of `serve.hosts`), and its `Sec-Fetch-Site`, when sent, is
//!   `same-origin`. Without either header it is not a browser's (they send
//!   `Origin` with every POST), unless it is what a page of another site
//!   could send without one: a form or plain text without a bearer token.
//!   (Ingest also takes JSON only, which a page of another site cannot
//!   send at all without this server's consent.)
//!
//! The decision is [`check`], a pure function of the request's method, path
//! and headers.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::Response,
};
use serde_json::json;

use super::{App, ingest::refuse};

/// The hosts this server answers to.
#[derive(Clone, Debug)]
pub struct Hosts {
    listen: IpAddr,
    names: Vec<String>,
    https: bool,
}

impl Hosts {
    /// The hosts of a server listening on `listen`, with the names of
    /// `serve.hosts` (lower case).
    pub fn new(listen: SocketAddr, names: &[String]) -> Hosts {
        Hosts {
            listen: listen.ip(),
            names: names.to_vec(),
            https: false,
        }
    }

    /// The same hosts, served over HTTPS (`serve.tls`): its pages'
    /// origins are `https://`.
    pub fn over_https(self) -> Hosts {
        Hosts {
            https: true,
            ..self
        }
    }

    /// Whether `name` (lower case, without its port) is this server.
    fn allows(&self, name: &str) -> bool {
        if self.names.iter().any(|n| n == name) {
            return true;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']');
        match ip.parse::<IpAddr>() {
            Ok(ip) => {
                self.listen.is_unspecified()
                    || ip == self.listen
                    || (ip.is_loopback() && self.listen.is_loopback())
            }
            // Browsers resolve these names to loopback themselves.
            Err(_) => {
                (self.listen.is_loopback() || self.listen.is_unspecified())
                    && (name == "localhost" || name.ends_with(".localhost"))
            }
        }
    }
}

/// Lets the request through when [`check`] does; else 403 saying why.
pub async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    match check(
        &app.hosts,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(why) => refuse(StatusCode::FORBIDDEN, why, json!({})),
    }
}

/// Whether a request may be served; why not, in words for its sender.
pub fn check(
    hosts: &Hosts,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), String> {
    if path == "/healthz" {
        return Ok(());
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST.as_str()).ok_or("the request names no host (Host header)")?;
    let (name, port) = split_host(host).ok_or_else(|| format!("`{host}` is not a host"))?;
    if !hosts.allows(&name) {
        return Err(format!(
            "this server does not answer to the host `{name}`; if it is reached by that name, add it to serve.hosts"
        ));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        return if same_site(origin, &name, port, hosts) {
            Ok(())
        } else {
            Err(format!(
                "a request from a page of another site ({origin}) may not change anything here"
            ))
        };
    }
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(format!(
            "a request from a page of another site (Sec-Fetch-Site: {site}) may not change anything here"
        ));
    }
    let simple = text(header::CONTENT_TYPE.as_str()).is_none_or(|kind| {
        let kind = kind
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        matches!(
            kind.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        )
    });
    // Other methods need the server's consent (CORS), which it never gives.
    if *method == Method::POST && simple && !headers.contains_key(header::AUTHORIZATION) {
        return Err(
            "a form sent without the Origin of its page may not change anything here (browsers send it; other clients send JSON or a bearer token)"
                .into(),
        );
    }
    Ok(())
}

/// Whether `origin` is this server: the host (and port) the request asked
/// for, or a name of `serve.hosts`.
fn same_site(origin: &str, host: &str, port: Option<u16>, hosts: &Hosts) -> bool {
    let Ok(origin) = url::Url::parse(origin) else {
        return false; // `null` among others
    };
    let Some(name) = origin
        .host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
    else {
        return false;
    };
    if hosts.names.contains(&name) {
        return true;
    }
    let scheme = if hosts.https { "https" } else { "http" };
    let default = if hosts.https { 443 } else { 80 };
    origin.scheme() == scheme
        && name == host
        && origin.port_or_known_default() == Some(port.unwrap_or(default))
}

/// `name` (lower case, without a trailing dot; an IPv6 address in
/// brackets) and port of a `Host` header.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&host[..=end], port)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse().ok()?)),
            None => (host, None),
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    fn loopback() -> Hosts {
        Hosts::new("127.0.0.1:8080".parse().unwrap(), &[])
    }

    fn get(hosts: &Hosts, host: &str) -> Result<(), String> {
        check(hosts, &Method::GET, "/", &request(&[("host", host)]))
    }

    #[test]
    fn only_the_servers_own_hosts_are_answered() {
        let hosts = loopback();
        for fine in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.2",
            "a.localhost:1",
        ] {
            assert_eq!(get(&hosts, fine), Ok(()), "{fine}");
        }
        for rebound in [
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:8080",
            "warren.internal",
        ] {
            assert!(
                get(&hosts, rebound).unwrap_err().contains("serve.hosts"),
                "{rebound}"
            );
        }
        let v6 = Hosts::new("[::1]:8080".parse().unwrap(), &[]);
        assert_eq!(get(&v6, "[::1]:8080"), Ok(()));
        let all = Hosts::new("0.0.0.0:8080".parse().unwrap(), &["warren.internal".into()]);
        assert_eq!(get(&all, "10.1.2.3:8080"), Ok(()));
        assert_eq!(get(&all, "warren.internal:8080"), Ok(()));
        assert_eq!(get(&all, "Warren.Internal.:8080"), Ok(()));
        assert!(get(&all, "evil.example").is_err());
        let one = Hosts::new("10.1.2.3:8080".parse().unwrap(), &[]);
        assert!(get(&one, "localhost:8080").is_err());
        assert!(check(&one, &Method::GET, "/healthz", &HeaderMap::new()).is_ok());
        assert!(check(&one, &Method::GET, "/", &HeaderMap::new()).is_err());
    }

    fn post(hosts: &Hosts, pairs: &[(&str, &str)]) -> Result<(), String> {
        let mut all = vec![("host", "127.0.0.1:8080")];
        all.extend_from_slice(pairs);
        check(hosts, &Method::POST, "/stages/a/dead", &request(&all))
    }

    #[test]
    fn a_change_must_come_from_the_servers_own_page() {
        let hosts = loopback();
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(
            post(&hosts, &[("origin", "http://127.0.0.1:8080"), form]),
            Ok(())
        );
        for other in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "http://localhost:8080",
            "null",
        ] {
            assert!(post(&hosts, &[("origin", other), form]).is_err(), "{other}");
        }
        // No Origin: a form or plain text only with a bearer token; JSON
        // (which another site's page cannot send unasked) as it is.
        assert!(post(&hosts, &[form]).is_err());
        assert!(post(&hosts, &[("content-type", "text/plain")]).is_err());
        assert!(post(&hosts, &[]).is_err());
        let delete = request(&[("host", "127.0.0.1:8080")]);
        assert_eq!(
            check(&hosts, &Method::DELETE, "/v1/jobs/j", &delete),
            Ok(())
        );
        assert_eq!(post(&hosts, &[form, ("authorization", "Bearer t")]), Ok(()));
        assert_eq!(
            post(&hosts, &[("content-type", "application/json")]),
            Ok(())
        );
        assert!(
            post(
                &hosts,
                &[
                    ("content-type", "application/json"),
                    ("sec-fetch-site", "cross-site")
                ]
            )
            .is_err()
        );
        assert_eq!(
            post(
                &hosts,
                &[
                    form,
                    ("sec-fetch-site", "same-origin"),
                    ("authorization", "Bearer t")
                ]
            ),
            Ok(())
        );
        // Behind a proxy that names the upstream: the public name is ours.
        let named = Hosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["warren.example.com".into()],
        );
        assert_eq!(
            post(&named, &[("origin", "https://warren.example.com"), form]),
            Ok(())
        );
        // Over HTTPS its pages' origins are https://, on its port.
        let https = loopback().over_https();
        assert!(post(&https, &[("origin", "http://127.0.0.1:8080"), form]).is_err());
        assert_eq!(
            post(&https, &[("origin", "https://127.0.0.1:8080"), form]),
            Ok(())
        );
        let default = check(
            &https,
            &Method::POST,
            "/jobs/cancel",
            &request(&[("host", "127.0.0.1"), ("origin", "https://127.0.0.1"), form]),
        );
        assert_eq!(default, Ok(()), "443 is https' own port");
    }

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(
            split_host("Example.COM.:80"),
            Some(("example.com".into(), Some(80)))
        );
        assert_eq!(split_host("[::1]:8080"), Some(("[::1]".into(), Some(8080))));
        assert_eq!(split_host("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(split_host("host"), Some(("host".into(), None)));
        assert_eq!(split_host("host:port"), None);
        assert_eq!(split_host(""), None);
    }
}
