//! Logs on stderr through `tracing`; `RUST_LOG` sets the level.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs a subscriber writing to stderr, as text or JSON lines.
///
/// By default (`RUST_LOG` unset) the level is `info` and the AMQP client
/// is silent: warren reports connection and channel problems in its own
/// words. The client logs raw frames (the login among them) at trace
/// level, so a global `trace` holds it at debug unless `RUST_LOG` names it.
/// Does nothing if a subscriber is already installed.
pub fn init(json: bool) {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,lapin=off".into());
    let mut filter = EnvFilter::new(&wanted);
    if wanted.contains("trace") {
        for client in ["lapin", "amq_protocol", "amq_protocol_tcp"] {
            if !wanted.contains(client) {
                filter = filter
                    .add_directive(format!("{client}=debug").parse().expect("valid directive"));
            }
        }
    }
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
