//! Celery and Dramatiq running fanout3 (their scripts are in
//! benches/peers/), installed into a virtualenv when asked.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::rss::Peaks;

/// A peer's result.
pub struct PeerRun {
    /// Seconds, as the peer's script measured them.
    pub seconds: f64,
    /// Peak RSS of its worker processes, KiB.
    pub rss_kib: Vec<u64>,
}

/// Where the virtualenv is: `PEERS_VENV` or /tmp/peers/venv.
pub fn venv() -> PathBuf {
    std::env::var_os("PEERS_VENV").map_or_else(|| PathBuf::from("/tmp/peers/venv"), PathBuf::from)
}

/// Creates the virtualenv with Celery, Dramatiq and pika if it is missing.
pub fn install() -> Result<(), String> {
    let venv = venv();
    if venv.join("bin/celery").exists() && venv.join("bin/dramatiq").exists() {
        return Ok(());
    }
    eprintln!(
        "installing Celery 5, Dramatiq and pika into {} (from PyPI)",
        venv.display()
    );
    let ok = |status: std::io::Result<std::process::ExitStatus>| {
        status.map(|s| s.success()).unwrap_or(false)
    };
    if !ok(Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status())
    {
        return Err("python3 -m venv failed".into());
    }
    let pip = venv.join("bin/pip");
    if !ok(Command::new(pip)
        .args(["install", "-q", "celery==5.*", "dramatiq[rabbitmq]", "pika"])
        .status())
    {
        return Err("pip install failed".into());
    }
    Ok(())
}

/// Runs one peer's script: `run_celery.sh N F 2` or
/// `run_dramatiq.sh N F 2 8`.
pub fn run(
    system: &'static str,
    scripts: &Path,
    n: u64,
    f: u64,
    url: &str,
) -> Result<PeerRun, String> {
    let (script, extra, pattern): (&str, &[&str], &str) = match system {
        "celery" => ("run_celery.sh", &["2"], "celery_fanout"),
        _ => ("run_dramatiq.sh", &["2", "8"], "dramatiq_fanout"),
    };
    let mut child = Command::new(scripts.join(script))
        .arg(n.to_string())
        .arg(f.to_string())
        .args(extra)
        .env("PEERS_VENV", venv())
        .env("AMQP_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{script}: {e}"))?;
    let mut peaks = Peaks::default();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        peaks.sample_matching(pattern);
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out)
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{script} failed: {out}"));
    }
    let seconds = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("secs="))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{script}: no secs= in {out:?}"))?;
    // The driver (publishing seeds) is counted too; keep the workers'.
    Ok(PeerRun {
        seconds,
        rss_kib: peaks.values(),
    })
}
