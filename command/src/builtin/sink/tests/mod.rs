//! The sink's files: written once per id, repaired after crashes, and
//! never losing a line (see the module docs of [`super`]).

use std::{fs::OpenOptions, io::Write as _, sync::Arc};

use tokio::sync::oneshot;

use super::{Pending, files::Files, index};

mod crash;
mod faults;
mod image;
mod open;

/// A message of `id` whose line names it: `{"id":"a"}`.
pub fn pending(id: &str) -> Pending {
    let (done, _) = oneshot::channel();
    Pending {
        key: index::key(id),
        line: format!("{{\"id\":{}}}\n", serde_json::Value::from(id)).into_bytes(),
        done,
    }
}

/// Messages of these ids.
pub fn batch(ids: &[&str]) -> Vec<Pending> {
    ids.iter().map(|id| pending(id)).collect()
}

/// The data file's lines, without their newlines (a last line without one
/// is shown as `PARTIAL:` and its text).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let lines: Vec<String> = text
        .split_inclusive(|b| *b == b'\n')
        .map(|line| match line.strip_suffix(b"\n") {
            Some(line) => String::from_utf8_lossy(line).into_owned(),
            None => format!("PARTIAL:{}", String::from_utf8_lossy(line)),
        })
        .collect();
    lines
}

/// The ids of the data file's lines written by [`pending`]; other lines
/// as they are.
pub fn ids(path: &std::path::Path) -> Vec<String> {
    lines(path)
        .into_iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(String::from))
                .unwrap_or(line)
        })
        .collect()
}

/// The files next to `path` whose names start with its name and `.cut`.
pub fn cut_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let name = format!("{}.cut", path.file_name().unwrap().to_string_lossy());
    let mut found: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
        .collect();
    found.sort();
    found
}

fn write(id: &str, body: &str) -> (Pending, oneshot::Receiver<Result<(), String>>) {
    let (done, rx) = oneshot::channel();
    (
        Pending {
            key: index::key(id),
            line: format!("{body}\n").into_bytes(),
            done,
        },
        rx,
    )
}

#[test]
fn writes_each_id_once_across_restarts_and_repairs_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/results.jsonl");
    let mut files = Files::open(&path).unwrap();
    let (a, _) = write("a\nb", "{\"n\":1}");
    let (b, _) = write("\"b\"", "{\"n\":2}");
    files.write(&[a, b]).unwrap();
    drop(files);
    // A crash after the data of "c" was written but before its id.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"n\":3}\n{\"n\":")
        .unwrap();
    let files = Files::open(&path).unwrap();
    assert_eq!(files.index.count().unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"n\":1}\n{\"n\":2}\n"
    );
    // Ids that differ only where a line-based file would split them
    // are different ids; the ones written are known.
    let known = files
        .index
        .contains(&[index::key("a\nb"), index::key("a"), index::key("\"b\"")])
        .unwrap();
    assert_eq!(known, vec![true, false, true]);
}

#[test]
fn the_ids_file_of_an_earlier_version_is_indexed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n").unwrap();
    std::fs::write(dir.path().join("results.jsonl.ids"), "a\nb\n").unwrap();
    let files = Files::open(&path).unwrap();
    assert_eq!(files.index.count().unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"n\":1}\n{\"n\":2}\n",
        "the line without an id was never acknowledged"
    );
    assert!(dir.path().join("results.jsonl.ids.imported").exists());
    assert!(!dir.path().join("results.jsonl.ids").exists());
}

#[test]
fn a_second_writer_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let first = Files::open(&path).unwrap();
    let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = opened.clone();
    let second_path = path;
    let second = std::thread::spawn(move || {
        let files = Files::open(&second_path).unwrap();
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(files);
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !opened.load(std::sync::atomic::Ordering::SeqCst),
        "the second writer did not wait"
    );
    drop(first);
    second.join().unwrap();
    assert!(opened.load(std::sync::atomic::Ordering::SeqCst));
}
