//! Unit-testing a handler without a broker: give it a message, see what
//! would happen to it and what it emitted.
//!
//! ```
//! use warren::testing::Harness;
//! use warren::worker::{Context, Disposition, Outcome};
//!
//! async fn double(n: u64, ctx: Context) -> Outcome {
//!     ctx.emit(&(n * 2)).await?;
//!     Ok(())
//! }
//!
//! # tokio_test_block_on(async {
//! let run = Harness::new("double", double).outputs(&["sum"]).id("m1").run(&21).await;
//! assert_eq!(run.disposition, Disposition::Done);
//! assert_eq!(run.emitted[0].id, "m1.0");
//! assert_eq!(run.emitted[0].body, 42);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    config::defaults,
    pipeline::Stage,
    retry::RetryPolicy,
    worker::{
        Context, Disposition, Emitted, Handled, Handler, Outcome, Outlet, StageInfo, decide,
        invoke, typed,
    },
};

/// Runs one handler on messages in memory, as the worker would: the body is
/// decoded (a bad body is dead-lettered), the handler runs within the
/// timeout, a panic is caught, and the retry policy decides.
pub struct Harness {
    handler: Arc<dyn Handler>,
    stage: String,
    outputs: Vec<String>,
    timeout: Duration,
    retry: RetryPolicy,
    id: String,
    attempt: u32,
}

/// What happened to one message.
#[derive(Debug)]
pub struct Run {
    /// Done, retried (with attempt and delay) or dead-lettered (with why).
    pub disposition: Disposition,
    /// Everything the handler emitted, in order. On a failure these would
    /// have been published too, and published again by the retry.
    pub emitted: Vec<Emitted>,
}

