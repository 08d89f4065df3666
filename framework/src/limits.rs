//! Fixed limits that several parts of warren rely on.

use std::time::Duration;

/// Longest a retry, a dead letter or another copy of a delivery may take to
/// publish, from writing its frames to the broker's confirm, before it
/// counts as failed (and the delivery goes back to its queue). Validation
/// counts it in the time a message can stay unacknowledged.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
