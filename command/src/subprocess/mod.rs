//! Child processes of warren: what the supervisor's workers and an exec
//! stage's program share. Each runs in its own process group, so that a
//! signal to the group reaches what it started too ([`signal_group`]), and
//! gets a signal from the kernel when its parent dies ([`die_with_parent`],
//! Linux). Its output is read as bytes, line by line ([`lines`]): a byte
//! that is not UTF-8 is shown as U+FFFD and the reading goes on.
//!
//! The death signal reaches only the direct child. An exec program's own
//! children are therefore watched by a [`guard`]: a small process of its
//! own that kills the program's process group when the worker that started
//! the program dies, even by SIGKILL.

pub mod guard;
pub mod lines;

use std::io;

use rustix::process::{Pid, Signal};
use tokio::process::Command;

/// Asks the kernel to send `signal` to the child when this process dies
/// (Linux; elsewhere nothing). warren runs on a single-threaded runtime, so
/// the thread that forks lives as long as the process (the signal follows
/// the thread). If this process died between the fork and this request,
/// the child has a new parent already and would never get the signal: it
/// does not start.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command, signal: Signal) {
    #[cfg(target_os = "linux")]
    {
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes async-signal-safe system calls (prctl, getppid); it
        // allocates nothing.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(signal))?;
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::other("the parent is gone"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (command, signal);
}

/// Sends `signal` (SIGTERM, SIGKILL) to the process group `group` (the pid
/// of the process that leads it): that process and what it started. False
/// if they are gone.
pub fn signal_group(group: u32, signal: Signal) -> bool {
    let Some(pid) = i32::try_from(group).ok().and_then(Pid::from_raw) else {
        return false;
    };
    rustix::process::kill_process_group(pid, signal).is_ok()
}
