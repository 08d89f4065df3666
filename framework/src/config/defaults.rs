//! Values used when neither the stage nor `defaults` set a field.

use std::time::Duration;

/// Unacknowledged messages per worker.
pub const PREFETCH: u16 = 64;
/// Messages handled at once per worker.
pub const CONCURRENCY: u32 = 32;

/// `prefetch` and `concurrency` of a sink stage that sets neither (nor
/// `defaults:`): the sink writes what arrives together in one batch (one
/// pair of syncs), so the more it holds at once, the fewer syncs per
/// message. 1,000 made a sink about 4x faster than 64/32.
pub const SINK_HOLDS: u16 = 1000;
/// Time allowed per message.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts, the first included.
pub const ATTEMPTS: u32 = 5;
/// Delays between attempts.
pub const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];
/// Fewest workers per box.
pub const SCALE_MIN: u32 = 1;
/// Most workers per box.
pub const SCALE_MAX: u32 = 4;
/// Ready messages per worker.
pub const BACKLOG_PER_WORKER: u32 = 200;
/// Idle time before scaling down.
pub const SCALE_IDLE: Duration = Duration::from_secs(60);
/// RabbitMQ's default `consumer_timeout`.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// HTTP request timeout.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer an http stage reads: 10 MiB.
pub const HTTP_MAX_RESPONSE: u64 = 10 * 1024 * 1024;
/// The request header that carries the message id in the http stage.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
