//! Message bodies: arbitrary bytes through a typed handler, run by
//! `warren::testing::Harness` as the worker would run it (decode, handler,
//! disposition), without a broker.
//!
//! Invariants: no panic; a body that decodes is handled (`Done`); a body
//! that does not decode is dead-lettered at once with a non-empty reason
//! on one line.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use warren::{
    testing::Harness,
    worker::{Context, Disposition, Outcome},
};

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    lines: Option<Vec<i32>>,
    address: Address,
    kind: Kind,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Address {
    street: String,
    zip: Option<u32>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Standard,
    Express { days: u8 },
    Pickup(String),
}

async fn handle(order: Order, _ctx: Context) -> Outcome {
    std::hint::black_box(&order);
    Ok(())
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    harness: Harness,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        harness: Harness::new("orders", handle).id("m1"),
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let run = fixture.runtime.block_on(fixture.harness.run_bytes(data));
    let decodes = serde_json::from_slice::<Order>(data).is_ok();
    assert!(run.emitted.is_empty());
    match (&run.disposition, decodes) {
        (Disposition::Done, true) => {}
        (Disposition::Dead { reason }, false) => {
            assert!(!reason.trim().is_empty(), "empty reason");
            assert!(
                reason.starts_with("body is not valid JSON")
                    || reason.starts_with("body does not fit Order"),
                "unexpected reason: {reason:?}"
            );
            assert!(
                !reason.chars().any(char::is_control),
                "reason is not one line: {reason:?}"
            );
        }
        (other, _) => panic!("decodes: {decodes}, but disposition {other:?}"),
    }
});
