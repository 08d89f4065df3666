//! `--health ADDR` (or `WARREN_HEALTH=ADDR`): a tiny HTTP/1.1 endpoint for
//! a platform's probes. `GET /healthz` is 200 while the process runs;
//! `GET /readyz` is 200 while the worker is connected to the broker and
//! consumes every stage it serves, 503 otherwise. One request per
//! connection; nothing else is served.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::stage::StageRuntime;
use crate::error::Error;

/// The environment variable with the address to serve the probes on, when
/// the program does not set one with [`super::Worker::health`].
pub const HEALTH_ENV: &str = "WARREN_HEALTH";

/// Longest a probe may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read.
const MAX_HEAD: usize = 8192;

/// Listens on `addr`; the error names the address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Setup(format!(
            "the health address {addr} (--health or {HEALTH_ENV}): cannot listen there: {e}"
        ))
    })
}

/// Answers probes on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, stages: Arc<Vec<Arc<StageRuntime>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let stages = stages.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &stages)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, stages: &[Arc<StageRuntime>]) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let ready = !stages.is_empty()
        && stages
            .iter()
            .all(|s| s.stats.consuming.load(Ordering::Relaxed));
    let (status, body) = respond(line, ready);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The status line and body for a request line, given whether the worker
/// is ready.
fn respond(request_line: &str, ready: bool) -> (&'static str, &'static str) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return ("405 Method Not Allowed", "only GET\n");
    }
    match path {
        "/healthz" => ("200 OK", "ok\n"),
        "/readyz" if ready => ("200 OK", "ready: connected and consuming\n"),
        "/readyz" => (
            "503 Service Unavailable",
            "not ready: not connected to the broker or not consuming\n",
        ),
        _ => ("404 Not Found", "not found: try /healthz or /readyz\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::{bind, respond};

    #[tokio::test]
    async fn an_address_in_use_is_named_with_both_ways_to_set_it() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind(addr).await.unwrap_err().to_string();
        assert!(
            error.contains(&addr.to_string())
                && error.contains("--health")
                && error.contains("WARREN_HEALTH")
                && error.contains("cannot listen there"),
            "{error}"
        );
    }

    #[test]
    fn probes_answer_by_path_and_readiness() {
        assert_eq!(respond("GET /healthz HTTP/1.1", false).0, "200 OK");
        assert_eq!(respond("GET /healthz HTTP/1.1", true).0, "200 OK");
        assert_eq!(respond("GET /readyz HTTP/1.1", true).0, "200 OK");
        assert_eq!(
            respond("GET /readyz?verbose HTTP/1.1", false).0,
            "503 Service Unavailable"
        );
        assert_eq!(respond("GET / HTTP/1.1", true).0, "404 Not Found");
        assert_eq!(
            respond("POST /healthz HTTP/1.1", true).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", true).0, "405 Method Not Allowed");
    }
}