impl Harness {
    /// A harness for `handler` as stage `stage`, with the default timeout
    /// and retry policy and no outputs.
    pub fn new<F, T, Fut>(stage: &str, handler: F) -> Harness
    where
        F: Fn(T, Context) -> Fut + Send + Sync + 'static,
        T: DeserializeOwned + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Harness {
            handler: Arc::new(typed(handler)),
            stage: stage.to_string(),
            outputs: Vec::new(),
            timeout: defaults::TIMEOUT,
            retry: RetryPolicy {
                attempts: defaults::ATTEMPTS,
                backoff: defaults::BACKOFF.to_vec(),
            },
            id: "test".into(),
            attempt: 1,
        }
    }

    /// Takes outputs, timeout and retry policy from a pipeline's stage.
    pub fn settings_of(mut self, stage: &Stage) -> Harness {
        self.stage = stage.name.clone();
        self.outputs = stage.outputs.clone();
        self.timeout = stage.timeout;
        self.retry = stage.retry.clone();
        self
    }

    /// The stage's outputs.
    pub fn outputs(mut self, outputs: &[&str]) -> Harness {
        self.outputs = outputs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The handler timeout.
    pub fn timeout(mut self, timeout: Duration) -> Harness {
        self.timeout = timeout;
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Harness {
        self.retry = retry;
        self
    }

    /// The message id the handler sees (default `test`).
    pub fn id(mut self, id: &str) -> Harness {
        self.id = id.to_string();
        self
    }

    /// The attempt number the handler sees (default 1).
    pub fn attempt(mut self, attempt: u32) -> Harness {
        self.attempt = attempt;
        self
    }

    /// Runs the handler on `message` encoded as JSON.
    pub async fn run<M: Serialize + ?Sized>(&self, message: &M) -> Run {
        let body = serde_json::to_vec(message).expect("the test message encodes as JSON");
        self.run_bytes(&body).await
    }

    /// Runs the handler on raw body bytes.
    pub async fn run_bytes(&self, body: &[u8]) -> Run {
        let emitted = Arc::new(Mutex::new(Vec::new()));
        let info = Arc::new(StageInfo::new("test", &self.stage, &self.outputs));
        let ctx = Context::new(
            self.id.clone(),
            self.id.clone(),
            self.attempt,
            info,
            Outlet::Memory(emitted.clone()),
            Default::default(),
        );
        let disposition = match invoke(&*self.handler, body, ctx, self.timeout, ()).await {
            Handled::Undecodable(reason) => Disposition::Dead { reason },
            Handled::Panicked(failure) => decide(Err(failure), self.attempt, &self.retry),
            Handled::Finished(outcome) => decide(outcome, self.attempt, &self.retry),
        };
        let emitted = std::mem::take(&mut *emitted.lock().expect("emitted"));
        Run {
            disposition,
            emitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::Failure;

    #[derive(serde::Deserialize)]
    struct Job {
        n: u32,
    }

    async fn job(job: Job, ctx: Context) -> Outcome {
        match job.n {
            0 => Err(Failure::dead("zero")),
            1 => Err(Failure::retry("flaky")),
            2 => panic!("two is cursed"),
            3 => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
            n => {
                for i in 0..n {
                    ctx.emit(&serde_json::json!({ "i": i })).await?;
                }
                Ok(())
            }
        }
    }

    fn harness() -> Harness {
        Harness::new("work", job)
            .outputs(&["next", "audit"])
            .id("m")
            .timeout(Duration::from_millis(100))
    }

    #[tokio::test]
    async fn emits_go_to_every_output_with_child_ids() {
        let run = harness().run(&serde_json::json!({ "n": 5 })).await;
        assert_eq!(run.disposition, Disposition::Done);
        assert_eq!(run.emitted.len(), 10);
        assert_eq!(
            (run.emitted[0].stage.as_str(), run.emitted[0].id.as_str()),
            ("next", "m.0")
        );
        assert_eq!(
            (run.emitted[1].stage.as_str(), run.emitted[1].id.as_str()),
            ("audit", "m.0")
        );
        assert_eq!(run.emitted[9].id, "m.4");
    }

    #[tokio::test]
    async fn failures_panics_and_timeouts_retry() {
        let run = harness().run(&serde_json::json!({ "n": 1 })).await;
        assert!(
            matches!(run.disposition, Disposition::Retry { attempt: 2, ref reason, .. } if reason == "flaky")
        );
        let run = harness().run(&serde_json::json!({ "n": 2 })).await;
        assert!(
            matches!(run.disposition, Disposition::Retry { ref reason, .. } if reason.contains("panicked: two is cursed"))
        );
        let run = harness().run(&serde_json::json!({ "n": 3 })).await;
        assert!(
            matches!(run.disposition, Disposition::Retry { ref reason, .. } if reason == "timed out after 100ms")
        );
    }

    #[tokio::test]
    async fn bad_bodies_and_explicit_requests_dead_letter() {
        let run = harness().run_bytes(b"{not json").await;
        assert!(
            matches!(run.disposition, Disposition::Dead { ref reason } if reason.starts_with("body is not valid JSON"))
        );
        let run = harness().run(&serde_json::json!({ "n": "five" })).await;
        assert!(
            matches!(run.disposition, Disposition::Dead { ref reason } if reason.starts_with("body does not fit Job"))
        );
        let run = harness().run(&serde_json::json!({ "n": 0 })).await;
        assert_eq!(
            run.disposition,
            Disposition::Dead {
                reason: "zero".into()
            }
        );
        let last = harness()
            .attempt(5)
            .run(&serde_json::json!({ "n": 1 }))
            .await;
        assert!(
            matches!(last.disposition, Disposition::Dead { ref reason } if reason == "attempt 5 of 5 failed: flaky")
        );
    }

    #[tokio::test]
    async fn emitting_to_a_stage_that_is_not_an_output_fails() {
        async fn stray(_: serde_json::Value, ctx: Context) -> Outcome {
            ctx.emit_to("elsewhere", &1).await?;
            Ok(())
        }
        let run = Harness::new("s", stray).outputs(&["next"]).run(&1).await;
        assert!(
            matches!(run.disposition, Disposition::Retry { ref reason, .. } if reason.contains("cannot emit to `elsewhere`"))
        );
    }
}
