//! Deploys: a stage's program file changed on disk. The files of a stage
//! are its program (`command`'s or `exec`'s first word, looked up in `PATH`
//! when it has no `/`, else relative to the pipeline file's folder) and
//! every argument naming a file there (a script: `[python3, worker.py]`).
//! Built-in stages (http, sink, gather) have none. Each poll takes their
//! fingerprint (modification time, size, inode); a new fingerprint seen on
//! two polls in a row (the copy is finished) is a deploy, and the stage's
//! workers roll ([`super::roll`]). A missing file is waited for.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use warren::{Stage, StageKind};

/// What one file looked like: `None` when it could not be read.
pub type Print = Option<(SystemTime, u64, u64)>;

/// The files whose change is a deploy of `stage`, whose pipeline file is
/// in `folder`.
pub fn files(stage: &Stage, folder: &Path) -> Vec<PathBuf> {
    let argv = match &stage.kind {
        StageKind::Command(command) => &command.argv,
        StageKind::Exec(exec) => &exec.argv,
        _ => return Vec::new(),
    };
    let mut files = Vec::new();
    if let Some(program) = argv.first() {
        if program.contains('/') {
            files.push(folder.join(program));
        } else if let Some(found) = in_path(program) {
            files.push(found);
        }
    }
    for arg in argv.iter().skip(1) {
        let path = folder.join(arg);
        if !arg.is_empty() && !arg.starts_with('-') && path.is_file() {
            files.push(path);
        }
    }
    files
}

fn in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The fingerprints of `files` now.
pub fn prints(files: &[PathBuf]) -> Vec<Print> {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
        .collect()
}

/// What a stage's files looked like (pure: fed with fingerprints).
#[derive(Clone, Debug, Default)]
pub struct Watch {
    known: Vec<Print>,
    pending: Option<Vec<Print>>,
}

impl Watch {
    /// Watching files that look like `now`.
    pub fn new(now: Vec<Print>) -> Watch {
        Watch {
            known: now,
            pending: None,
        }
    }

    /// One poll's fingerprints: true when they are a deploy (changed, and
    /// the same as at the poll before, every file readable).
    pub fn changed(&mut self, now: Vec<Print>) -> bool {
        if now == self.known {
            self.pending = None;
            return false;
        }
        if now.iter().any(Option::is_none) {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.known = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn print(at: u64, size: u64) -> Print {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(at), size, 1))
    }

    #[test]
    fn a_change_counts_once_it_holds_for_two_polls() {
        let mut watch = Watch::new(vec![print(1, 10)]);
        assert!(!watch.changed(vec![print(1, 10)]));
        assert!(!watch.changed(vec![print(2, 5)]), "still being written");
        assert!(!watch.changed(vec![print(3, 20)]), "still being written");
        assert!(watch.changed(vec![print(3, 20)]));
        assert!(!watch.changed(vec![print(3, 20)]), "once");
    }

    #[test]
    fn a_missing_file_is_waited_for() {
        let mut watch = Watch::new(vec![print(1, 10)]);
        assert!(!watch.changed(vec![None]));
        assert!(!watch.changed(vec![None]));
        assert!(!watch.changed(vec![print(4, 10)]));
        assert!(watch.changed(vec![print(4, 10)]));
    }

    #[test]
    fn the_program_and_arguments_naming_files_are_watched() {
        let folder = std::env::temp_dir().join(format!("warren-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("worker.py"), "print()").unwrap();
        let pipeline = warren::config::parse_str(
            "
pipeline: p
stages:
  a:
    command: [sh, worker.py, --flag, missing.txt]
  b:
    command: [./run.sh]
  c:
    http: { method: GET, url: 'http://127.0.0.1:1/' }
",
            &folder.join("p.yaml"),
            &[],
        )
        .unwrap();
        let a = files(&pipeline.stages[0], &folder);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a[0].ends_with("sh") && a[1] == folder.join("worker.py"));
        assert_eq!(
            files(&pipeline.stages[1], &folder),
            vec![folder.join("./run.sh")]
        );
        assert!(files(&pipeline.stages[2], &folder).is_empty());
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
