//! Pipeline files: arbitrary text through `warren::config::parse_str`, and
//! every pipeline it accepts through `Topology::plan`.
//!
//! Invariants: no panic; a refused file has at least one problem, each with
//! a message, and a non-empty display; an accepted file plans a topology
//! whose broker names fit AMQP short strings (255 bytes) and are distinct.

#![no_main]

use std::{collections::HashSet, path::Path};

use libfuzzer_sys::fuzz_target;
use warren::{Topology, config};

/// A password that must never appear in an error unless the file wrote it.
const SECRET: &str = "Fz9secretQ";

/// Environments the file is layered with, picked by the input's length so
/// that the corpus stays plain pipeline text.
fn env_for(len: usize) -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = match len % 4 {
        0 => &[],
        1 => &[("WARREN_DEFAULTS__PREFETCH", "8")],
        2 => &[
            ("WARREN_STAGES__A__CONCURRENCY", "4"),
            ("AMQP_URL", "amqp://user:Fz9secretQ@localhost:5672/%2f"),
        ],
        _ => &[
            ("WARREN_STAGES__A__RETRY__BACKOFF", "1s"),
            ("WARREN_BROKER__ACK_TIMEOUT", "10m"),
            ("WARREN_STAGE", "a"),
        ],
    };
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = env_for(text.len());
    match config::parse_str(text, Path::new("fuzz.yaml"), &env) {
        Ok(pipeline) => {
            let topology = Topology::plan(&pipeline);
            let _ = topology.describe();
            assert!(topology.exchange.len() <= 255, "exchange name too long");
            let mut names = HashSet::new();
            for queue in &topology.queues {
                assert!(
                    queue.name.len() <= 255,
                    "queue name longer than 255 bytes: {}",
                    queue.name
                );
                assert!(
                    queue.binding.as_ref().is_none_or(|key| key.len() <= 255),
                    "routing key longer than 255 bytes"
                );
                assert!(
                    names.insert(queue.name.as_str()),
                    "queue {} planned twice:\n{:#?}",
                    queue.name,
                    topology.queues
                );
            }
        }
        Err(invalid) => {
            let shown = invalid.to_string();
            assert!(!shown.is_empty(), "empty error display");
            assert!(!invalid.problems.is_empty(), "refused without a problem");
            for problem in &invalid.problems {
                assert!(
                    !problem.message.trim().is_empty(),
                    "problem without a message: {problem:?}"
                );
            }
            if !text.contains(SECRET) {
                assert!(!shown.contains(SECRET), "the password leaked: {shown}");
            }
        }
    }
});
