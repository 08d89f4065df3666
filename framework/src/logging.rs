//! Logs on stderr through `tracing`; `RUST_LOG` sets the level.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Set by `warren supervise` for its workers: `bare` (no timestamp or
/// colours: the supervisor adds its own, with the stage and worker index)
/// or `json`.
pub const FORMAT_ENV: &str = "WARREN_LOG";

/// Installs a subscriber writing to stderr, as text or JSON lines
/// (`WARREN_LOG` overrides `json`).
///
/// By default (`RUST_LOG` unset) the level is `info` and the AMQP client
/// is silent: warren reports connection and channel problems in its own
/// words. The client logs raw frames (the login among them) at trace
/// level, so a global `trace` holds it at debug unless `RUST_LOG` names it.
/// Colours only when stderr is a terminal. Does nothing if a subscriber is
/// already installed.
pub fn init(json: bool) {
    init_with_default(json, DEFAULT_FILTER);
}

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,lapin=off";

/// Like [`init`], with another filter when `RUST_LOG` is unset.
pub fn init_with_default(json: bool, default: &str) {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| default.into());
    let mut filter = EnvFilter::new(&wanted);
    if wanted.contains("trace") {
        for client in ["lapin", "amq_protocol", "amq_protocol_tcp"] {
            if !wanted.contains(client) {
                filter = filter
                    .add_directive(format!("{client}=debug").parse().expect("valid directive"));
            }
        }
    }
    let format = std::env::var(FORMAT_ENV).unwrap_or_default();
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        // A worker whose supervisor died writes to a closed pipe: the line
        // is lost, and nothing may panic over it (the default reports the
        // failure with eprintln!, which panics).
        .log_internal_errors(false);
    let _ = match format.as_str() {
        "json" => builder.json().try_init(),
        "bare" => builder.without_time().with_level(true).try_init(),
        _ if json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}
