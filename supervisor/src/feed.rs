//! Publishing input lines to a stage: many confirms outstanding at once,
//! lines confirmed in order, so a caller can record how far it got.

use futures_util::{StreamExt, stream};
use warren::{Error, Producer};

use crate::input::Line;

/// Confirms outstanding at once.
const WINDOW: usize = 256;

/// Sends `lines` to `stage` with the ids `id_of` gives; `confirmed` is
/// called with the count of lines confirmed so far, in input order.
/// Stops at the first refused line, or when `stop` says so.
pub async fn send(
    producer: &Producer,
    stage: &str,
    lines: &[Line],
    id_of: impl Fn(&Line) -> String,
    mut confirmed: impl FnMut(usize),
    stop: impl Fn() -> bool,
) -> Result<usize, Error> {
    let mut done = 0;
    let mut sends = stream::iter(lines.iter().take_while(|_| !stop()).map(|line| {
        let id = id_of(line);
        async move { producer.send_json(stage, &id, line.body.as_bytes()).await }
    }))
    .buffered(WINDOW);
    while let Some(sent) = sends.next().await {
        sent?;
        done += 1;
        confirmed(done);
    }
    Ok(done)
}
