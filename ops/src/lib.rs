//! A running warren pipeline seen from one box, below the `warren` command
//! and its HTTP front door: what the broker holds ([`monitor`], the
//! management API in [`management`]), what this box's supervisors run
//! (their [`status`] socket, both ends), the one [`view`] of the stages that
//! every reader builds on, whether a pipeline is [`drained`], and job
//! tracking ([`jobs`]: the store, the tracker of the job stream, the keeper
//! and its duties). It knows no HTTP server and no process control, and
//! nothing of the command line.

pub mod drained;
pub mod jobs;
pub mod management;
pub mod monitor;
pub mod redact;
pub mod status;
pub mod view;
