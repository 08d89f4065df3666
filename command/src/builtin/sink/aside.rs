//! Bytes the sink takes off the end of its data file (a crash's tail, a
//! line cut short) are moved into a file beside it, `{path}.cut.{n}` (the
//! first free `n` from 1), never deleted: the copy is synced and its name
//! is synced before the data file is cut.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::disk;

/// Moves the bytes of `data` (at `path`) from `from` to `to` (its end)
/// into a new file beside it, then cuts `data` to `from`; returns the new
/// file's path.
pub fn move_aside(path: &Path, data: &File, from: u64, to: u64) -> io::Result<PathBuf> {
    let (aside, file) = new_file(path)?;
    let copied = (|| {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = buffer.len().min((to - at) as usize);
            data.read_exact_at(&mut buffer[..n], at)?;
            disk::write_at(&file, &aside, at - from, &buffer[..n])?;
            at += n as u64;
        }
        disk::sync(&file, &aside)?;
        disk::sync_dir(&aside)
    })();
    if let Err(error) = copied {
        let _ = disk::remove(&aside);
        return Err(error);
    }
    disk::set_len(data, path, from)?;
    disk::sync(data, path)?;
    Ok(aside)
}

/// The first `{path}.cut.{n}` that does not exist, created.
fn new_file(path: &Path) -> io::Result<(PathBuf, File)> {
    for n in 1u32.. {
        let aside = PathBuf::from(format!("{}.cut.{n}", path.display()));
        match disk::create_new(&aside) {
            Ok(file) => return Ok((aside, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::other("no free name to move bytes aside"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_moved_to_the_first_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "keep\ncut one\n").unwrap();
        std::fs::write(dir.path().join("out.jsonl.cut.1"), "earlier").unwrap();
        let data = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        let aside = move_aside(&path, &data, 5, 13).unwrap();
        assert_eq!(aside, dir.path().join("out.jsonl.cut.2"));
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "cut one\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.jsonl.cut.1")).unwrap(),
            "earlier"
        );
    }
}
