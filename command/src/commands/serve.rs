//! `warren serve FILE [--listen ADDR]`: the HTTP front door until SIGTERM
//! or SIGINT, then the requests in flight are finished (confirms included)
//! and it exits 0. Without a token it listens on loopback only unless
//! `--listen` says otherwise, and says so; with tokens but without TLS on
//! an address beyond loopback, it warns that they cross the network in
//! clear text.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context as _, Result};
use tracing::warn;
use warren::pipeline::{Serve, Tokens};

use crate::{exit::Usage, signals};

/// Where it listens unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The tokens by scope: the file's, with `WARREN_SERVE_TOKEN` as the admin
/// token when set.
pub fn tokens(pipeline: &warren::Pipeline) -> Result<Tokens> {
    let mut tokens = pipeline.serve.tokens.clone();
    if let Ok(token) = std::env::var("WARREN_SERVE_TOKEN") {
        Serve::check_token(&token).map_err(|why| Usage(format!("WARREN_SERVE_TOKEN {why}")))?;
        tokens.admin = Some(token);
        if let Some((scope, _)) = tokens.shared() {
            return Err(Usage(format!(
                "WARREN_SERVE_TOKEN (the admin token) is the same token as serve.tokens.{scope}; each scope needs its own token"
            ))
            .into());
        }
    }
    Ok(tokens)
}

/// Who may ask and over what: the tokens, and the TLS files read now (an
/// unreadable or wrong file stops the start, naming its field and path).
pub fn door(pipeline: &warren::Pipeline) -> Result<warren_serve::Door> {
    let tls = match &pipeline.serve.tls {
        Some(tls) => Some(warren_serve::tls::load(tls)?),
        None => None,
    };
    Ok(warren_serve::Door {
        access: warren_serve::access::Access::new(tokens(pipeline)?),
        tls,
    })
}

/// Binds `listen`, saying when it is reachable without a token, or its
/// tokens travel in clear text.
pub async fn bind(
    listen: SocketAddr,
    door: &warren_serve::Door,
) -> Result<tokio::net::TcpListener> {
    let loopback = listen.ip().is_loopback();
    if door.access.is_open() {
        if loopback {
            warn!(
                "no serve.token or serve.tokens (or WARREN_SERVE_TOKEN): listening on loopback only, without authentication"
            );
        } else {
            warn!(
                "no serve.token or serve.tokens (or WARREN_SERVE_TOKEN): {listen} answers anyone who reaches it"
            );
        }
    } else if door.tls.is_none() && !loopback {
        warn!(
            "no serve.tls: the tokens cross the network to {listen} in clear text; serve HTTPS (serve.tls) or put a TLS proxy in front"
        );
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(file: &Path, listen: Option<SocketAddr>) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    let door = door(&pipeline)?;
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"));
    let listener = bind(listen, &door).await?;
    let (stop, _reload) = signals::install()?;
    crate::commands::declare::declare(&pipeline).await?;
    warren_serve::serve(pipeline, listener, door, stop).await
}
