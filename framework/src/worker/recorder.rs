//! Writes the job events of a stage's handlings to the job stream, many to
//! one stream message: each handling hands its event over and waits for
//! the confirm of the message that carries it. While one message waits for
//! its confirm, the events of the handlings that finish meanwhile gather
//! into the next, so a busy stage writes few stream messages and an idle
//! one does not wait for company.
//!
//! When the stream does not take a message, the recorder's
//! [`StreamGate`] opens: later events are refused at once, without a
//! write, until a probe ([`Recorder::probe`]) finds the stream answering.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use lapin::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{breaker::Gate, stream_gate::StreamGate};
use crate::{
    jobs::Event,
    message,
    pipeline::Pipeline,
    publisher::Publisher,
    topology::{Role, Topology},
};

/// Events in one stream message at most.
const MAX_BATCH: usize = 512;

/// One handling's event, the publisher of its session, and who waits.
type Request = (Event, Publisher, oneshot::Sender<Result<(), String>>);

/// A stage's writer of job events (started on first use).
pub(crate) struct Recorder {
    requests: OnceLock<mpsc::UnboundedSender<Request>>,
    /// The job stream's name and what declares it (with the pipeline's
    /// exchange), when the pipeline tracks jobs.
    stream: Option<(String, Topology)>,
    gate: StreamGate,
    /// Progress reports waiting to go with the next batch.
    pub notes: Option<Notes>,
}

/// How long a progress report waits for company before it is written
/// alone.
const NOTE_WAIT: Duration = Duration::from_secs(1);

/// Events written when convenient, nobody waiting for their confirm:
/// handlers' progress reports. The last report of each job's message
/// replaces the ones before it; they go with the next batch of handling
/// events, or after [`NOTE_WAIT`] on their own, so reporting often costs
/// no round trip to the broker per report.
#[derive(Clone, Debug)]
pub(crate) struct Notes {
    stream: String,
    waiting: Arc<Mutex<Waiting>>,
}

#[derive(Debug, Default)]
struct Waiting {
    events: Vec<Event>,
    /// A write of what waits is due.
    due: bool,
}

impl Notes {
    /// Notes `event`, to be written through `publisher`.
    pub fn note(&self, event: Event, publisher: &Publisher) {
        let mut waiting = self.waiting.lock().expect("notes");
        match waiting
            .events
            .iter_mut()
            .find(|e| e.job == event.job && e.id == event.id)
        {
            Some(earlier) => *earlier = event,
            None => waiting.events.push(event),
        }
        if waiting.due {
            return;
        }
        waiting.due = true;
        let notes = self.clone();
        let publisher = publisher.clone();
        tokio::spawn(async move {
            tokio::time::sleep(NOTE_WAIT).await;
            let events = notes.take();
            if events.is_empty() {
                return;
            }
            let body = serde_json::to_vec(&events).expect("events are JSON");
            let first = &events[0];
            let props =
                message::new_properties(&format!("{}@{}~", first.id, first.stage), &first.job);
            // Nobody waits: a report lost with its connection is replaced
            // by the next.
            let _ = publisher
                .publish_confirmed("", &notes.stream, &body, props)
                .await;
        });
    }

    /// What waits, now written by the caller.
    fn take(&self) -> Vec<Event> {
        let mut waiting = self.waiting.lock().expect("notes");
        waiting.due = false;
        std::mem::take(&mut waiting.events)
    }
}

impl Recorder {
    /// The recorder of stage `stage` of `pipeline`.
    pub fn new(pipeline: &Pipeline, stage: &str) -> Recorder {
        let stream = pipeline.jobs.track.then(|| {
            let mut topology = Topology::plan(pipeline);
            topology
                .queues
                .retain(|queue| queue.role == Role::JobStream);
            let name = topology.queues[0].name.clone();
            (name, topology)
        });
        let notes = stream.as_ref().map(|(name, _)| Notes {
            stream: name.clone(),
            waiting: Arc::default(),
        });
        Recorder {
            requests: OnceLock::new(),
            stream,
            gate: StreamGate::new(stage),
            notes,
        }
    }

    /// Writes `event` to the job stream; returns once the broker confirmed
    /// it. `Err` says why it was not taken: then, and while the stream does
    /// not answer, the stage's gate is open.
    pub async fn record(&self, publisher: &Publisher, event: Event) -> Result<(), String> {
        let Some((stream, _)) = &self.stream else {
            return Ok(());
        };
        if self.gate.is_away() {
            return Err("the job stream does not answer yet".into());
        }
        let requests = self.requests.get_or_init(|| {
            let (requests, incoming) = mpsc::unbounded_channel();
            tokio::spawn(write(stream.clone(), incoming, self.notes.clone()));
            requests
        });
        let (reply, written) = oneshot::channel();
        let written = match requests.send((event, publisher.clone(), reply)) {
            Ok(()) => written
                .await
                .unwrap_or_else(|_| Err("the job event writer stopped".into())),
            Err(_) => Err("the job event writer stopped".into()),
        };
        if let Err(reason) = &written
            && publisher.is_open()
        {
            // (A closed publisher is the session's loss, not the stream's.)
            self.gate.lost(stream, reason);
        }
        written
    }

    /// What the stage's consumer loop may do as far as the job stream goes.
    pub fn gate(&self) -> Gate {
        self.gate.gate()
    }

    /// True while the job stream does not answer.
    pub fn is_away(&self) -> bool {
        self.gate.is_away()
    }

    /// Asks the job stream whether it answers again: declares it on
    /// `connection` (it may have been deleted), then writes an empty batch
    /// of events through `publisher` (readers skip it, as they skip their
    /// own catch-up markers). A confirm closes the gate.
    pub async fn probe(&self, connection: &Connection, publisher: &Publisher) {
        let Some((stream, topology)) = &self.stream else {
            return;
        };
        let result = async {
            topology
                .declare(connection)
                .await
                .map_err(|error| error.to_string())?;
            let marker = format!("probe-{}", message::new_id());
            let props = message::new_properties(&marker, &marker);
            publisher
                .publish_before_ack("", stream, b"[]", props)
                .await
                .map_err(|error| error.to_string())
        }
        .await;
        self.gate.probed(stream, result);
    }
}

/// Writes what arrives, a batch per stream message, one message at a time.
async fn write(
    stream: String,
    mut incoming: mpsc::UnboundedReceiver<Request>,
    notes: Option<Notes>,
) {
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let noted = notes.as_ref().map(Notes::take).unwrap_or_default();
        let events: Vec<&Event> = batch
            .iter()
            .map(|(event, _, _)| event)
            .chain(noted.iter())
            .collect();
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
