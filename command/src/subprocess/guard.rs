//! A process group that ends with its owner, even when the owner is killed
//! with SIGKILL.
//!
//! The kernel's death signal reaches only a dead process's direct
//! children: when a worker is killed, its exec program dies with it, but
//! what the program started would be orphaned. So the group the program
//! runs in is led by a guard: a small process (`warren __guard`, this
//! binary) in a process group of its own, whose stdin is a pipe from the
//! worker. When the worker dies, however it dies, the kernel closes the
//! pipe; the guard reads its end and kills its group: the program and
//! everything it started that stayed in the group (a program that moves
//! its children to a group or session of their own, a daemon, lets them
//! go). The worker kills the group itself whenever the program ends or is
//! replaced; that ends the guard too.
//!
//! The guard is not in the worker's process group, so the supervisor's
//! signals to a worker's group do not reach it; and it needs no
//! supervisor: it works for `warren worker` run by hand or by a platform.
//! Should the guard not start, the program runs in a group of its own, as
//! before, and only the death signal stops it with its worker.

use std::{io::Read as _, process::Stdio};

use rustix::process::Signal;
use tokio::process::{Child, Command};
use tracing::warn;

use super::signal_group;

/// The hidden command that runs a guard.
pub const COMMAND: &str = "__guard";

/// A process group for a program, killed when dropped.
pub struct Group {
    /// The group's id: the guard's pid, or the program's when there is no
    /// guard (0 until the program started).
    id: u32,
    /// The guard; dropping it lets the runtime reap it.
    _guard: Option<Child>,
}

impl Group {
    /// Starts the guard of a new group; without one (it could not start),
    /// the program will lead a group of its own.
    pub fn new() -> Group {
        match start_guard() {
            Ok(guard) => Group {
                id: guard.id().unwrap_or_default(),
                _guard: Some(guard),
            },
            Err(error) => {
                warn!(
                    "cannot start the guard of a program's process group ({error}): the program's own children may outlive a killed worker"
                );
                Group {
                    id: 0,
                    _guard: None,
                }
            }
        }
    }

    /// Makes `command` start in this group.
    pub fn join(&self, command: &mut Command) {
        // 0: a group of its own, led by the program.
        command.process_group(i32::try_from(self.id).unwrap_or(0));
    }

    /// The program `pid` started: without a guard, its group is its own.
    pub fn started(&mut self, pid: u32) {
        if self.id == 0 {
            self.id = pid;
        }
    }

    /// Kills everything in the group (SIGKILL).
    pub fn kill(&self) {
        if self.id != 0 {
            signal_group(self.id, Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `warren __guard` with a pipe on its stdin, in a process group of its own.
fn start_guard() -> std::io::Result<Child> {
    // The running binary, even when its file was replaced since (a deploy).
    #[cfg(target_os = "linux")]
    let program = std::path::PathBuf::from("/proc/self/exe");
    #[cfg(not(target_os = "linux"))]
    let program = std::env::current_exe()?;
    Command::new(program)
        .arg0("warren")
        .arg(COMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

/// The guard itself (`warren __guard`): waits until its stdin ends (the
/// worker that started it is gone, or let it go), then kills its process
/// group, itself included.
pub fn run() -> std::process::ExitCode {
    let mut stdin = std::io::stdin().lock();
    let mut buffer = [0u8; 64];
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // The guard leads the group: this kills it last, with the rest.
    let _ = rustix::process::kill_current_process_group(Signal::KILL);
    std::process::ExitCode::SUCCESS
}
