//! End-to-end latency at light load: one seed at a time through fanout3's
//! three stages (expand -> F parts -> work -> sink, quorum queues), from
//! the seed's send (confirmed) until the sink has its F lines on disk; the
//! next seed goes only then. warren and the bare client with its
//! publishing on a second connection (the same guarantees), in alternate
//! rounds, each after a few seeds not counted. Looked at every
//! millisecond, so a figure is at most about 1 ms late.

use std::time::{Duration, Instant};

use crate::{Fanout, bare, fanout::Setup, median};

/// Seeds sent before the counted ones, in each round.
const WARM_UP: u64 = 10;

/// The latencies (ms) of `samples` seeds through warren, then through the
/// bare client, `rounds` times; prints p50 and p99 of each and the ratios.
pub async fn run(setup: &Setup<'_>, samples: u64, rounds: usize) {
    let (mut warren, mut bare) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let w = crate::fanout::light(setup, "quorum", WARM_UP, samples).await;
        let sink = setup.dir.join(format!("bare-light-{round}.jsonl"));
        let b = bare_light(setup.url, setup.fanout.f, &sink, samples).await;
        eprintln!(
            "  light load round {}: warren p50 {:.1} ms, bare 2-conn p50 {:.1} ms",
            round + 1,
            median(w.clone()),
            median(b.clone())
        );
        warren.extend(w);
        bare.extend(b);
    }
    let (w50, w99) = (percentile(&warren, 0.50), percentile(&warren, 0.99));
    let (b50, b99) = (percentile(&bare, 0.50), percentile(&bare, 0.99));
    println!(
        "light load (one seed at a time through fanout3's three stages, quorum, {} seeds each): warren p50 {w50:.1} ms, p99 {w99:.1} ms; bare 2-conn p50 {b50:.1} ms, p99 {b99:.1} ms; warren / bare: p50 {:.2}x, p99 {:.2}x",
        warren.len(),
        w50 / b50,
        w99 / b99
    );
}

/// The bare client's stages on an empty queue, fed one seed at a time.
async fn bare_light(url: &str, f: u64, sink: &std::path::Path, samples: u64) -> Vec<f64> {
    let none = Fanout { n: 0, f };
    let running = bare::start(
        url,
        "quorum",
        &none,
        sink,
        500,
        bare::Publishing::OwnConnection,
    )
    .await;
    // Its consumers register as the stages start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut times = Vec::new();
    for i in 0..WARM_UP + samples {
        let sent = Instant::now();
        running.send_confirmed(i).await;
        let want = (i + 1) * f;
        while running.written.load(std::sync::atomic::Ordering::Relaxed) < want {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i >= WARM_UP {
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    running.stop().await;
    times
}

/// The `q` quantile of `values` (nearest rank).
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
