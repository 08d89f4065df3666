//! One module per command.

pub mod declare;
pub mod validate;
