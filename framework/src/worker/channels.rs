//! A stage's two consuming channels, and which of them a delivery came
//! from: the stage queue, or its isolation queue (messages whose worker
//! stopped while holding them, handled one at a time). Each has its own
//! acker: a delivery is settled on the channel it came from.

use lapin::Channel;

/// The isolation queue's prefetch: its messages are handled one at a time.
pub(crate) const ISOLATION_PREFETCH: u16 = 1;

/// Which queue a delivery came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The stage queue.
    Main,
    /// The isolation queue.
    Isolation,
}

/// A stage's two consumers' channels.
pub(crate) struct Channels {
    pub main: Channel,
    pub isolation: Channel,
}

impl Channels {
    /// The channel of `source`.
    pub fn of(&self, source: Source) -> &Channel {
        match source {
            Source::Main => &self.main,
            Source::Isolation => &self.isolation,
        }
    }
}
