//! CPU time of the processes a run involves, read from `/proc`: the
//! pipeline's own (named by the run), the broker on 5672, the PostgreSQL
//! server (all its processes) and the bench itself.

use std::{collections::BTreeMap, time::Instant};

use crate::pg;

/// Clock ticks a second of `/proc/PID/stat` (Linux's USER_HZ).
const TICKS: f64 = 100.0;

/// CPU ticks (user and system) of process `pid`.
fn ticks(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command's name in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let parent = fields.get(1)?.parse().ok()?;
    let used = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((used, parent))
}

/// The pid listening on TCP `port`, from `ss`.
fn listening(port: u16) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("pid=")? + 4;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The processes watched, by name.
pub struct Watched {
    named: Vec<(String, u32)>,
    broker: Option<u32>,
    postmaster: Option<u32>,
}

/// Ticks by name at an instant.
pub struct Sample {
    at: Instant,
    used: BTreeMap<String, u64>,
}

impl Watched {
    /// `named`: the run's processes; the broker and `server` are found.
    pub fn new(server: &pg::Postgres, named: &[(String, u32)]) -> Watched {
        let postmaster = std::fs::read_to_string(server.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok());
        Watched {
            named: named.to_vec(),
            broker: listening(5672),
            postmaster,
        }
    }

    /// The ticks used so far by each.
    pub fn sample(&mut self) -> Sample {
        let mut used = BTreeMap::new();
        let mut add = |name: &str, ticks: u64| *used.entry(name.to_string()).or_insert(0) += ticks;
        for (name, pid) in &self.named {
            if let Some((t, _)) = ticks(*pid) {
                add(name, t);
            }
        }
        if let Some((t, _)) = self.broker.and_then(ticks) {
            add("broker", t);
        }
        add("bench", ticks(std::process::id()).map_or(0, |(t, _)| t));
        if let Some(postmaster) = self.postmaster {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                    continue;
                };
                if let Some((t, parent)) = ticks(pid)
                    && (pid == postmaster || parent == postmaster)
                {
                    add("postgres", t);
                }
            }
        }
        Sample {
            at: Instant::now(),
            used,
        }
    }

    /// Cores used by each since `first`.
    pub fn since(&mut self, first: &Sample) -> Vec<(String, f64)> {
        let last = self.sample();
        let seconds = last.at.duration_since(first.at).as_secs_f64();
        last.used
            .iter()
            .map(|(name, t)| {
                let before = first.used.get(name).copied().unwrap_or(0);
                (
                    name.clone(),
                    t.saturating_sub(before) as f64 / TICKS / seconds,
                )
            })
            .collect()
    }
}
