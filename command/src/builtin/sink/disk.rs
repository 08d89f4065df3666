//! Every change the sink makes to its files (the data file, the index's
//! log and sorted file, the files it moves aside) goes through these few
//! functions, so that tests can fail any one of them (a full disk, an
//! fsync error) and take an image of the folder before each, as a crash
//! there would leave it. Outside tests they are the plain calls.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

/// One change to the sink's files, as tests see it before it is made.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// `bytes` written at `at`, or at the end (`None`: the data file is
    /// opened to append).
    Write {
        path: &'a Path,
        at: Option<u64>,
        bytes: &'a [u8],
    },
    /// The file cut (or, never by the sink, grown) to `len`.
    SetLen { path: &'a Path, len: u64 },
    /// The file's data (and length) synced to disk.
    Sync { path: &'a Path },
    /// A file created, or emptied if it exists.
    Create { path: &'a Path },
    /// A rename within the folder.
    Rename { from: &'a Path, to: &'a Path },
    /// A file removed.
    Remove { path: &'a Path },
    /// The folder of `path` synced (its names survive a crash).
    SyncDir { path: &'a Path },
}

#[cfg(not(test))]
#[inline(always)]
fn before(_op: Op<'_>) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
use hook::before;

/// Appends `bytes` to `file` (opened to append).
pub fn append(mut file: &File, path: &Path, bytes: &[u8]) -> io::Result<()> {
    before(Op::Write {
        path,
        at: None,
        bytes,
    })?;
    file.write_all(bytes)
}

/// Writes `bytes` at `at`.
pub fn write_at(file: &File, path: &Path, at: u64, bytes: &[u8]) -> io::Result<()> {
    before(Op::Write {
        path,
        at: Some(at),
        bytes,
    })?;
    file.write_all_at(bytes, at)
}

/// Sets the file's length (the sink only ever shortens).
pub fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    before(Op::SetLen { path, len })?;
    file.set_len(len)
}

/// Syncs the file's data and length.
pub fn sync(file: &File, path: &Path) -> io::Result<()> {
    before(Op::Sync { path })?;
    file.sync_data()
}

/// Creates (or empties) a file to write and read.
pub fn create(path: &Path) -> io::Result<File> {
    before(Op::Create { path })?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Creates a file that must not exist yet.
pub fn create_new(path: &Path) -> io::Result<File> {
    if path.exists() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    before(Op::Create { path })?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Renames `from` to `to` (replacing it).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    before(Op::Rename { from, to })?;
    std::fs::rename(from, to)
}

/// Removes a file; one that is not there is no error.
pub fn remove(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    before(Op::Remove { path })?;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The folder holding `path`.
pub fn folder(path: &Path) -> PathBuf {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    }
}

/// Syncs the folder holding `path`, so that a file created, renamed or
/// removed in it stays so after a crash.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    before(Op::SyncDir { path })?;
    File::open(folder(path))?.sync_all()
}

/// An error about the file at `path`.
pub fn fail(path: &Path, error: impl std::fmt::Display) -> String {
    format!("{}: {error}", path.display())
}

/// [`sync_dir`], its error naming the folder.
pub fn sync_folder(path: &Path) -> Result<(), String> {
    sync_dir(path).map_err(|e| fail(&folder(path), format!("cannot sync the folder: {e}")))
}

/// A file written from the start through [`write_at`] (for a
/// `BufWriter`).
pub struct Writer<'a> {
    file: &'a File,
    path: &'a Path,
    at: u64,
}

impl<'a> Writer<'a> {
    /// Writes `file` (at `path`) from offset `at` on.
    pub fn new(file: &'a File, path: &'a Path, at: u64) -> Writer<'a> {
        Writer { file, path, at }
    }
}

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_at(self.file, self.path, self.at, buf)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Tests only: a function called before every [`Op`] of this thread,
/// which may fail it.
#[cfg(test)]
pub mod hook {
    use std::{cell::RefCell, io};

    use super::Op;

    type Hook = Box<dyn FnMut(&Op<'_>) -> io::Result<()>>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Calls `hook` before every change of this thread until the guard is
    /// dropped.
    pub fn set(hook: impl FnMut(&Op<'_>) -> io::Result<()> + 'static) -> Guard {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        Guard
    }

    /// Removes the hook when dropped.
    pub struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            HOOK.with(|h| *h.borrow_mut() = None);
        }
    }

    pub(super) fn before(op: Op<'_>) -> io::Result<()> {
        HOOK.with(|h| match h.borrow_mut().as_mut() {
            Some(hook) => hook(&op),
            None => Ok(()),
        })
    }

    /// An injected error (as a full disk would give).
    pub fn injected() -> io::Error {
        io::Error::other("injected fault")
    }
}
