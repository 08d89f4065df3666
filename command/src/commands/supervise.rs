//! `warren supervise FILE [--stages a,b] [--http ADDR]`.

use std::{path::Path, time::Duration};

use anyhow::Result;

use crate::{
    exit::Usage,
    signals,
    supervise::{Options, Supervisor},
};

/// Supervises the pipeline's workers until SIGTERM or SIGINT.
pub async fn run(
    file: &Path,
    stages: Option<Vec<String>>,
    poll: Duration,
    json_logs: bool,
    http: Option<std::net::SocketAddr>,
) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if let Some(stages) = &stages {
        for stage in stages {
            if let Err(unknown) = pipeline.require_stage(stage) {
                return Err(Usage(format!("--stages: {unknown}")).into());
            }
        }
    }
    let (stop, reload) = signals::install()?;
    let options = Options {
        stages,
        poll,
        json_logs,
        ..Options::default()
    };
    // The HTTP routes stop with the supervisor, once its workers drained.
    let http_stop = tokio_util::sync::CancellationToken::new();
    let server = match http {
        Some(listen) => {
            let door = crate::commands::serve::door(&pipeline)?;
            let listener = crate::commands::serve::bind(listen, &door).await?;
            // The routes read the job stream and the queues: declared first.
            crate::commands::declare::declare(&pipeline).await?;
            let served = warren_serve::serve(pipeline.clone(), listener, door, http_stop.clone());
            Some(tokio::spawn(served))
        }
        None => None,
    };
    let supervised = Supervisor::new(file, pipeline, options)?
        .run(stop, reload)
        .await;
    http_stop.cancel();
    if let Some(server) = server {
        server.await??;
    }
    supervised
}
