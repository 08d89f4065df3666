//! Shutdown of a stage's consumer loop, and the cancel it shares with the
//! breaker's pause: cancel a consumer, give back what it received but did
//! not start.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Consumer, options::BasicCancelOptions};
use tracing::info;

use super::StageLoop;
use crate::worker::{channels::Source, in_flight::InFlight};

impl StageLoop {
    /// Shutdown: cancel both consumers, give back what they prefetched,
    /// let the handlers finish (the session bounds this by the grace
    /// period).
    pub(super) async fn drain(
        &self,
        main: Option<Consumer>,
        isolated: Option<Consumer>,
        work: &mut InFlight,
    ) {
        let in_flight = work.len();
        if in_flight > 0 {
            info!(stage = %self.runtime.info.name, in_flight, "draining");
        }
        // A consumer that does not end leaves its deliveries to the broker,
        // which gives them again when the channel closes.
        if let Some(consumer) = main {
            let _ = self
                .cancel_and_give_back(consumer, Source::Main, work)
                .await;
        }
        if let Some(consumer) = isolated {
            let _ = self
                .cancel_and_give_back(consumer, Source::Isolation, work)
                .await;
        }
        work.finish_all().await;
    }

    /// Cancels a consumer and gives back what it had received but not
    /// started.
    pub(super) async fn cancel_and_give_back(
        &self,
        mut consumer: Consumer,
        from: Source,
        work: &mut InFlight,
    ) -> Result<(), String> {
        let _ = self
            .channels
            .of(from)
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        // The broker sent everything for this consumer before its
        // cancel-ok: the stream ends once they are read.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(delivery)) = consumer.next().await {
                rest.push(delivery);
            }
        })
        .await;
        for delivery in rest {
            work.give_back(delivery, from);
        }
        read.map_err(|_| "a cancelled consumer did not end; starting the session again".to_string())
    }
}
