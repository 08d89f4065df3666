//! The broker's URLs: each parsed once, displayed without its password;
//! one for a single broker, one per node for a cluster ([`BrokerUrls`]).

use std::fmt;

use lapin::uri::AMQPUri;

/// The URL used when the pipeline file and `AMQP_URL` give none.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Seconds between heartbeats unless the URL says otherwise: short enough to
/// notice a dead network within half a minute.
const DEFAULT_HEARTBEAT: u16 = 10;

/// Milliseconds allowed for the TCP connection unless the URL says otherwise.
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Largest frame unless the URL says otherwise. The AMQP client keeps a
/// receive and a send buffer of 32 frames each, so RabbitMQ's default of
/// 128 KiB would cost 8 MiB per connection; larger messages simply travel
/// in more frames.
const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// An AMQP URL. `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    uri: AMQPUri,
    redacted: String,
}

impl BrokerUrl {
    /// Parses an `amqp://` or `amqps://` URL. The error never repeats the
    /// password.
    pub fn parse(text: &str) -> Result<BrokerUrl, String> {
        let text = text.trim();
        let redacted = redact(text);
        if !(text.starts_with("amqp://") || text.starts_with("amqps://")) {
            return Err(format!(
                "`{redacted}` is not an AMQP URL; write it like amqp://user:password@host:5672/vhost"
            ));
        }
        let mut uri: AMQPUri = text.parse().map_err(|error: String| {
            let error = error.replace(text, &redacted);
            format!("`{redacted}` is not a valid AMQP URL: {error}")
        })?;
        // The URI parser does not understand bracketed IPv6 hosts.
        if let Some(host) = bracketed_host(text) {
            uri.authority.host = host;
        }
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(DEFAULT_HEARTBEAT);
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(DEFAULT_CONNECT_TIMEOUT_MS);
        }
        if uri.query.frame_max.is_none() {
            uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
        }
        Ok(BrokerUrl { uri, redacted })
    }

    /// The broker host.
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// The broker port.
    pub fn port(&self) -> u16 {
        self.uri.authority.port
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// True for `amqps://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == lapin::uri::AMQPScheme::AMQPS
    }

    /// The password, if the URL has one (for the management HTTP API).
    pub fn password(&self) -> &str {
        &self.uri.authority.userinfo.password
    }

    /// The parsed URI, for connecting.
    pub(crate) fn uri(&self) -> AMQPUri {
        self.uri.clone()
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.redacted)
    }
}

/// The nodes of the broker: one URL, or one per node of a cluster, in the
/// order the file gives them. Connections try them from a random one on
/// (so the processes of many boxes spread over the nodes) and take the
/// first that answers.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls {
    urls: Vec<BrokerUrl>,
}

impl BrokerUrls {
    /// The nodes `urls`; `None` if there are none.
    pub fn new(urls: Vec<BrokerUrl>) -> Option<BrokerUrls> {
        (!urls.is_empty()).then_some(BrokerUrls { urls })
    }

    /// Parses one URL, or several separated by commas (as `AMQP_URL`
    /// holds them); the error names the one that failed by its place.
    pub fn parse(text: &str) -> Result<BrokerUrls, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let mut urls = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            match BrokerUrl::parse(part) {
                Ok(url) => urls.push(url),
                Err(error) if parts.len() == 1 => return Err(error),
                Err(error) => return Err(format!("URL {} of {}: {error}", index + 1, parts.len())),
            }
        }
        Ok(BrokerUrls { urls })
    }

    /// The first node, as written.
    pub fn first(&self) -> &BrokerUrl {
        &self.urls[0]
    }

    /// Every node, as written.
    pub fn all(&self) -> &[BrokerUrl] {
        &self.urls
    }

    /// Every node, from a random one on, then round the list: where a
    /// connection tries them.
    pub fn from_random(&self) -> impl Iterator<Item = &BrokerUrl> {
        let start = fastrand::usize(..self.urls.len());
        self.urls.iter().cycle().skip(start).take(self.urls.len())
    }

    /// `host:port` of every node, separated by commas.
    pub fn addresses(&self) -> String {
        let addresses: Vec<String> = self.urls.iter().map(BrokerUrl::address).collect();
        addresses.join(", ")
    }
}

impl From<BrokerUrl> for BrokerUrls {
    fn from(url: BrokerUrl) -> BrokerUrls {
        BrokerUrls { urls: vec![url] }
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self.urls.iter().map(|u| u.redacted.as_str()).collect();
        f.write_str(&shown.join(","))
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrls({self})")
    }
}

/// The URL with the password replaced by `***`.
pub fn redact(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &text[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => text.to_string(),
    }
}

fn bracketed_host(text: &str) -> Option<String> {
    let rest = &text[text.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = &authority[authority.rfind('@').map_or(0, |at| at + 1)..];
    let inner = host.strip_prefix('[')?;
    Some(inner[..inner.find(']')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_password() {
        let url = BrokerUrl::parse("amqp://app:s3cr%2Ft@rabbit.internal:5673/prod").unwrap();
        assert_eq!(url.to_string(), "amqp://app:***@rabbit.internal:5673/prod");
        assert!(!format!("{url:?}").contains("s3cr"));
        assert_eq!(url.address(), "rabbit.internal:5673");
        assert_eq!(url.password(), "s3cr/t");
        assert_eq!(url.vhost(), "prod");
    }

    #[test]
    fn parse_errors_do_not_echo_the_password() {
        let error = BrokerUrl::parse("amqp://app:hunter2@host:notaport/").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        let error = BrokerUrl::parse("http://app:hunter2@host/").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("not an AMQP URL"));
    }

    #[test]
    fn defaults_heartbeat_and_keeps_ipv6_hosts() {
        let url = BrokerUrl::parse("amqp://u:p@[::1]:5672/%2f").unwrap();
        assert_eq!(url.host(), "::1");
        assert_eq!(url.uri().query.heartbeat, Some(10));
        let url = BrokerUrl::parse("amqp://127.0.0.1?heartbeat=30").unwrap();
        assert_eq!(url.uri().query.heartbeat, Some(30));
        assert_eq!(url.to_string(), "amqp://127.0.0.1?heartbeat=30");
    }

    #[test]
    fn several_urls_are_tried_from_a_random_one_round_the_list() {
        let urls =
            BrokerUrls::parse("amqp://u:pw@a:1/%2f, amqp://u:pw@b:2/%2f,amqp://u:pw@c:3/%2f")
                .unwrap();
        assert_eq!(urls.addresses(), "a:1, b:2, c:3");
        assert!(!format!("{urls} {urls:?}").contains("pw"));
        let mut starts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let order: Vec<String> = urls.from_random().map(BrokerUrl::address).collect();
            assert_eq!(order.len(), 3);
            let at = ["a:1", "b:2", "c:3"]
                .iter()
                .position(|a| *a == order[0])
                .unwrap();
            for (i, address) in order.iter().enumerate() {
                assert_eq!(address, ["a:1", "b:2", "c:3"][(at + i) % 3]);
            }
            starts.insert(order[0].clone());
        }
        assert_eq!(starts.len(), 3, "every node comes first sometimes");
        let error = BrokerUrls::parse("amqp://u:pw@a:1/%2f,http://u:pw@b/").unwrap_err();
        assert!(error.starts_with("URL 2 of 2:"), "{error}");
        assert!(!error.contains("pw@"), "{error}");
    }
}
