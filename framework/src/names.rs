//! Names on the broker. External producers rely on the first three
//! (DESIGN.md); everything else a pipeline owns also starts with
//! `{pipeline}.` so it can be listed by that prefix.

use std::time::Duration;

use crate::duration;

/// The pipeline exchange (direct, durable): `{pipeline}`.
pub fn exchange(pipeline: &str) -> String {
    pipeline.to_string()
}

/// A stage's input queue, bound to the exchange with routing key `{stage}`.
pub fn stage_queue(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}.{stage}")
}

/// A stage's dead-letter queue.
pub fn dead_queue(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}.{stage}.dead")
}

/// A stage's isolation queue: messages whose worker stopped while holding
/// them (a crash, a kill, a lost connection) wait there to be handled one
/// at a time, so a message that kills its worker is found out alone.
pub fn isolation_queue(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}.{stage}.isolated")
}

/// A stage's retry queue for one delay: messages wait there for `delay`,
/// then the broker dead-letters them back to the stage queue.
pub fn retry_queue(pipeline: &str, stage: &str, delay: Duration) -> String {
    format!("{pipeline}.{stage}.retry.{}", duration::format(delay))
}

/// Delay level `level`'s queue and the topic exchange in front of it
/// (exchanges and queues have names of their own kind, so both are
/// `{pipeline}.delay.{level}`, two digits; see `delay.rs`). A stage named
/// `delay` has `{pipeline}.delay` and its `.dead`, `.isolated` and
/// `.retry.*` queues: no level is named like those.
pub fn delay_level(pipeline: &str, level: u8) -> String {
    format!("{pipeline}.delay.{level:02}")
}

/// The topic exchange that takes delayed messages from the last level to
/// their stage queues: `{pipeline}.delay.due`.
pub fn delay_due(pipeline: &str) -> String {
    format!("{pipeline}.delay.due")
}

/// The prefix of every broker object a pipeline owns but its exchange:
/// `{pipeline}.`, to list them (the management API, `warren status`).
pub fn prefix(pipeline: &str) -> String {
    format!("{pipeline}.")
}

/// The supervisors' presence queue: each supervisor of the pipeline holds a
/// consumer on it and nothing is published there, so its consumer count is
/// the number of live supervisors.
pub fn presence_queue(pipeline: &str) -> String {
    format!("{pipeline}.supervisors")
}

/// A tracked pipeline's job stream (a RabbitMQ stream): one event per
/// handling, read by every box that answers for jobs. No stage queue ends
/// in `.events`, so it cannot meet a stage named `jobs`.
pub fn job_stream(pipeline: &str) -> String {
    format!("{pipeline}.jobs.events")
}

/// A tracked pipeline's cancelled jobs (a RabbitMQ stream): one message
/// per cancel, read by every worker from its start.
pub fn cancel_stream(pipeline: &str) -> String {
    format!("{pipeline}.jobs.cancels")
}

/// A pipeline's paused stages (a RabbitMQ stream): one message per pause
/// or resume, read by every worker from its start. No stage queue ends in
/// `.pauses`, so it cannot meet a stage named `control`.
pub fn pause_stream(pipeline: &str) -> String {
    format!("{pipeline}.control.pauses")
}

/// A pipeline's peeks at waiting messages (a RabbitMQ stream kept a day):
/// one message per peek with the ids it held and gave back, read by every
/// worker from its start (`peeks.rs`).
pub fn peek_stream(pipeline: &str) -> String {
    format!("{pipeline}.control.peeks")
}

/// A tracked pipeline's keeper election queue: one token message, held by
/// the supervisor that fires callbacks and releases gathers.
pub fn keeper_queue(pipeline: &str) -> String {
    format!("{pipeline}.jobs.keeper")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(exchange("grading"), "grading");
        assert_eq!(stage_queue("grading", "grade"), "grading.grade");
        assert_eq!(dead_queue("grading", "grade"), "grading.grade.dead");
        assert_eq!(
            isolation_queue("grading", "grade"),
            "grading.grade.isolated"
        );
        assert_eq!(
            retry_queue("grading", "grade", Duration::from_secs(10)),
            "grading.grade.retry.10s"
        );
        assert_eq!(presence_queue("grading"), "grading.supervisors");
        assert_eq!(cancel_stream("grading"), "grading.jobs.cancels");
        assert_eq!(pause_stream("grading"), "grading.control.pauses");
        assert_eq!(peek_stream("grading"), "grading.control.peeks");
        assert_eq!(delay_level("grading", 3), "grading.delay.03");
        assert_eq!(delay_due("grading"), "grading.delay.due");
        assert_eq!(prefix("grading"), "grading.");
    }
}
