//! What tracing costs a handling when nothing is exported
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` unset): the work `worker/delivery.rs`
//! adds per delivery (the span of `traces::Handling` from the message's
//! headers, its headers for what it emits, its trace id, the `tracing` span
//! of the log lines under the info-level subscriber every worker installs,
//! the end), timed over many handlings and printed per handling: the trace
//! context alone, then with the log lines' span.
//!
//! ```sh
//! cargo bench -p warren-pipeline --bench traces        # -- 1000000
//! ```

use std::{hint::black_box, time::Instant};

use warren::{message, traces};

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // As a worker logs: info level, to a sink here.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .try_init();
    let traced = message::with_header(
        message::new_properties("m1", "m1"),
        traces::TRACEPARENT,
        message::text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let untraced = message::new_properties("m1", "m1");
    println!("{n} handlings each, no exporter:");
    let time = |what: &str, each: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..n {
            each();
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(n);
        println!("  {what}: {per:.0} ns per handling");
    };
    for (message, props) in [("with a traceparent", &traced), ("without", &untraced)] {
        time(&format!("trace context, a message {message}"), &|| {
            let handling = traces::Handling::start("stage", "m1", "m1", 1, None, props);
            black_box(handling.headers().clone());
            black_box(handling.trace_id());
            handling.end("done", None);
        });
        time(
            &format!("the log lines' span, a message {message}"),
            &|| {
                let handling = traces::Handling::start("stage", "m1", "m1", 1, None, props);
                let span = tracing::info_span!("handling", id = "m1", job = "m1", trace_id = %handling.trace_id());
                let _entered = span.enter();
                handling.end("done", None);
            },
        );
    }
    time("the empty loop", &|| {
        black_box(0);
    });
}
