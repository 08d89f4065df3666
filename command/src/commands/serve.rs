//! `warren serve FILE [--listen ADDR]`: the HTTP front door until SIGTERM
//! or SIGINT, then the requests in flight are finished (confirms included)
//! and it exits 0. Without a token it listens on loopback only unless
//! `--listen` says otherwise, and says so; with tokens but without TLS on
//! an address beyond loopback, it warns that they cross the network in
//! clear text.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

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

/// Serves the pipelines of `files` (files, or folders of them) until
/// SIGTERM or SIGINT.
pub async fn run(files: &[PathBuf], listen: Option<SocketAddr>) -> Result<()> {
    let pipelines = load_all(files)?;
    let door = door(&pipelines[0])?;
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"));
    let listener = bind(listen, &door).await?;
    let (stop, _reload) = signals::install()?;
    for pipeline in &pipelines {
        crate::commands::declare::declare(pipeline).await?;
    }
    warren_serve::serve_all(pipelines, listener, door, stop).await
}

/// The pipelines of `files`: each file, and in each folder every
/// `*.yaml`/`*.yml` file and every `*/pipeline.yaml`, in name order. Two
/// pipelines of the same name are refused; the door (`serve.token`,
/// `serve.tokens`, `serve.tls`, `serve.hosts`) is the first file's, and a
/// later file sets none or the same.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<warren::Pipeline>> {
    let mut paths = Vec::new();
    for file in files {
        if file.is_dir() {
            paths.extend(in_folder(file)?);
        } else {
            paths.push(file.clone());
        }
    }
    let mut pipelines: Vec<(PathBuf, warren::Pipeline)> = Vec::new();
    for path in paths {
        let pipeline = warren::config::load(&path)?;
        if let Some((first, door)) = pipelines.first() {
            if let Some((other, _)) = pipelines.iter().find(|(_, p)| p.name == pipeline.name) {
                return Err(Usage(format!(
                    "{} and {} are both pipeline `{}`: one server serves a pipeline once",
                    other.display(),
                    path.display(),
                    pipeline.name
                ))
                .into());
            }
            let (ours, theirs) = (&pipeline.serve, &door.serve);
            let unset =
                ours.tokens == Tokens::default() && ours.tls.is_none() && ours.hosts.is_empty();
            let same = ours.tokens == theirs.tokens
                && ours.tls == theirs.tls
                && ours.hosts == theirs.hosts;
            if !unset && !same {
                return Err(Usage(format!(
                    "{}: its serve.token(s), serve.tls or serve.hosts differ from {}'s; one server has one door: set them in the first file only, or the same in each",
                    path.display(),
                    first.display()
                ))
                .into());
            }
        }
        pipelines.push((path, pipeline));
    }
    if pipelines.is_empty() {
        return Err(Usage(format!(
            "no pipeline file (*.yaml, *.yml, */pipeline.yaml) in {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    Ok(pipelines.into_iter().map(|(_, p)| p).collect())
}

/// The pipeline files of `folder`, in name order.
fn in_folder(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(folder).with_context(|| format!("reading {}", folder.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", folder.display()))?
            .path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if path.is_file() && yaml {
            found.push(path);
        } else if path.join("pipeline.yaml").is_file() {
            found.push(path.join("pipeline.yaml"));
        }
    }
    found.sort();
    Ok(found)
}
