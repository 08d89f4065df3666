//! Instructions per message, counted by valgrind's callgrind: unlike
//! seconds, the same binaries on the same input count (nearly) the same
//! whatever else the machine is doing, so a change to the hot path can be
//! judged without the noise of a shared machine.
//!
//! Each system runs fanout3 twice under callgrind, at two sizes; the
//! difference in instructions over the difference in messages is the cost
//! of one more message (start-up, connecting and declaring cancel out).
//! Only user-space instructions of the client processes are counted: not
//! the kernel's, not the broker's.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    Fanout,
    fanout::{self, Setup, Variant},
};

/// Instructions of one run: per process (its command line), and in all.
struct Counted {
    processes: Vec<(String, u64)>,
}

impl Counted {
    /// Reads every callgrind output file in `dir` (one per process).
    fn read(dir: &Path) -> Counted {
        let mut processes = Vec::new();
        for entry in std::fs::read_dir(dir)
            .expect("callgrind's folder")
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let cmd = text
                .lines()
                .find_map(|l| l.strip_prefix("cmd: "))
                .unwrap_or("?")
                .to_string();
            let total = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("totals: ").or(l.strip_prefix("summary: ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            processes.push((cmd, total));
        }
        Counted { processes }
    }

    /// Instructions of the processes whose command line contains `text`.
    fn of(&self, text: &str) -> u64 {
        self.processes
            .iter()
            .filter(|(cmd, _)| cmd.contains(text))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The two sizes: small, then three times as many seeds.
fn sizes(f: u64) -> [Fanout; 2] {
    [Fanout { n: 100, f }, Fanout { n: 300, f }]
}

fn callgrind(dir: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--trace-children=yes".into(),
        format!("--callgrind-out-file={}/%p.out", dir.display()),
    ]
}

/// A fresh folder for one run's callgrind files, in `dir` or, to keep
/// them for `callgrind_annotate`, in `WARREN_BENCH_CALLGRIND`.
fn fresh(dir: &Path, name: &str) -> PathBuf {
    let dir = std::env::var_os("WARREN_BENCH_CALLGRIND")
        .map_or_else(|| dir.to_path_buf(), PathBuf::from)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Says instructions per message for the bare client (all three stages
/// in its one process) and for warren's worker processes (each, and in
/// all), fanout3 on quorum queues. Needs valgrind; says so without it.
pub async fn run(setup: &Setup<'_>) -> String {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return "instructions per message: valgrind is not installed; not counted".into();
    }
    let f = setup.fanout.f;
    let mut bare = Vec::new();
    let mut warren = Vec::new();
    for size in sizes(f) {
        let out = fresh(setup.dir, &format!("callgrind-bare-{}", size.n));
        let valgrind = callgrind(&out);
        let status = Command::new(&valgrind[0])
            .args(&valgrind[1..])
            .arg(std::env::current_exe().unwrap())
            .args(["--bare-child", &size.n.to_string(), &f.to_string()])
            .env("AMQP_URL", setup.url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("valgrind");
        assert!(status.success(), "the bare client under callgrind failed");
        bare.push(Counted::read(&out));

        let out = fresh(setup.dir, &format!("callgrind-warren-{}", size.n));
        let wrapper = callgrind(&out);
        let sized = Setup {
            fanout: &size,
            wrapper: &wrapper,
            ..*setup
        };
        fanout::run(&sized, "quorum", Variant::Rust).await;
        warren.push(Counted::read(&out));
    }
    let [small, large] = sizes(f);
    let messages = (large.messages() - small.messages()) as f64;
    let per = |counts: &[Counted], text: &str| {
        (counts[1].of(text) as f64 - counts[0].of(text) as f64) / messages
    };
    let bare_per = per(&bare, "--bare-child");
    let expand = per(&warren, "fanout3-worker expand");
    let work = per(&warren, "fanout3-worker work");
    let sink = per(&warren, "--stage sink");
    let supervisor = per(&warren, " supervise ");
    let all = expand + work + sink;
    format!(
        "instructions per message (callgrind, fanout3 on quorum queues, {} minus {} messages, user space only): bare client {bare_per:.0} (its three stages); warren {all:.0} (expand {expand:.0}, work {work:.0}, sink {sink:.0}; the supervisor {supervisor:.0} more): {:.2}x the bare client",
        large.messages(),
        small.messages(),
        all / bare_per
    )
}
