//! Opening a connection to the broker, with a bounded retry and errors that
//! name the host and port but never the password. With several nodes (a
//! cluster) it tries them from a random one on and takes the first that
//! answers, so a lost node costs a reconnection, not the box. Used by the
//! worker, the producer and the `warren` binary's commands.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties, ErrorKind};
use tracing::{debug, warn};

use crate::{
    backoff::Backoff,
    broker::{BrokerUrl, BrokerUrls},
    error::Error,
};

/// Opens one connection to the first node that answers, trying each once
/// from a random one on. `name` shows in the broker's connection list
/// (management UI, `rabbitmqctl list_connections name`). A refused login
/// is not tried on the other nodes: they share their users.
pub async fn open(urls: &BrokerUrls, name: &str) -> Result<Connection, Error> {
    let mut failures = Vec::new();
    for url in urls.from_random() {
        match open_node(url, name).await {
            Ok(connection) => return Ok(connection),
            Err(error @ Error::LoginRefused { .. }) => return Err(error),
            Err(error) if urls.all().len() == 1 => return Err(error),
            Err(error) => {
                debug!(%error, "node not reachable; trying the next");
                failures.push(match error {
                    Error::Unreachable { address, reason } => format!("{address}: {reason}"),
                    other => other.to_string(),
                });
            }
        }
    }
    Err(Error::Unreachable {
        address: urls.addresses(),
        reason: format!("no node answered ({})", failures.join("; ")),
    })
}

/// Opens one connection to one node, once.
async fn open_node(url: &BrokerUrl, name: &str) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let timeout =
        Duration::from_millis(url.uri().query.connection_timeout.unwrap_or(5_000) + 1_000);
    debug!(broker = %url, name, "connecting");
    match tokio::time::timeout(timeout, Connection::connect_uri(url.uri(), properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(classify(url, &error)),
        Err(_) => Err(Error::Unreachable {
            address: url.address(),
            reason: format!("no answer within {}s", timeout.as_secs()),
        }),
    }
}

/// How long closing a connection may wait for the broker's answer: a
/// broker cut off without a reset (packets dropped) never answers, and
/// nobody should wait for it before reconnecting elsewhere or exiting.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Closes `connection` saying `why`, waiting at most 1 s for the broker's
/// answer (a broker cut off without a reset never answers).
pub async fn close(connection: &Connection, why: &str) {
    let _ = tokio::time::timeout(CLOSE_WITHIN, connection.close(200, why.into())).await;
}

/// Opens a connection, trying `attempts` times with a short growing pause
/// (from 0.5 s, jittered); a refused login is not retried.
pub async fn open_with_retry(
    urls: &BrokerUrls,
    name: &str,
    attempts: u32,
) -> Result<Connection, Error> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        match open(urls, name).await {
            Ok(connection) => return Ok(connection),
            Err(error @ Error::LoginRefused { .. }) => return Err(error),
            Err(error) if attempt >= attempts => return Err(error),
            Err(error) => {
                let pause = backoff.next_delay();
                warn!(%error, attempt, "broker not reachable yet; retrying in {}ms", pause.as_millis());
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        }
    }
}

/// Turns a client error at connection time into a warren error.
fn classify(url: &BrokerUrl, error: &lapin::Error) -> Error {
    let refused_login = match error.kind() {
        ErrorKind::ProtocolError(amqp) => refuses_login(&amqp.to_string()),
        _ => false,
    };
    if refused_login {
        return Error::LoginRefused {
            address: url.address(),
            user: url.user().to_string(),
        };
    }
    let reason = match error.kind() {
        ErrorKind::IOError(io) => io.to_string(),
        _ => error.to_string(),
    };
    Error::Unreachable {
        address: url.address(),
        reason: crate::broker::redact(&reason),
    }
}

/// Whether the broker's answer to a connection (`text`, with its reply
/// code's name) refuses this user for good: a wrong password, or no
/// permission on the vhost. Other nodes share their users, so they are not
/// tried. RabbitMQ words two passing conditions the same way, with a
/// reason after them, and those are not refusals: the next node is tried,
/// or the same one again later.
///
/// - `INTERNAL_ERROR - access to vhost '/' refused for user 'u': vhost '/'
///   is down` (the node is starting or restarting);
/// - `NOT_ALLOWED - access to vhost '/' refused for user 'u': connection
///   limit (N) is reached`.
fn refuses_login(text: &str) -> bool {
    if text.contains("ACCESS_REFUSED") {
        return true;
    }
    text.contains("access to vhost") && !text.contains("is down") && !text.contains("limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vhost_that_is_down_is_not_a_refused_login() {
        // What lapin shows for RabbitMQ 3.10's answers (rabbit_reader).
        let refused = [
            "AMQP soft error: ACCESS_REFUSED: ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            "AMQP hard error: NOT_ALLOWED: NOT_ALLOWED - access to vhost 'prod' refused for user 'app'",
        ];
        for text in refused {
            assert!(refuses_login(text), "{text}");
        }
        let passing = [
            "AMQP hard error: INTERNAL_ERROR: INTERNAL_ERROR - access to vhost '/' refused for user 'guest': vhost '/' is down",
            "AMQP hard error: NOT_ALLOWED: NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (10) is reached",
            "AMQP hard error: CONNECTION_FORCED: CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
        ];
        for text in passing {
            assert!(!refuses_login(text), "{text}");
        }
    }
}
