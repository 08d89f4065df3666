//! A stage's dead-letter queue: look at it, send its messages back to the
//! stage, or drop them.
//!
//! Looking never costs a dead letter, and never reorders them: `pass.rs`
//! says how messages that are looked at but not taken stay in place, also
//! on a queue whose delivery limit could drop them. A listing
//! holds the start of each body ([`BODY_LISTED`] bytes); [`find`] gives
//! one message whole.

pub(crate) mod letter;

use lapin::options::QueuePurgeOptions;

use crate::{
    connection,
    error::Error,
    message,
    pass::{self, Pass},
    pipeline::Pipeline,
    publisher::Publisher,
    topology::Topology,
};

pub use letter::{BODY_LISTED, DeadLetter};

/// How many dead letters `stage` has.
pub async fn count(pipeline: &Pipeline, stage: &str) -> Result<u32, Error> {
    pipeline.require_stage(stage)?;
    Ok(depths(pipeline, &[stage]).await?[0])
}

/// How many dead letters each stage of the pipeline has.
pub async fn counts(pipeline: &Pipeline) -> Result<std::collections::HashMap<String, u32>, Error> {
    let stages: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    let depths = depths(pipeline, &stages).await?;
    Ok(stages.iter().map(|s| s.to_string()).zip(depths).collect())
}

/// The depths of the dead-letter queues of `stages`, on one connection.
async fn depths(pipeline: &Pipeline, stages: &[&str]) -> Result<Vec<u32>, Error> {
    let name = format!("warren dlq {}", pipeline.name);
    let conn = connection::open_with_retry(&pipeline.broker.urls, &name, 3).await?;
    let counted = async {
        let channel = pass::open_channel(&conn).await?;
        let mut depths = Vec::with_capacity(stages.len());
        for stage in stages {
            let queue = crate::names::dead_queue(&pipeline.name, stage);
            depths.push(pass::depth(&channel, &queue).await?);
        }
        Ok(depths)
    }
    .await;
    connection::close(&conn, "done").await;
    counted
}

/// The first `limit` dead letters of `stage`, in queue order, each with
/// the start of its body; they stay in the queue, in their order.
pub async fn list(
    pipeline: &Pipeline,
    stage: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, Error> {
    let pass = dead_pass(pipeline, stage).await?;
    let mut out = Vec::new();
    pass.look(limit, |got| {
        out.push(letter::describe(&got.properties, &got.data, true))
    })
    .await?;
    Ok(out)
}

/// A pass over `stage`'s dead-letter queue (checking the stage exists).
async fn dead_pass(pipeline: &Pipeline, stage: &str) -> Result<Pass, Error> {
    pipeline.require_stage(stage)?;
    let topology = Topology::plan(pipeline);
    let queue = topology
        .dead_queue(stage)
        .expect("every stage has a dead-letter queue");
    Pass::open(pipeline, queue, true).await
}

/// The first dead letter of `stage` with message id `id`, whole; it stays
/// in the queue, in its place.
pub async fn find(pipeline: &Pipeline, stage: &str, id: &str) -> Result<Option<DeadLetter>, Error> {
    let mut pass = dead_pass(pipeline, stage).await?;
    let mut found = None;
    let walked: Result<(), Error> = async {
        while let Some(got) = pass.next().await? {
            let hit = message::id_of(&got.delivery.properties) == Some(id);
            if hit {
                found = Some(letter::describe(
                    &got.delivery.properties,
                    &got.delivery.data,
                    false,
                ));
            }
            pass.keep(&got).await?;
            if hit {
                break;
            }
        }
        Ok(())
    }
    .await;
    match walked {
        Ok(()) => {
            pass.finish().await?;
            Ok(found)
        }
        Err(error) => {
            pass.close().await;
            Err(error)
        }
    }
}

/// Sends up to `limit` dead letters back to `stage` as new first attempts;
/// each leaves the dead-letter queue only after the broker confirmed it
/// in the stage queue. Only what the queue held when the replay started is
/// replayed: messages dead-lettered again meanwhile (by workers running now)
/// stay, instead of going round for ever. Returns how many were sent.
pub async fn replay(pipeline: &Pipeline, stage: &str, limit: usize) -> Result<usize, Error> {
    replay_matching(pipeline, stage, limit, |_| true).await
}

/// [`replay`] of the dead letters `chosen` picks (the others stay, in
/// their order).
pub async fn replay_matching(
    pipeline: &Pipeline,
    stage: &str,
    limit: usize,
    chosen: impl Fn(&DeadLetter) -> bool,
) -> Result<usize, Error> {
    let mut pass = dead_pass(pipeline, stage).await?;
    let publisher = match Publisher::open(pass.connection()).await {
        Ok(publisher) => publisher,
        Err(error) => {
            pass.close().await;
            return Err(error);
        }
    };
    let mut sent = 0;
    let walked: Result<(), Error> = async {
        while sent < limit {
            let Some(got) = pass.next().await? else {
                break;
            };
            let letter = letter::describe(&got.delivery.properties, &got.delivery.data, true);
            if !chosen(&letter) {
                pass.keep(&got).await?;
                continue;
            }
            let props = message::republish_properties(
                &got.delivery.properties,
                &[(message::ATTEMPT, message::int(1))],
                &[message::ERROR, message::STAGE, message::NOT_BEFORE],
            );
            publisher
                .publish_before_ack(&pipeline.name, stage, &got.delivery.data, props)
                .await?;
            pass.take(&got).await?;
            sent += 1;
        }
        Ok(())
    }
    .await;
    publisher.close().await;
    match walked {
        Ok(()) => pass.finish().await?,
        // What was not replayed goes back to the queue.
        Err(error) => {
            pass.close().await;
            return Err(error);
        }
    }
    Ok(sent)
}

/// Drops up to `limit` dead letters of `stage` (all when `None`); returns
/// how many.
pub async fn purge(pipeline: &Pipeline, stage: &str, limit: Option<usize>) -> Result<usize, Error> {
    let Some(limit) = limit else {
        let pass = dead_pass(pipeline, stage).await?;
        let purged = pass
            .channel()
            .queue_purge(pass.queue().into(), QueuePurgeOptions::default())
            .await
            .map(|n| n as usize)
            .map_err(|e| Error::broker(format!("purge {}", pass.queue()), e));
        pass.close().await;
        return purged;
    };
    purge_where(pipeline, stage, limit, |_| true).await
}

/// Drops the dead letters of `stage` that `chosen` picks (looking at what
/// the queue held when it started); returns how many.
pub async fn purge_matching(
    pipeline: &Pipeline,
    stage: &str,
    chosen: impl Fn(&DeadLetter) -> bool,
) -> Result<usize, Error> {
    purge_where(pipeline, stage, usize::MAX, chosen).await
}

async fn purge_where(
    pipeline: &Pipeline,
    stage: &str,
    limit: usize,
    chosen: impl Fn(&DeadLetter) -> bool,
) -> Result<usize, Error> {
    let mut pass = dead_pass(pipeline, stage).await?;
    let mut purged = 0;
    let walked: Result<(), Error> = async {
        while purged < limit {
            let Some(got) = pass.next().await? else {
                break;
            };
            let letter = letter::describe(&got.delivery.properties, &got.delivery.data, true);
            if chosen(&letter) {
                pass.take(&got).await?;
                purged += 1;
            } else {
                pass.keep(&got).await?;
            }
        }
        Ok(())
    }
    .await;
    match walked {
        Ok(()) => pass.finish().await?,
        Err(error) => {
            pass.close().await;
            return Err(error);
        }
    }
    Ok(purged)
}
