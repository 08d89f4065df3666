//! The fanout3 worker: `expand` turns each seed into F parts, `work` hashes
//! each part. The sink stage is built into `warren`.
//!
//! Run it through the pipeline: `warren run examples/fanout3/pipeline.yaml ...`
//! (see this folder's README).

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use warren::{Context, Outcome, Worker};

/// A seed: `{"id": 7, "body": "xxxx..."}`.
#[derive(Deserialize)]
struct Seed {
    id: u64,
    body: String,
}

/// One part of a seed.
#[derive(Serialize, Deserialize)]
struct Part {
    id: u64,
    part: u32,
    body: String,
}

/// The digest of a part.
#[derive(Serialize)]
struct Digest {
    id: u64,
    part: u32,
    digest: String,
}

/// Parts per seed: `FANOUT`, 10 by default.
fn fanout() -> u32 {
    std::env::var("FANOUT")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(10)
}

async fn expand(seed: Seed, ctx: Context) -> Outcome {
    for part in 0..fanout() {
        ctx.emit(&Part {
            id: seed.id,
            part,
            body: seed.body.clone(),
        })
        .await?;
    }
    Ok(())
}

async fn work(part: Part, ctx: Context) -> Outcome {
    let json = serde_json::to_vec(&part)?;
    let digest = format!("{:x}", Sha256::digest(&json));
    ctx.emit(&Digest {
        id: part.id,
        part: part.part,
        digest,
    })
    .await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    warren::logging::init(false);
    Worker::new()
        .stage("expand", expand)
        .stage("work", work)
        .serve()
        .await
}
