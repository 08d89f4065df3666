//! `warren serve FILE [--listen ADDR]`: the HTTP front door until SIGTERM
//! or SIGINT, then the requests in flight are finished (confirms included)
//! and it exits 0. Without a token it listens on loopback only unless
//! `--listen` says otherwise, and says so.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context as _, Result};
use tracing::warn;

use crate::{exit::Usage, signals};

/// Where it listens unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The token: `WARREN_SERVE_TOKEN`, else `serve.token`.
pub fn token(pipeline: &warren::Pipeline) -> Result<Option<String>> {
    match std::env::var("WARREN_SERVE_TOKEN") {
        Ok(token) => match warren::pipeline::Serve::check_token(&token) {
            Ok(()) => Ok(Some(token)),
            Err(why) => Err(Usage(format!("WARREN_SERVE_TOKEN {why}")).into()),
        },
        Err(_) => Ok(pipeline.serve.token.clone()),
    }
}

/// Binds `listen`, saying when it is reachable without a token.
pub async fn bind(listen: SocketAddr, token: bool) -> Result<tokio::net::TcpListener> {
    if !token {
        if listen.ip().is_loopback() {
            warn!(
                "no serve.token (or WARREN_SERVE_TOKEN): listening on loopback only, without authentication"
            );
        } else {
            warn!("no serve.token (or WARREN_SERVE_TOKEN): {listen} answers anyone who reaches it");
        }
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(file: &Path, listen: Option<SocketAddr>) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    let token = token(&pipeline)?;
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"));
    let listener = bind(listen, token.is_some()).await?;
    let (stop, _reload) = signals::install()?;
    crate::commands::declare::declare(&pipeline).await?;
    warren_serve::serve(pipeline, listener, token, stop).await
}
