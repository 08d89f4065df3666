//! A stage as one worker process serves it: its settings and handler, the
//! names of its queues, and the state its deliveries share (counters, rate
//! limiter, circuit breaker).

use std::{sync::Arc, time::Duration};

use super::{
    breaker::Breaker, cancels::Cancels, context::StageInfo, handler::Handler, recorder::Recorder,
};
use crate::{
    names,
    pauses::Pauses,
    peeks::Peeks,
    pipeline::{Pipeline, Stage},
    rate::Limiter,
    report::StageStats,
};

/// A served stage.
pub(crate) struct StageRuntime {
    /// What a handler's context tells about the stage.
    pub info: Arc<StageInfo>,
    /// The validated settings.
    pub stage: Stage,
    /// The handler.
    pub handler: Arc<dyn Handler>,
    /// `{pipeline}.{stage}`.
    pub queue: String,
    /// `{pipeline}.{stage}.dead`.
    pub dead_queue: String,
    /// `{pipeline}.{stage}.isolated`: messages whose worker stopped while
    /// holding them, handled one at a time.
    pub isolation_queue: String,
    /// Counters the supervisor reads.
    pub stats: Arc<StageStats>,
    /// This worker's share of the stage's rate limit, if it has one.
    pub limiter: Option<Arc<Limiter>>,
    /// Pauses consumption when calls fail at a high rate.
    pub breaker: Breaker,
    /// The pipeline's paused stages (shared by the worker's stages, followed
    /// by the session): while this one is paused, it takes no message.
    pub pauses: Pauses,
    /// The peeks at the pipeline's waiting messages (shared by the
    /// worker's stages, followed by the session): what they gave back is
    /// redelivered without a crash.
    pub peeks: Peeks,
    /// How long a paused stage holds a delivery before giving it back:
    /// half the broker's acknowledgement timeout.
    pub hold_limit: Duration,
    /// Writes the handlings' job events, when the pipeline tracks jobs, and
    /// knows whether the job stream answers.
    pub recorder: Recorder,
}

impl StageRuntime {
    /// The runtime of `stage` of `pipeline`, served by `handler`.
    pub fn new(
        pipeline: &Pipeline,
        stage: Stage,
        handler: Arc<dyn Handler>,
        cancels: Option<Arc<Cancels>>,
        pauses: Pauses,
        peeks: Peeks,
    ) -> StageRuntime {
        let recorder = Recorder::new(pipeline, &stage.name);
        let mut info = StageInfo::new(&pipeline.name, &stage.name, &stage.outputs);
        info.progress = recorder.notes.clone();
        info.job_stream = pipeline
            .jobs
            .track
            .then(|| names::job_stream(&pipeline.name));
        info.gather = stage.kind == crate::StageKind::Gather;
        info.cancels = cancels;
        info.result_max = (pipeline.jobs.result.as_deref() == Some(stage.name.as_str()))
            .then_some(pipeline.jobs.result_max);
        let hold_limit = pipeline.broker.ack_timeout / 2;
        let pipeline = &pipeline.name;
        StageRuntime {
            info: Arc::new(info),
            queue: names::stage_queue(pipeline, &stage.name),
            dead_queue: names::dead_queue(pipeline, &stage.name),
            isolation_queue: names::isolation_queue(pipeline, &stage.name),
            limiter: stage.rate_limit.map(|limit| Arc::new(Limiter::new(limit))),
            breaker: Breaker::new(&stage.name),
            recorder,
            pauses,
            peeks,
            hold_limit,
            stage,
            handler,
            stats: Arc::default(),
        }
    }
}
