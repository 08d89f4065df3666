//! `--cluster`: warren's fanout3 on quorum queues on the single broker and
//! on a three-node cluster started for the run (`tests/support/cluster.sh`,
//! ports 5701-5703, removed after), rounds interleaved, to show what
//! replication costs; and the bare client (both ways of publishing) on the
//! same cluster, through its first node, as the limit there.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    Fanout,
    bare::{self, Publishing},
    fanout, median, spread,
};

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
    let (mut one, mut three, mut first_only) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare_one, mut bare_two) = (Vec::new(), Vec::new());
    let first_node = "amqp://guest:guest@127.0.0.1:5701/%2f";
    for round in 0..rounds {
        for (publishing, times) in [
            (Publishing::SameConnection, &mut bare_one),
            (Publishing::OwnConnection, &mut bare_two),
        ] {
            let sink = dir.join(format!("cluster-bare-{round}.jsonl"));
            let seconds = bare::start(first_node, "quorum", fanout, &sink, 500, publishing)
                .await
                .finish(fanout)
                .await;
            eprintln!(
                "  {} quorum on the 3-node cluster, round {}: {seconds:.2}s",
                publishing.system(),
                round + 1
            );
            times.push(seconds);
        }
        for (url, times, name) in [
            (single, &mut one, "single node"),
            (nodes.as_str(), &mut three, "3-node cluster"),
            // Every worker on the node the bare client uses (where the
            // queues' leaders are): what spreading over the nodes costs.
            (
                first_node,
                &mut first_only,
                "3-node cluster, first node only",
            ),
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
    for (publishing, bare) in [
        (Publishing::OwnConnection, &bare_two),
        (Publishing::SameConnection, &bare_one),
    ] {
        // Round by round: each warren round against the bare round just
        // before it.
        let ratios: Vec<f64> = bare.iter().zip(&three).map(|(b, w)| b / w).collect();
        println!(
            "fanout3 on the three-node cluster: warren {:.2}s, {} {:.2}s; warren vs {} round by round: median {:.2}x ({})",
            median(three.clone()),
            publishing.system(),
            median(bare.clone()),
            publishing.system(),
            median(ratios.clone()),
            spread(&ratios)
        );
    }
    let ratios: Vec<f64> = bare_two
        .iter()
        .zip(&first_only)
        .map(|(b, w)| b / w)
        .collect();
    println!(
        "fanout3 on the three-node cluster, every worker on the first node: warren {:.2}s; vs bare 2-conn round by round: median {:.2}x ({})",
        median(first_only),
        median(ratios.clone()),
        spread(&ratios)
    );
    let messages = fanout.messages() as f64;
    let (one, three) = (messages / median(one), messages / median(three));
    println!(
        "fanout3 on quorum queues: single node {one:.0} msgs/s, three-node cluster {three:.0} msgs/s ({:.2}x; every message written on three nodes, same machine)",
        three / one
    );
}
