//! Writes the job events of a stage's handlings to the job stream, many to
//! one stream message: each handling hands its event over and waits for
//! the confirm of the message that carries it. While one message waits for
//! its confirm, the events of the handlings that finish meanwhile gather
//! into the next, so a busy stage writes few stream messages and an idle
//! one does not wait for company.

use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use crate::{jobs::Event, message, publisher::Publisher};

/// Events in one stream message at most.
const MAX_BATCH: usize = 512;

/// One handling's event, the publisher of its session, and who waits.
type Request = (Event, Publisher, oneshot::Sender<Result<(), String>>);

/// A stage's writer of job events (started on first use).
#[derive(Default)]
pub(crate) struct Recorder {
    requests: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl Recorder {
    /// Writes `event` to `stream`; returns once the broker confirmed it.
    pub async fn record(
        &self,
        stream: &str,
        publisher: &Publisher,
        event: Event,
    ) -> Result<(), String> {
        let requests = self.requests.get_or_init(|| {
            let (requests, incoming) = mpsc::unbounded_channel();
            tokio::spawn(write(stream.to_string(), incoming));
            requests
        });
        let (reply, written) = oneshot::channel();
        requests
            .send((event, publisher.clone(), reply))
            .map_err(|_| "the job event writer stopped".to_string())?;
        written
            .await
            .unwrap_or_else(|_| Err("the job event writer stopped".into()))
    }
}

/// Writes what arrives, a batch per stream message, one message at a time.
async fn write(stream: String, mut incoming: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let events: Vec<&Event> = batch.iter().map(|(event, _, _)| event).collect();
        let body = serde_json::to_vec(&events).expect("events are JSON");
        // The newest session's publisher: an older one may be closed, and
        // its deliveries come back anyway.
        let publisher = &batch.last().expect("not empty").1;
        let first = &events[0];
        let props = message::new_properties(&format!("{}@{}", first.id, first.stage), &first.job);
        let result = publisher
            .publish_before_ack("", &stream, &body, props)
            .await
            .map_err(|error| error.to_string());
        for (_, _, reply) in batch {
            let _ = reply.send(result.clone());
        }
    }
}
