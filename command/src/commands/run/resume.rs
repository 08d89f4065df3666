//! How far sending got, kept in `.warren/{pipeline}-{key}.json` in the
//! working directory (`key` stands for the input file's path): the lines
//! the broker confirmed, as a byte offset and a digest of the bytes before
//! it; and where a new run of the same input starts from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warren::Pipeline;

use crate::input::{self, Source, Start};

/// How far sending got, saved as it goes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The input file.
    pub input: String,
    /// Lines of the input up to the last one confirmed.
    pub lines: usize,
    /// Bytes of the input up to the end of that line.
    pub offset: u64,
    /// SHA-256 of those bytes, hex.
    pub digest: String,
    /// Messages confirmed, by every run of this input.
    pub sent: usize,
}

/// Where the state of a run of `source` is kept (`None` for stdin).
pub fn state_path(pipeline: &Pipeline, source: &Source) -> Option<PathBuf> {
    let Source::File(path) = source else {
        return None;
    };
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let hash = Sha256::digest(absolute.to_string_lossy().as_bytes());
    let key = crate::digest::hex(&hash[..6]);
    Some(PathBuf::from(".warren").join(format!("{}-{key}.json", pipeline.name)))
}

/// Where sending starts, from the saved state: after what an earlier run
/// sent if the input still begins with it.
pub fn resume(source: &Source, state: &State) -> Start {
    let Source::File(path) = source else {
        return Start::default();
    };
    if state.offset == 0 {
        return Start::default();
    }
    match input::prefix(path, state.offset) {
        Ok(Some(start)) if hex(start.digest.clone()) == state.digest => {
            err!(
                "resuming: the first {} lines ({} inputs) were sent by an earlier run; sending the rest",
                start.lines,
                state.sent
            );
            start
        }
        _ => {
            err!(
                "{} changed since an earlier run sent its first {} lines: sending all of it again (the sink writes each result once)",
                source.name(),
                state.lines
            );
            Start::default()
        }
    }
}

pub fn hex(digest: Sha256) -> String {
    crate::digest::hex(&digest.finalize())
}

pub fn load_state(path: &Path) -> State {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Writes the state atomically (a new file renamed over the old one).
pub fn save_state(path: &Path, state: &State) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension("json.new");
        std::fs::write(
            &temp,
            serde_json::to_vec_pretty(state).expect("state encodes"),
        )?;
        std::fs::rename(temp, path)
    };
    if let Err(error) = write() {
        tracing::warn!(
            "cannot record progress in {}: {error}; a resumed run would send everything again",
            path.display()
        );
    }
}
