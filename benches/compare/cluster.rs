//! `--cluster`: warren's fanout3 on quorum queues on the single broker and
//! on a three-node cluster started for the run (`tests/support/cluster.sh`,
//! ports 5701-5703, removed after), rounds interleaved, to show what
//! replication costs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Fanout, fanout, median};

/// The cluster, removed when dropped.
struct Cluster(PathBuf);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/cluster.sh")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", self.0.to_str().unwrap()])
            .status();
    }
}

/// Runs `rounds` rounds of fanout3 (quorum) on `single` and on a
/// three-node cluster; prints both and their ratio.
pub async fn run(
    single: &str,
    fanout: &Fanout,
    dir: &Path,
    warren: &Path,
    worker: &Path,
    rounds: usize,
) {
    let cluster = Cluster(dir.join("cluster"));
    let up = Command::new(script())
        .env("MANAGEMENT", "0")
        .args(["up", cluster.0.to_str().unwrap(), "wb", "5701"])
        .status()
        .expect("tests/support/cluster.sh");
    assert!(up.success(), "the cluster did not come up");
    let nodes: Vec<String> = (0..3)
        .map(|i| format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5701 + i))
        .collect();
    let nodes = nodes.join(",");
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (url, times, name) in [
            (single, &mut one, "single node"),
            (nodes.as_str(), &mut three, "3-node cluster"),
        ] {
            let setup = fanout::Setup {
                url,
                fanout,
                dir,
                warren,
                worker,
                wrapper: &[],
            };
            let measured = fanout::run(&setup, "quorum", fanout::Variant::Rust).await;
            eprintln!(
                "  warren quorum on the {name}, round {}: {:.2}s",
                round + 1,
                measured.seconds
            );
            times.push(measured.seconds);
        }
    }
    let messages = fanout.messages() as f64;
    let (one, three) = (messages / median(one), messages / median(three));
    println!(
        "fanout3 on quorum queues: single node {one:.0} msgs/s, three-node cluster {three:.0} msgs/s ({:.2}x; every message written on three nodes, same machine)",
        three / one
    );
}
