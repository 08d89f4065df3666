//! Signals of the supervisor: SIGTERM and SIGINT stop it (after draining
//! every worker; a second one exits at once), SIGHUP re-reads the file.

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A token cancelled by SIGTERM/SIGINT, and a channel that gets a message
/// on each SIGHUP.
pub fn install() -> anyhow::Result<(CancellationToken, mpsc::UnboundedReceiver<()>)> {
    let stop = CancellationToken::new();
    let (reload_tx, reload) = mpsc::unbounded_channel();
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let trigger = stop.clone();
    std::thread::Builder::new().name("warren-signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                let _ = reload_tx.send(());
            } else if trigger.is_cancelled() {
                warn!("second signal: exiting now; workers get SIGTERM from the kernel and drain on their own");
                std::process::exit(130);
            } else {
                trigger.cancel();
            }
        }
    })?;
    Ok((stop, reload))
}
