//! `warren declare FILE [--dry-run]`.

use std::path::Path;

use anyhow::Result;
use warren::{Topology, connection, topology::Declared};

/// Connection attempts before the broker counts as unreachable.
pub const CONNECT_ATTEMPTS: u32 = 3;

/// Declares the pipeline's objects, or prints them with `dry_run`.
pub async fn run(file: &Path, dry_run: bool) -> Result<()> {
    let pipeline = warren::config::load(file)?;
    if dry_run {
        let topology = Topology::plan(&pipeline);
        out!(
            "pipeline `{}` on {} would declare:",
            pipeline.name,
            pipeline.broker.urls
        );
        for line in topology.describe() {
            out!("  {line}");
        }
        return Ok(());
    }
    // A PostgreSQL sink's table first: a mismatch declares nothing.
    for note in crate::builtin::postgres::live::verify(&pipeline, file).await? {
        out!("note: {note}");
    }
    let (topology, declared) = declare(&pipeline).await?;
    let levels = topology
        .queues
        .iter()
        .filter(|q| matches!(q.role, warren::topology::Role::Delay(_)))
        .count();
    out!(
        "declared pipeline `{}` on {}: exchange {} and {} queues, and the delay cascade ({levels} levels)",
        pipeline.name,
        pipeline.broker.urls,
        topology.exchange,
        topology.queues.len() - levels
    );
    for queue in &declared.without_limit {
        out!("note: {}", Declared::explain(queue));
    }
    Ok(())
}

/// Declares the pipeline's topology and returns it with what the broker
/// had: `warren declare`, and `send` and `run` before they send, so what
/// they send has queues.
pub async fn declare(pipeline: &warren::Pipeline) -> Result<(Topology, Declared)> {
    let name = format!("warren {}", pipeline.name);
    let conn = connection::open_with_retry(&pipeline.broker.urls, &name, CONNECT_ATTEMPTS).await?;
    let topology = Topology::plan(pipeline);
    let declared = topology.declare(&conn).await;
    connection::close(&conn, "done").await;
    Ok((topology, declared?))
}
