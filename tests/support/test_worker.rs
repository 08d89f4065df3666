//! A worker for the integration tests, driven by the fields of each message:
//!
//! - `sleep_ms`: take this long;
//! - `fail_until`: fail while the attempt number is below it;
//! - `panic`: panic;
//! - `abort`: end the whole process at once (`std::process::abort`), as a
//!   crash that no `catch_unwind` catches;
//! - `dead`: fail for good (dead-letter);
//! - `children`: emit this many children (without `children`), else emit
//!   the message itself to the outputs, if the stage has any.
//!
//! Every handled message appends `{stage} {id} {attempt}` to the file named
//! by `WARREN_TEST_RECORD` (one write per line, so several processes can
//! share it). The stage names to serve are the program's arguments.

use std::{io::Write, process::ExitCode, time::Duration};

use serde::{Deserialize, Serialize};
use warren::{Context, Failure, Outcome, Worker};

#[derive(Clone, Default, Deserialize, Serialize)]
struct Job {
    #[serde(default)]
    n: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    sleep_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero32")]
    fail_until: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    panic: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    abort: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dead: bool,
    #[serde(default, skip_serializing_if = "is_zero32")]
    children: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

async fn step(job: Job, ctx: Context) -> Outcome {
    if job.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    }
    if job.panic {
        panic!("asked to panic");
    }
    if job.abort {
        std::process::abort();
    }
    if job.dead {
        return Err(Failure::dead("asked to fail for good"));
    }
    if ctx.attempt() < job.fail_until {
        return Err(Failure::retry(format!(
            "failing attempt {} on purpose",
            ctx.attempt()
        )));
    }
    if let Ok(path) = std::env::var("WARREN_TEST_RECORD") {
        let line = format!("{} {} {}\n", ctx.stage(), ctx.id(), ctx.attempt());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(line.as_bytes())?;
    }
    if job.children > 0 {
        for n in 0..job.children {
            ctx.emit(&Job {
                n: n.into(),
                children: 0,
                ..job.clone()
            })
            .await?;
        }
    } else if ctx.emit(&job).await.is_err() {
        // A stage without outputs: nothing to pass on.
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    warren::logging::init(false);
    let mut worker = Worker::new();
    for stage in std::env::args().skip(1) {
        worker = worker.stage(&stage, step);
    }
    worker.serve().await
}
