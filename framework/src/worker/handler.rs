//! Stage handlers: a typed async function behind a small object-safe trait,
//! and running one of them on one message (decode, timeout, panic).

use std::{future::Future, marker::PhantomData, panic::AssertUnwindSafe, pin::Pin, time::Duration};

use futures_util::FutureExt;
use serde::de::DeserializeOwned;

use super::{
    context::Context,
    outcome::{Failure, Outcome},
};
use crate::duration;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// A stage handler, type-erased. Implemented for every
/// `async fn(T, Context) -> Outcome` with `T: Deserialize`; implement it
/// yourself only to handle raw bytes.
pub trait Handler: Send + Sync + 'static {
    /// Decodes `body` and starts handling it. `Err` (the body is not JSON,
    /// or not of the handler's type) sends the message to the dead-letter
    /// queue at once with that reason.
    fn start(&self, body: &[u8], ctx: Context) -> Result<HandlerFuture, String>;
}

/// Wraps a typed async function as a [`Handler`].
pub fn typed<F, T, Fut>(f: F) -> impl Handler
where
    F: Fn(T, Context) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Typed {
        f,
        message: PhantomData,
    }
}

struct Typed<F, T> {
    f: F,
    message: PhantomData<fn() -> T>,
}

impl<F, T, Fut> Handler for Typed<F, T>
where
    F: Fn(T, Context) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn start(&self, body: &[u8], ctx: Context) -> Result<HandlerFuture, String> {
        let message: T = serde_json::from_slice(body).map_err(|error| decode_error::<T>(&error))?;
        Ok(Box::pin((self.f)(message, ctx)))
    }
}

/// The dead-letter reason for a body that does not decode.
pub(crate) fn decode_error<T>(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    // serde quotes unknown field and variant names from the body verbatim.
    let text = crate::message::one_line(&error.to_string(), 1000);
    match error.classify() {
        Category::Data => {
            let full = std::any::type_name::<T>();
            let short = full.rsplit("::").next().unwrap_or(full);
            format!("body does not fit {short}: {text}")
        }
        _ => format!("body is not valid JSON: {text}"),
    }
}

/// How one handling ended, before the retry policy is consulted.
#[derive(Debug)]
pub(crate) enum Handled {
    /// The body did not decode: dead-letter at once.
    Undecodable(String),
    /// The handler panicked: a bug met on this message, retried like any
    /// failure, but no sign that what the stage calls is down.
    Panicked(Failure),
    /// The handler ran (success only if every emitted message was confirmed).
    Finished(Outcome),
}

/// Runs `handler` on `body`: the handler and the confirms of what it
/// emitted share one `timeout` (validation counts on it). A panic or the
/// timeout is a retryable failure, and success requires every emit to be
/// confirmed. `slot` (a place in the stage's `concurrency`) is held while
/// the handler runs and given back before the confirms are awaited: the
/// next message's handler need not wait for this one's broker round trip.
pub(crate) async fn invoke<S>(
    handler: &dyn Handler,
    body: &[u8],
    ctx: Context,
    timeout: Duration,
    slot: S,
) -> Handled {
    let deadline = tokio::time::Instant::now() + timeout;
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| handler.start(body, ctx.clone())));
    let future = match started {
        Ok(Ok(future)) => future,
        Ok(Err(reason)) => return Handled::Undecodable(reason),
        Err(panic) => return Handled::Panicked(Failure::crashed(panicked(&*panic))),
    };
    let ran = tokio::time::timeout_at(deadline, AssertUnwindSafe(future).catch_unwind()).await;
    drop(slot);
    let outcome = match ran {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            ctx.abandon_emits();
            return Handled::Panicked(Failure::crashed(panicked(&*panic)));
        }
        Err(_) => {
            ctx.cancel();
            Err(Failure::retry(format!(
                "timed out after {}",
                duration::format(timeout)
            )))
        }
    };
    Handled::Finished(match outcome {
        Ok(()) => match tokio::time::timeout_at(deadline, ctx.confirm_emits()).await {
            Ok(confirmed) => confirmed.map_err(Failure::retry),
            Err(_) => Err(Failure::retry(format!(
                "emitted messages were not confirmed within the stage timeout {}",
                duration::format(timeout)
            ))),
        },
        Err(failure) => {
            ctx.abandon_emits();
            Err(failure)
        }
    })
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into());
    format!("handler panicked: {text}")
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;
    use crate::worker::context::{Outlet, StageInfo};

    #[allow(dead_code)]
    #[derive(Debug, serde::Deserialize)]
    struct Order {
        address: Address,
        kind: Kind,
    }

    #[allow(dead_code)]
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Address {
        street: String,
    }

    #[allow(dead_code)]
    #[derive(Debug, serde::Deserialize)]
    enum Kind {
        Standard,
    }

    /// Sets `true` when dropped: stands for a place in the concurrency.
    struct Slot(Arc<AtomicBool>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// The next message's handler need not wait for this one's confirms:
    /// the slot comes back as soon as the handler ends, while the emit's
    /// confirm (a broker round trip, which cannot arrive within one poll
    /// on this thread) is still awaited; the handling then succeeds.
    #[tokio::test(flavor = "current_thread")]
    async fn the_slot_comes_back_before_the_emits_are_confirmed() {
        let url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .expect("the tests need RabbitMQ on AMQP_URL (default 127.0.0.1:5672)");
        let publisher = crate::publisher::Publisher::open(&connection)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap()
            .name()
            .to_string();
        let mut info = StageInfo::new("slot", "first", &["next".to_string()]);
        info.output_queues = vec![queue.clone()];
        let ctx = Context::new(
            "m1".into(),
            "m1".into(),
            1,
            Arc::new(info),
            Outlet::Broker(publisher),
            Default::default(),
        );
        let handler = typed(|n: u32, ctx: Context| async move {
            ctx.emit(&(n + 1)).await?;
            Ok(())
        });
        let given_back = Arc::new(AtomicBool::new(false));
        let slot = Slot(given_back.clone());
        let mut handling =
            std::pin::pin!(invoke(&handler, b"1", ctx, Duration::from_secs(10), slot));
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(handling.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the emit's confirm cannot be in yet");
        assert!(
            given_back.load(Ordering::SeqCst),
            "the slot is held while the confirm is awaited"
        );
        assert!(
            matches!(handling.await, Handled::Finished(Ok(()))),
            "the handling succeeds once the emit is confirmed"
        );
        let waiting = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap()
            .message_count();
        assert_eq!(waiting, 1, "the emitted message is in its queue");
        connection.close(0, "done".into()).await.unwrap();
    }

    /// Found by `fuzz/` (target `message_body`): serde quotes unknown field
    /// and variant names from the body verbatim, control characters and all.
    #[test]
    fn decode_errors_stay_on_one_line_whatever_the_body_names() {
        let bodies: [&[u8]; 3] = [
            b"{\"address\":{\"\x7f\"",
            br#"{"address": {"street": "s", "a\nb": 1}}"#,
            br#"{"address": {"street": "s"}, "kind": "x\r\ny"}"#,
        ];
        for body in bodies {
            let error = serde_json::from_slice::<Order>(body).unwrap_err();
            let reason = decode_error::<Order>(&error);
            assert!(
                reason.starts_with("body does not fit Order: unknown "),
                "{reason}"
            );
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
    }
}
