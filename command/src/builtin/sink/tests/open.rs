//! Starting on files the sink did not leave as they are: a data file
//! without its index, an index without its log, a crash's tail, a damaged
//! log, a log of the previous format, the ids file of an earlier version.

use std::{cell::RefCell, rc::Rc};

use super::{Files, batch, cut_files, ids, image::Recorder, index};

fn ids_of(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_data_file_without_its_index_is_adopted_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    // A restored backup, or a container that mounts only the data file.
    std::fs::write(&path, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n").unwrap();
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["x"])).unwrap();
    drop(files);
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["x", "y"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c", "x", "y"]));
    assert!(cut_files(&path).is_empty());
}

#[test]
fn a_lost_log_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut files = Files::open_compacting_at(&path, 3).unwrap();
    files.write(&batch(&["a", "b", "c"])).unwrap(); // merged into .keys
    files.write(&batch(&["d"])).unwrap();
    drop(files);
    std::fs::remove_file(dir.path().join("results.jsonl.log")).unwrap();
    let mut files = Files::open_compacting_at(&path, 3).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c", "d"]));
    // The merged ids are still known; the lost log's are counted written.
    files.write(&batch(&["a", "e"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c", "d", "e"]));
    assert!(cut_files(&path).is_empty());
}

#[test]
fn a_crash_tail_is_moved_aside_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["a"])).unwrap();
    drop(files);
    // A crash after the data of a batch was written, before its record.
    let tail = "{\"id\":\"b\"}\n{\"id\":";
    let mut data = std::fs::read_to_string(&path).unwrap();
    data.push_str(tail);
    std::fs::write(&path, data).unwrap();
    let mut files = Files::open(&path).unwrap();
    assert_eq!(ids(&path), ids_of(&["a"]));
    let cut = cut_files(&path);
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(std::fs::read_to_string(&cut[0]).unwrap(), tail);
    // The message comes again and is written.
    files.write(&batch(&["b"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b"]));
}

#[test]
fn a_damaged_record_amid_the_log_stops_the_sink_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let log = dir.path().join("results.jsonl.log");
    let files = Files::open(&path).unwrap();
    drop(files);
    let first_record = std::fs::metadata(&log).unwrap().len();
    let mut files = Files::open(&path).unwrap();
    for id in ["a", "b", "c"] {
        files.write(&batch(&[id])).unwrap();
    }
    drop(files);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[first_record as usize + 14] ^= 0xff; // inside the first record's key
    std::fs::write(&log, bytes).unwrap();
    let error = Files::open(&path)
        .err()
        .expect("a damaged log stops the sink");
    assert!(error.contains(&log.display().to_string()), "{error}");
    assert!(error.contains(&format!("byte {first_record}")), "{error}");
    assert_eq!(ids(&path), ids_of(&["a", "b", "c"]), "nothing was cut");
}

#[test]
fn a_log_of_the_previous_format_is_read_and_nothing_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let data = "{\"id\":\"a\"}\n{\"id\":\"b\"}\n";
    std::fs::write(&path, data).unwrap();
    // WLOG0001: magic, generation; records checked with FNV-1a (64 bits).
    let fnv = |bytes: &[u8]| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let mut log = b"WLOG0001".to_vec();
    log.extend_from_slice(&1u64.to_le_bytes());
    let mut record = 2u32.to_le_bytes().to_vec();
    record.extend_from_slice(&(data.len() as u64).to_le_bytes());
    record.extend_from_slice(&index::key("a"));
    record.extend_from_slice(&index::key("b"));
    let sum = fnv(&record);
    record.extend_from_slice(&sum.to_le_bytes());
    log.extend_from_slice(&record);
    std::fs::write(dir.path().join("results.jsonl.log"), log).unwrap();
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["a", "b", "c"])).unwrap();
    drop(files);
    let mut files = Files::open(&path).unwrap();
    files.write(&batch(&["c"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c"]));
    assert!(cut_files(&path).is_empty());
}

#[test]
fn the_ids_file_of_an_earlier_version_is_indexed_once_and_its_rename_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    std::fs::write(&path, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n").unwrap();
    std::fs::write(dir.path().join("results.jsonl.ids"), "a\nb\n").unwrap();
    let recorder = Rc::new(RefCell::new(Recorder::new(&path)));
    recorder.borrow_mut().imaging = false;
    let guard = Recorder::install(&recorder);
    let mut files = Files::open(&path).unwrap();
    drop(guard);
    let trace = recorder.borrow().trace.clone();
    let renamed = trace
        .iter()
        .position(|op| op == "rename results.jsonl.ids results.jsonl.ids.imported")
        .expect("the ids file is renamed");
    assert!(
        trace[renamed..].iter().any(|op| op.starts_with("sync_dir")),
        "the rename is not followed by a folder sync: {trace:#?}"
    );
    assert_eq!(files.index.count().unwrap(), 2);
    // The line without an id was never acknowledged: moved aside.
    assert_eq!(ids(&path), ids_of(&["a", "b"]));
    assert_eq!(cut_files(&path).len(), 1);
    assert!(dir.path().join("results.jsonl.ids.imported").exists());
    assert!(!dir.path().join("results.jsonl.ids").exists());
    files.write(&batch(&["b", "c"])).unwrap();
    assert_eq!(ids(&path), ids_of(&["a", "b", "c"]));
}
