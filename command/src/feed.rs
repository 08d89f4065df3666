//! Publishing input lines to a stage as fast as the broker confirms them:
//! a window of messages written and not yet confirmed, confirmed in input
//! order, so a caller always knows exactly how far it got. When confirms
//! fail (the connection was lost), the unconfirmed lines are published
//! again on a new connection, with the same ids: a line is either
//! confirmed or sent again, never counted as sent without a confirm.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::warn;
use warren::{Error, Producer, backoff::Backoff, delay::When, producer::Sent};

use crate::{
    exit::BadInput,
    input::{Item, Line, Lines},
};

/// Messages written and not yet confirmed, at most.
pub const WINDOW: usize = 512;

/// How long sending may go without a confirm before it gives up.
const STALL: Duration = Duration::from_secs(60);

/// What to do with a line that is not JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLines {
    /// Stop there (exit 65), after confirming what came before (a pipe,
    /// which cannot be checked first).
    Stop,
    /// Report it and go on (`--skip-bad` on a pipe).
    Skip,
    /// Go on quietly: a first pass reported it already (a file).
    Ignore,
}

/// Where lines go.
pub struct Feed<'a> {
    /// The connection.
    pub producer: &'a Producer,
    /// The stage that receives them.
    pub stage: &'a str,
    /// The input's name, for messages.
    pub input: &'a str,
    /// What to do with bad lines.
    pub bad: BadLines,
    /// When the messages are to be handled (`--delay`, `--at`); now if
    /// `None`.
    pub when: Option<When>,
}

/// How a feed ended.
#[derive(Debug, Default)]
pub struct Fed {
    /// Lines confirmed by the broker.
    pub sent: usize,
    /// Bad lines skipped.
    pub skipped: usize,
    /// It stopped because `stop` said so.
    pub interrupted: bool,
}

/// Sends the lines of `lines` to `stage`, with the ids `id_of` gives.
/// `confirmed` is called with each line once the broker confirmed it (and
/// every line before it), in input order; `stop` is checked between lines.
pub async fn send(
    feed: &Feed<'_>,
    mut lines: Lines,
    id_of: impl Fn(&Line) -> String,
    mut confirmed: impl FnMut(&Line),
    stop: impl Fn() -> bool,
) -> anyhow::Result<Fed> {
    let Feed {
        stage, input, bad, ..
    } = *feed;
    let mut fed = Fed::default();
    let mut window: VecDeque<(Line, String, Option<Sent>)> = VecDeque::new();
    let mut ended = false;
    let mut last_progress = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        // Fill the window while lines come, and write them all at once.
        let mut batch: Vec<(Line, String)> = Vec::new();
        while !ended && window.len() + batch.len() < WINDOW {
            if stop() {
                fed.interrupted = true;
                ended = true;
                break;
            }
            let next = if window.is_empty() && batch.is_empty() {
                tokio::select! {
                    next = lines.recv() => next,
                    _ = wait_for(&stop) => { fed.interrupted = true; ended = true; break; }
                }
            } else {
                match lines.try_recv() {
                    Ok(next) => Some(next),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let line = match next {
                None => {
                    ended = true;
                    break;
                }
                Some(Err(error)) => {
                    publish(feed, batch, &mut window).await;
                    finish(&mut window, &mut fed, &mut confirmed).await;
                    return Err(BadInput(format!("{input}: cannot read it: {error}")).into());
                }
                Some(Ok(Item::Bad(number, reason))) => {
                    if bad != BadLines::Ignore {
                        err!("{input}:{number}: {reason}");
                    }
                    if bad != BadLines::Stop {
                        fed.skipped += 1;
                        continue;
                    }
                    publish(feed, batch, &mut window).await;
                    finish(&mut window, &mut fed, &mut confirmed).await;
                    return Err(BadInput(format!(
                        "{input}:{number} is not a message; the {} lines before it were sent. Fix it and send the rest, or pass --skip-bad to skip bad lines",
                        fed.sent
                    ))
                    .into());
                }
                Some(Ok(Item::Good(line))) => line,
            };
            let id = id_of(&line);
            batch.push((line, id));
        }
        publish(feed, batch, &mut window).await;
        let Some((line, id, sent)) = window.pop_front() else {
            if ended {
                return Ok(fed);
            }
            continue;
        };
        let outcome = match sent {
            Some(sent) => sent.confirmed().await,
            None => Err(Error::Publish {
                target: stage.to_string(),
                reason: "not written".into(),
            }),
        };
        match outcome {
            Ok(()) => {
                fed.sent += 1;
                last_progress = Instant::now();
                backoff.reset();
                confirmed(&line);
            }
            Err(error) => {
                if last_progress.elapsed() > STALL {
                    return Err(error.into());
                }
                warn!(
                    "{error}; sending the {} unconfirmed lines again",
                    window.len() + 1
                );
                tokio::time::sleep(backoff.next_delay()).await;
                // Everything after the failed one is sent again, in order,
                // with the same ids.
                window.push_front((line, id, None));
                let again: Vec<(Line, String)> =
                    window.drain(..).map(|(line, id, _)| (line, id)).collect();
                publish(feed, again, &mut window).await;
            }
        }
    }
}

/// Writes `batch` in one go and appends it to the window; if the writes
/// failed, each entry has no confirm to wait for and is sent again.
async fn publish(
    feed: &Feed<'_>,
    batch: Vec<(Line, String)>,
    window: &mut VecDeque<(Line, String, Option<Sent>)>,
) {
    if batch.is_empty() {
        return;
    }
    let messages: Vec<(&str, &[u8])> = batch
        .iter()
        .map(|(line, id)| (id.as_str(), line.body.as_slice()))
        .collect();
    let not_before = feed
        .when
        .map(|when| when.not_before_ms(warren::message::epoch_ms()));
    let written = feed
        .producer
        .publish_many_at(feed.stage, &messages, None, not_before)
        .await;
    drop(messages);
    match written {
        Ok(sent) => window.extend(
            batch
                .into_iter()
                .zip(sent)
                .map(|((line, id), sent)| (line, id, Some(sent))),
        ),
        Err(_) => window.extend(batch.into_iter().map(|(line, id)| (line, id, None))),
    }
}

/// Waits until `stop` says so (checked every 100 ms).
async fn wait_for(stop: &impl Fn() -> bool) {
    while !stop() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Confirms what is in the window before returning with an error, so the
/// count of what was sent is exact.
async fn finish(
    window: &mut VecDeque<(Line, String, Option<Sent>)>,
    fed: &mut Fed,
    confirmed: &mut impl FnMut(&Line),
) {
    while let Some((line, _, sent)) = window.pop_front() {
        let Some(sent) = sent else { return };
        if sent.confirmed().await.is_err() {
            return;
        }
        fed.sent += 1;
        confirmed(&line);
    }
}
