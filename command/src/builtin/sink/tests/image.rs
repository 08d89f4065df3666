//! Crash images: what a folder may hold after a crash at any point of the
//! sink's work. Before each change the sink makes ([`disk::Op`]), the
//! recorder keeps the folder as it is then (every earlier change on disk),
//! as its last syncs left it (only what was synced; a sync that failed
//! counts as done, the worst case), the two mixed (the data file one way,
//! the index files the other), and, before a write, the folder with only
//! the first bytes of that write (a torn write). Names (creations,
//! renames) count as durable at once: the sink syncs its folder after each
//! (checked separately).

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    rc::Rc,
};

use super::super::disk::{self, Op};

/// File name to contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// One state a crash may leave.
#[derive(Clone, Debug)]
pub struct Image {
    /// Where it was taken (for failure messages).
    pub label: String,
    /// The folder.
    pub files: Files,
    /// The ids acknowledged by then.
    pub acked: BTreeSet<String>,
}

/// Takes images of one folder; see the module docs.
pub struct Recorder {
    dir: PathBuf,
    data: String,
    durable: Files,
    /// Every image, in order.
    pub images: Vec<Image>,
    /// The ids acknowledged so far (the test adds them).
    pub acked: BTreeSet<String>,
    /// Changes seen so far.
    pub ops: usize,
    /// Fail the change with this number (from 0), once.
    pub fail_at: Option<usize>,
    /// Take images (off: only count and fail, and take the images of the
    /// changes in `window`).
    pub imaging: bool,
    /// Changes (from, to, not included) imaged even when `imaging` is off.
    pub window: (usize, usize),
    /// What each change was, in order (`Op`'s debug form, paths cut to
    /// their names).
    pub trace: Vec<String>,
}

/// The folder's regular files.
pub fn read_dir(dir: &Path) -> Files {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// Writes `files` into the empty folder `dir`.
pub fn restore(files: &Files, dir: &Path) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

impl Recorder {
    /// Records changes to the data file `data` and the files beside it,
    /// as they are now (counted as durable) on.
    pub fn new(data: &Path) -> Recorder {
        let dir = data.parent().unwrap().to_path_buf();
        let durable = read_dir(&dir);
        Recorder {
            dir,
            data: name(data),
            durable,
            images: Vec::new(),
            acked: BTreeSet::new(),
            ops: 0,
            fail_at: None,
            imaging: true,
            window: (0, 0),
            trace: Vec::new(),
        }
    }

    /// Installs `recorder` as this thread's hook, until the guard drops.
    pub fn install(recorder: &Rc<RefCell<Recorder>>) -> disk::hook::Guard {
        let recorder = recorder.clone();
        disk::hook::set(move |op| recorder.borrow_mut().on(op))
    }

    /// Takes the images of the folder as it is now (the end of a run).
    pub fn finish(&mut self, label: &str) {
        let now = read_dir(&self.dir);
        self.take(label, &now);
    }

    fn on(&mut self, op: &Op<'_>) -> std::io::Result<()> {
        let number = self.ops;
        self.ops += 1;
        self.trace.push(describe(op));
        let now = read_dir(&self.dir);
        if self.imaging || (self.window.0..self.window.1).contains(&number) {
            let label = format!("before change {number}: {op:?}");
            self.take(&label, &now);
            if let Op::Write { path, at, bytes } = op
                && bytes.len() > 1
            {
                let file = name(path);
                let old = now.get(&file).cloned().unwrap_or_default();
                let at = at.unwrap_or(old.len() as u64) as usize;
                let mut cuts = vec![1, bytes.len() / 2, bytes.len() - 1];
                cuts.dedup();
                for cut in cuts {
                    let mut torn = now.clone();
                    let contents = torn.entry(file.clone()).or_default();
                    if contents.len() < at + cut {
                        contents.resize(at + cut, 0);
                    }
                    contents[at..at + cut].copy_from_slice(&bytes[..cut]);
                    self.push(format!("{label}, torn after {cut} bytes"), torn);
                }
            }
        }
        match op {
            Op::Sync { path } => {
                let file = name(path);
                let contents = now.get(&file).cloned().unwrap_or_default();
                self.durable.insert(file, contents);
            }
            Op::Rename { from, to } => {
                let contents = self.durable.remove(&name(from)).unwrap_or_default();
                self.durable.insert(name(to), contents);
            }
            Op::Remove { path } => {
                self.durable.remove(&name(path));
            }
            _ => {}
        }
        if self.fail_at == Some(number) {
            return Err(disk::hook::injected());
        }
        Ok(())
    }

    /// The folder now, as synced, and mixed.
    fn take(&mut self, label: &str, now: &Files) {
        let durable: Files = now
            .keys()
            .map(|file| {
                let contents = self.durable.get(file).cloned().unwrap_or_default();
                (file.clone(), contents)
            })
            .collect();
        let mut data_now = durable.clone();
        let mut data_synced = now.clone();
        if let Some(contents) = now.get(&self.data) {
            data_now.insert(self.data.clone(), contents.clone());
        }
        if let Some(contents) = durable.get(&self.data) {
            data_synced.insert(self.data.clone(), contents.clone());
        }
        self.push(format!("{label}, as written"), now.clone());
        self.push(format!("{label}, as synced"), durable);
        self.push(
            format!("{label}, data as written, index as synced"),
            data_now,
        );
        self.push(
            format!("{label}, data as synced, index as written"),
            data_synced,
        );
    }

    fn push(&mut self, label: String, files: Files) {
        self.images.push(Image {
            label,
            files,
            acked: self.acked.clone(),
        });
    }
}

/// `op` with paths cut to their file names.
fn describe(op: &Op<'_>) -> String {
    match op {
        Op::Write { path, at, bytes } => {
            format!("write {} at {at:?} ({} bytes)", name(path), bytes.len())
        }
        Op::SetLen { path, len } => format!("set_len {} {len}", name(path)),
        Op::Sync { path } => format!("sync {}", name(path)),
        Op::Create { path } => format!("create {}", name(path)),
        Op::Rename { from, to } => format!("rename {} {}", name(from), name(to)),
        Op::Remove { path } => format!("remove {}", name(path)),
        Op::SyncDir { path } => format!("sync_dir of {}", name(path)),
    }
}
