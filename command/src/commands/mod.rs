//! One module per command.

pub mod declare;
pub mod dlq;
pub mod drain;
pub mod init;
pub mod job;
pub mod pause;
pub mod restart;
pub mod run;
pub mod schedule;
pub mod send;
pub mod serve;
pub mod status;
pub mod supervise;
pub mod validate;
pub mod worker;
