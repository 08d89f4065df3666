use std::fs::OpenOptions;

use super::*;

fn keys(ids: &[&str]) -> Vec<Key> {
    ids.iter().map(|id| key(id)).collect()
}

/// The index of `data`, its log started if it had none; and the data
/// length it covers.
fn open_at(data: &Path, compact_at: usize) -> (Index, u64) {
    let (mut index, found) = Index::open_compacting_at(data, compact_at).unwrap();
    if found == Found::NoLog {
        index.begin(index.data_len()).unwrap();
    }
    let len = index.data_len();
    (index, len)
}

fn open(data: &Path) -> (Index, u64) {
    open_at(data, COMPACT_AT)
}

#[test]
fn records_survive_reopening_and_any_id_is_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("out.jsonl");
    let ids = keys(&["plain", "two\nlines", "\"quoted\"", "\\xff\\xfe not utf-8"]);
    {
        let (mut index, len) = open(&data);
        assert_eq!(len, 0);
        assert_eq!(index.contains(&ids).unwrap(), vec![false; 4]);
        index.record(&ids[..2], 40).unwrap();
    }
    let (index, len) = open(&data);
    assert_eq!(len, 40);
    assert_eq!(index.count().unwrap(), 2);
    assert_eq!(
        index.contains(&ids).unwrap(),
        vec![true, true, false, false]
    );
    assert_ne!(key("a\nb"), key("a b"));
}

#[test]
fn hashes_merged_into_the_sorted_file_are_found_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("out.jsonl");
    let all: Vec<Key> = (0..5000).map(|i| key(&format!("id-{i}"))).collect();
    {
        // Merged every 700 hashes: several sorted files, and a log left.
        let (mut index, _) = open_at(&data, 700);
        for (n, batch) in all[..4000].chunks(100).enumerate() {
            index.record(batch, (n as u64 + 1) * 10).unwrap();
        }
        assert!(index.sorted.count >= 3500, "merged: {}", index.sorted.count);
        assert_eq!(index.count().unwrap(), 4000);
    }
    let (index, len) = open_at(&data, 700);
    assert_eq!(len, 400);
    assert_eq!(index.count().unwrap(), 4000);
    let found = index.contains(&all).unwrap();
    assert!(
        found[..4000].iter().all(|f| *f),
        "every recorded hash is found"
    );
    assert!(found[4000..].iter().all(|f| !*f), "no other hash is");
}

#[test]
fn a_record_cut_by_a_crash_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("out.jsonl");
    let ids = keys(&["a", "b", "c"]);
    {
        let (mut index, _) = open(&data);
        index.record(&ids[..1], 10).unwrap();
        index.record(&ids[1..], 30).unwrap();
    }
    // The second record loses its last bytes (its checksum).
    let log = dir.path().join("out.jsonl.log");
    let len = std::fs::metadata(&log).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (mut index, len) = open(&data);
    assert_eq!(len, 10);
    assert_eq!(index.contains(&ids).unwrap(), vec![true, false, false]);
    // What follows is readable again.
    index.record(&ids[1..2], 20).unwrap();
    drop(index);
    let (index, len) = open(&data);
    assert_eq!(len, 20);
    assert_eq!(index.count().unwrap(), 2);
}

#[test]
fn a_crash_after_merging_does_not_count_the_log_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("out.jsonl");
    let ids = keys(&["a", "b", "c", "d"]);
    let log = dir.path().join("out.jsonl.log");
    let before_merge;
    {
        let (mut index, _) = open_at(&data, 4);
        index.record(&ids[..3], 30).unwrap();
        before_merge = std::fs::read(&log).unwrap();
        index.record(&ids[3..], 40).unwrap(); // merges
        assert_eq!(index.sorted.count, 4);
    }
    // The crash: the sorted file was renamed, the log not yet restarted.
    std::fs::write(&log, &before_merge).unwrap();
    let (index, len) = open_at(&data, 4);
    assert_eq!(len, 40);
    assert_eq!(index.count().unwrap(), 4);
    assert_eq!(index.contains(&ids).unwrap(), vec![true; 4]);
}

#[test]
fn an_index_of_the_previous_format_is_converted() {
    use redb::TableDefinition;
    const IDS: TableDefinition<'_, &[u8], ()> = TableDefinition::new("ids");
    const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("out.jsonl");
    let ids = keys(&["a", "b", "c"]);
    {
        let db = redb::Database::create(dir.path().join("out.jsonl.index")).unwrap();
        let write = db.begin_write().unwrap();
        {
            let mut table = write.open_table(IDS).unwrap();
            for id in &ids[..2] {
                table.insert(id.as_slice(), ()).unwrap();
            }
            write
                .open_table(META)
                .unwrap()
                .insert("data_len", 77)
                .unwrap();
        }
        write.commit().unwrap();
    }
    let (index, len) = open(&data);
    assert_eq!(len, 77);
    assert_eq!(index.contains(&ids).unwrap(), vec![true, true, false]);
    assert!(dir.path().join("out.jsonl.index.imported").exists());
    assert!(!dir.path().join("out.jsonl.index").exists());
}
