//! SIGHUP: the pipeline file read again and applied stage by stage: new
//! stages start, removed ones drain, a stage whose workers would run
//! something else has them replaced, and a changed scale applies at once.

use std::time::Instant;

use tracing::{error, info};
use warren::Pipeline;

use super::{Pool, Supervisor, process::Launch};

impl Supervisor {
    /// SIGHUP: re-read the file; apply it if it is valid.
    pub(super) async fn reload(&mut self) {
        let new = match warren::config::load(&self.file) {
            Ok(new) => new,
            Err(invalid) => {
                error!(
                    "SIGHUP: the file is invalid, keeping the running configuration.\n{invalid}"
                );
                return;
            }
        };
        if new.name != self.pipeline.name {
            error!(
                "SIGHUP: the pipeline is now named `{}`; a supervisor serves one pipeline, restart it instead",
                new.name
            );
            return;
        }
        let now = Instant::now();
        let wanted: Vec<&warren::Stage> = selected(&new, self.options.stages.as_deref());
        for stage in &wanted {
            let launch = match Launch::of(stage, &self.file) {
                Ok(launch) => launch,
                Err(error) => {
                    error!("SIGHUP: {error}");
                    return;
                }
            };
            match self
                .pools
                .iter_mut()
                .find(|p| p.stage.name == stage.name && !p.retiring)
            {
                Some(pool) => {
                    let changed = pool.update((*stage).clone(), launch);
                    pool.refresh_files(self.file.parent().unwrap_or(std::path::Path::new("/")));
                    if changed {
                        info!(stage = %stage.name, "settings changed: replacing its workers");
                        pool.drain_all(now);
                    }
                }
                None => {
                    info!(stage = %stage.name, "new stage");
                    self.pools.push(Pool::new(
                        (*stage).clone(),
                        launch,
                        self.options.rules,
                        self.epoch,
                        self.file.parent().unwrap_or(std::path::Path::new("/")),
                    ));
                }
            }
        }
        for pool in &mut self.pools {
            if !wanted.iter().any(|s| s.name == pool.stage.name) && !pool.retiring {
                info!(stage = %pool.stage.name, "removed from the file: draining its workers");
                pool.retiring = true;
                pool.drain_all(now);
            }
        }
        self.pipeline = new;
        self.declared = false;
        info!("SIGHUP: reloaded {}", self.file.display());
    }
}

/// The stages of `pipeline`, limited to `only` when given.
pub(super) fn selected<'a>(
    pipeline: &'a Pipeline,
    only: Option<&[String]>,
) -> Vec<&'a warren::Stage> {
    pipeline
        .stages
        .iter()
        .filter(|s| only.is_none_or(|only| only.contains(&s.name)))
        .collect()
}
