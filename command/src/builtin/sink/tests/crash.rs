//! The property of the sink, checked at every point a crash or a failed
//! disk call can hit a few batches (merges of the index included): a
//! restart never loses an acknowledged line nor writes one twice, and
//! once every message came again each is in the file exactly once. The
//! points are enumerated, not sampled: each change the sink makes (see
//! [`super::image`]), each of its crash images, and each change failed
//! once.

use std::{cell::RefCell, collections::BTreeMap, rc::Rc};

use super::{
    Files, batch, ids,
    image::{Image, Recorder, restore},
};

/// The index merges its log every 3 ids: several merges in the run.
const COMPACT: usize = 3;

/// The batches, redeliveries included (`a` and `b` come twice).
const BATCHES: &[&[&str]] = &[
    &["a", "b"],
    &["c", "a"],
    &["d", "e", "f"],
    &["g"],
    &["h", "i", "b"],
];

/// Lines in the file before the sink first opens it (no index): adopted.
const BEFORE: &str = "{\"old\":1}\n{\"old\":2}\n";

fn all_ids() -> Vec<String> {
    let mut all: Vec<String> = BATCHES
        .iter()
        .flat_map(|b| b.iter())
        .map(|s| s.to_string())
        .collect();
    all.sort();
    all.dedup();
    all
}

fn scratch() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// Runs the batches on a new folder, failing change `fail_at` (if any); a
/// failed batch comes again with the next one, as the broker would send
/// it again, and a failed start is tried again.
fn run(fail_at: Option<usize>, imaging: bool) -> Recorder {
    let dir = scratch();
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, BEFORE).unwrap();
    let recorder = Rc::new(RefCell::new(Recorder::new(&path)));
    recorder.borrow_mut().fail_at = fail_at;
    recorder.borrow_mut().imaging = imaging;
    if let Some(failed) = fail_at {
        // The crash images of the changes after the failed one, until the
        // next batch is surely on its way.
        recorder.borrow_mut().window = (failed + 1, failed + 8);
    }
    let guard = Recorder::install(&recorder);
    let mut files = Files::open_compacting_at(&path, COMPACT)
        .or_else(|_| Files::open_compacting_at(&path, COMPACT))
        .unwrap();
    let mut carried: Vec<String> = Vec::new();
    for ids in BATCHES {
        let todo: Vec<String> = carried
            .drain(..)
            .chain(ids.iter().map(|s| s.to_string()))
            .collect();
        let refs: Vec<&str> = todo.iter().map(String::as_str).collect();
        match files.write(&batch(&refs)) {
            Ok(()) => recorder.borrow_mut().acked.extend(todo),
            Err(_) => carried = todo,
        }
    }
    if !carried.is_empty() {
        let refs: Vec<&str> = carried.iter().map(String::as_str).collect();
        files.write(&batch(&refs)).unwrap();
        recorder.borrow_mut().acked.extend(carried);
    }
    drop(files);
    drop(guard);
    recorder.borrow_mut().finish("the end");
    Rc::try_unwrap(recorder).ok().unwrap().into_inner()
}

fn counts(found: Vec<String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in found {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Starts a sink on `image`, checks what it kept, sends every message
/// again (twice, across a restart) and checks that each is there once.
fn check(image: &Image) -> Result<(), String> {
    let dir = scratch();
    restore(&image.files, dir.path());
    let path = dir.path().join("out.jsonl");
    let mut files = Files::open_compacting_at(&path, COMPACT).map_err(|e| format!("start: {e}"))?;
    let kept = counts(ids(&path));
    for id in &image.acked {
        if kept.get(id) != Some(&1) {
            return Err(format!(
                "acknowledged {id} is there {:?} times",
                kept.get(id)
            ));
        }
    }
    for old in BEFORE.lines() {
        if kept.get(old) != Some(&1) {
            return Err(format!(
                "the adopted line {old} is there {:?} times",
                kept.get(old)
            ));
        }
    }
    if let Some((line, n)) = kept.iter().find(|(_, n)| **n > 1) {
        return Err(format!("{line} is there {n} times on start"));
    }
    let all = all_ids();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    files
        .write(&batch(&refs))
        .map_err(|e| format!("sending again: {e}"))?;
    drop(files);
    let mut files =
        Files::open_compacting_at(&path, COMPACT).map_err(|e| format!("restart: {e}"))?;
    files
        .write(&batch(&refs))
        .map_err(|e| format!("sending again: {e}"))?;
    let mut expected: Vec<String> = all.clone();
    expected.extend(BEFORE.lines().map(String::from));
    let found = counts(ids(&path));
    let wanted = counts(expected);
    if found != wanted {
        return Err(format!("in the end {found:?}, not each once"));
    }
    Ok(())
}

fn check_all<'a>(images: impl IntoIterator<Item = &'a Image>) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for image in images {
        if !seen.insert((image.files.clone(), image.acked.clone())) {
            continue;
        }
        checked += 1;
        if let Err(error) = check(image) {
            failures.push(format!("{}: {error}", image.label));
        }
    }
    (checked, failures)
}

#[test]
fn a_crash_at_any_change_loses_no_acknowledged_line_and_writes_none_twice() {
    let recorder = run(None, true);
    assert_eq!(recorder.acked.len(), all_ids().len());
    let (checked, failures) = check_all(&recorder.images);
    assert!(
        recorder
            .trace
            .iter()
            .filter(|t| t.starts_with("rename out.jsonl.keys.new"))
            .count()
            >= 2,
        "the run merges the index: {:#?}",
        recorder.trace
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} crash images fail, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn any_one_change_failing_then_a_crash_loses_nothing_and_writes_nothing_twice() {
    let changes = run(None, false).ops;
    let mut checked = 0;
    let mut failures = Vec::new();
    for fail_at in 0..changes {
        let recorder = run(Some(fail_at), false);
        let (n, failed) = check_all(&recorder.images);
        checked += n;
        failures.extend(failed.into_iter().map(|f| {
            let failed_op = recorder.trace.get(fail_at).cloned().unwrap_or_default();
            format!("change {fail_at} ({failed_op}) failed; {f}")
        }));
    }
    assert!(checked >= changes, "{checked} images of {changes} runs");
    assert!(
        failures.is_empty(),
        "{} of {checked} images fail, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
