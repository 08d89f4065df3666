//! Peak resident memory of processes, from /proc.

use std::collections::BTreeMap;

/// The highest `VmHWM` (peak RSS, KiB) seen per process.
#[derive(Default)]
pub struct Peaks {
    by_pid: BTreeMap<u32, u64>,
}

impl Peaks {
    /// Records the peak RSS of every child of `parent`.
    pub fn sample_children_of(&mut self, parent: u32) {
        for pid in children_of(parent) {
            self.sample(pid);
        }
    }

    /// Records the peak RSS of processes whose command line contains `text`.
    pub fn sample_matching(&mut self, text: &str) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(text) {
                self.sample(pid);
            }
        }
    }

    /// Records the peak RSS of `pid`.
    pub fn sample(&mut self, pid: u32) {
        if let Some(kib) = peak_kib(pid) {
            let peak = self.by_pid.entry(pid).or_default();
            *peak = (*peak).max(kib);
        }
    }

    /// The peaks, one per process.
    pub fn values(&self) -> Vec<u64> {
        self.by_pid.values().copied().collect()
    }
}

/// `VmHWM` of a process, in KiB.
pub fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The fields after the command (which is in parentheses).
            let after = &stat[stat.rfind(')')? + 2..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// User + system CPU seconds of a process so far, and its command line.
pub fn cpu_seconds(pid: u32) -> Option<(f64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some((ticks / 100.0, cmdline))
}

/// The children of `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    children_of(parent)
}

/// The machine's busy and idle CPU ticks so far (all cores, from
/// /proc/stat): how much of a round the cores were idle tells a run held
/// up by waiting from one held up by work.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq (steal: another guest's)
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let busy = fields.iter().take(7).sum::<u64>() - idle;
    (busy, idle)
}

/// The share of ticks idle between two [`machine_ticks`] readings.
pub fn idle_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let idle = after.1.saturating_sub(before.1) as f64;
    idle / (busy + idle).max(1.0)
}
