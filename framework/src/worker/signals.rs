//! SIGTERM and SIGINT: the first one starts a drain, a second one exits at
//! once (the broker requeues whatever was not acknowledged).

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Error;

/// A token cancelled by the first SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signal() -> Result<CancellationToken, Error> {
    let token = CancellationToken::new();
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|error| Error::Setup(format!("cannot install signal handlers: {error}")))?;
    let trigger = token.clone();
    std::thread::Builder::new()
        .name("warren-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen == 1 {
                    trigger.cancel();
                    info!(
                        signal,
                        "stopping: taking no new messages, finishing the ones in hand"
                    );
                } else {
                    warn!(
                        signal,
                        "second signal: exiting now; unacknowledged messages go back to their queue"
                    );
                    std::process::exit(130);
                }
            }
        })
        .map_err(|error| Error::Setup(format!("cannot start the signal thread: {error}")))?;
    Ok(token)
}
