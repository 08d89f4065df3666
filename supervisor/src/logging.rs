//! Logs on stderr through `tracing`; `RUST_LOG` sets the level.

use tracing_subscriber::{EnvFilter, fmt};

use crate::cli::LogFormat;

/// Installs the subscriber. The AMQP client logs raw frames (the login
/// among them) at trace level, so a global `trace` holds it at debug unless
/// `RUST_LOG` names it explicitly.
pub fn init(format: LogFormat) {
    // The AMQP client reports channel closures as errors of its own;
    // warren reports them in its words, so by default it is silent.
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
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
