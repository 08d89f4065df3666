//! Opening a connection to the broker, with a bounded retry and errors that
//! name the host and port but never the password. Used by the worker, the
//! producer and the `warren` binary's commands.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties, ErrorKind};
use tracing::{debug, warn};

use crate::{backoff::Backoff, broker::BrokerUrl, error::Error};

/// Opens one connection, once. `name` shows in the broker's connection
/// list (management UI, `rabbitmqctl list_connections name`).
pub async fn open(url: &BrokerUrl, name: &str) -> Result<Connection, Error> {
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

/// Opens a connection, trying `attempts` times with a short growing pause
/// (from 0.5 s, jittered); a refused login is not retried.
pub async fn open_with_retry(
    url: &BrokerUrl,
    name: &str,
    attempts: u32,
) -> Result<Connection, Error> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        match open(url, name).await {
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
        ErrorKind::ProtocolError(amqp) => {
            let text = amqp.to_string();
            text.contains("ACCESS_REFUSED") || text.contains("access to vhost")
        }
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
