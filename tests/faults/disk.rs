//! The sink's disk: full for a while, or its folder unwritable for a
//! while. The sink acknowledges a message only after its line is written
//! and synced, so nothing can be lost, whatever the disk does.

use std::{path::Path, process::Command, time::Duration};

use crate::harness::{Row, fanout3};

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(status.success(), "remounting the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The sink's disk fills up (a 256 KiB tmpfs); 8 s later it grows.
pub async fn disk_full() -> Row {
    if rustix::process::geteuid().as_raw() != 0 {
        return Row::skipped("disk", "needs root to mount a tmpfs");
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&dir.path().join("disk"), "256k") {
        Ok(disk) => disk,
        Err(error) => {
            return Row::failed(
                "disk",
                format!("mounting a tmpfs (needs root) failed: {error}"),
            );
        }
    };
    let mut run = fanout3("fdisk", 1000, Some(disk.0.join("digests.jsonl"))).await;
    let mut full_at = None;
    let mut grown = false;
    let done = run
        .until_done(Duration::from_secs(240), |elapsed| {
            if grown {
                return;
            }
            if full_at.is_none() && run.log().contains("No space left on device") {
                full_at = Some(elapsed);
            }
            if full_at.is_some_and(|at| elapsed > at + Duration::from_secs(8)) {
                disk.grow("64m");
                grown = true;
            }
        })
        .await;
    let mut row = run
        .finish(
            "disk",
            "sink on a 256 KiB tmpfs: full for 8 s, then grown".into(),
            done,
        )
        .await;
    if full_at.is_none() {
        row.fail("the disk never filled up");
    }
    row
}

/// The sink's folder is a file for 6 s (the sink cannot open its file),
/// then a folder.
pub async fn unwritable_sink() -> Row {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("out");
    std::fs::write(&folder, "a file where the sink's folder should be").unwrap();
    let mut run = fanout3("funwritable", 500, Some(folder.join("digests.jsonl"))).await;
    let mut fixed = false;
    let mut reported = false;
    let done = run
        .until_done(Duration::from_secs(180), |elapsed| {
            if !fixed && elapsed > Duration::from_secs(6) {
                reported = run.log().contains(&*folder.to_string_lossy());
                std::fs::remove_file(&folder).unwrap();
                std::fs::create_dir(&folder).unwrap();
                fixed = true;
            }
        })
        .await;
    let mut row = run
        .finish(
            "unwritable",
            "sink folder is a file for 6 s, then a folder".into(),
            done,
        )
        .await;
    if !reported {
        row.fail("the sink's error did not name its path");
    }
    row
}
