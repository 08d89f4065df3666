//! Faults while the sink runs: its file cut under it, merges of the index
//! failing (after the rename, on a full disk), a failed fsync of the log.

use std::{cell::RefCell, rc::Rc};

use super::{
    Files, batch, cut_files, ids,
    image::{Recorder, restore},
};
use crate::builtin::sink::disk::{self, Op};

fn ids_of(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_file_cut_under_a_running_sink_is_not_filled_with_nul_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["a", "b"])).unwrap();
    // logrotate's copytruncate: copied elsewhere, then cut to nothing.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    files.write(&batch(&["c"])).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.contains(&0), "NUL bytes: {bytes:?}");
    assert_eq!(ids(&path), ids_of(&["c"]));
    // Cut in the middle of a line: the piece left is moved aside.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4)
        .unwrap();
    files.write(&batch(&["d", "a"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["d"]));
    assert_eq!(
        std::fs::read_to_string(&cut_files(&path)[0]).unwrap(),
        "{\"id"
    );
    drop(files);
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["a", "b", "c", "d", "e"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["d", "e"]), "written ids stay written");
}

#[test]
fn a_merge_failing_after_its_rename_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    // The first merge fails after its rename; the next ones fail before
    // theirs (a full disk).
    let mut renamed = false;
    let guard = disk::hook::set(move |op| match op {
        Op::Rename { to, .. } if name(to) == "results.jsonl.keys" => {
            renamed = true;
            Ok(())
        }
        Op::SyncDir { .. } if renamed => Err(disk::hook::injected()),
        Op::Write { path, .. } if renamed && name(path) == "results.jsonl.keys.new" => {
            Err(disk::hook::injected())
        }
        _ => Ok(()),
    });
    let mut files = Files::open_compacting_at(&path, 2).unwrap();
    files.write(&batch(&["a", "b"])).unwrap(); // the merge fails
    files.write(&batch(&["c"])).unwrap();
    files.write(&batch(&["d"])).unwrap();
    drop(files);
    drop(guard);
    let mut files = Files::open_compacting_at(&path, 2).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c", "d"]));
    files.write(&batch(&["a", "b", "c", "d", "e"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c", "d", "e"]));
    assert!(cut_files(&path).is_empty());
}

#[test]
fn a_merge_failing_on_a_full_disk_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let aside = dir.path().join("results.jsonl.keys.new");
    let guard = disk::hook::set(|op| match op {
        Op::Write { path, .. } if name(path) == "results.jsonl.keys.new" => Err(
            std::io::Error::from_raw_os_error(28), // ENOSPC
        ),
        _ => Ok(()),
    });
    let mut files = Files::open_compacting_at(&path, 2).unwrap();
    files.write(&batch(&["a", "b"])).unwrap(); // the merge fails
    assert!(!aside.exists(), "the failed merge's file is left");
    files.write(&batch(&["c"])).unwrap();
    assert!(!aside.exists(), "the failed merge's file is left");
    drop(files);
    drop(guard);
    // A start after a crash in a merge removes its file.
    std::fs::write(&aside, b"half a merge").unwrap();
    let mut files = Files::open_compacting_at(&path, 2).unwrap();
    assert!(!aside.exists(), "a crashed merge's file is left");
    files.write(&batch(&["a", "b", "c", "d"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c", "d"]));
}

#[test]
fn after_a_failed_log_sync_the_log_is_cut_back_durably_before_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let recorder = Rc::new(RefCell::new(Recorder::new(&path)));
    recorder.borrow_mut().imaging = false;
    let guard = Recorder::install(&recorder);
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["a"])).unwrap();
    // The changes of the next batch: write data, sync data, write the
    // log's record, sync it: that sync fails (the record may be on disk).
    let failed = {
        let mut recorder = recorder.borrow_mut();
        let at = recorder.ops + 3;
        recorder.fail_at = Some(at);
        at
    };
    files.write(&batch(&["b"])).unwrap_err();
    let trace = recorder.borrow().trace.clone();
    assert_eq!(trace[failed], "sync results.jsonl.log", "{trace:#?}");
    // The log is cut back and synced before the data is cut back.
    let after = &trace[failed + 1..];
    let position = |op: &str| after.iter().position(|o| o.starts_with(op));
    let log_synced = position("sync results.jsonl.log").expect("the cut log is synced");
    assert!(position("set_len results.jsonl.log").unwrap() < log_synced);
    assert!(
        log_synced < position("set_len results.jsonl ").unwrap(),
        "{after:#?}"
    );
    drop(files);
    drop(guard);
    // The crash: only what was synced is there (the failed sync counts as
    // done, the worst case).
    recorder.borrow_mut().finish("after the failed sync");
    let image = recorder
        .borrow()
        .images
        .iter()
        .find(|i| i.label.ends_with("as synced"))
        .cloned()
        .unwrap();
    let again = tempfile::tempdir().unwrap();
    restore(&image.files, again.path());
    let path = again.path().join("results.jsonl");
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["b"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b"]), "b, sent again, is lost");
}
