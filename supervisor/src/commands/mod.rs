//! One module per command.

pub mod declare;
pub mod status;
pub mod supervise;
pub mod validate;
