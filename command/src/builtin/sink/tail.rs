//! What the sink keeps of its data file when it starts, or when it finds
//! the file changed under it while running: the facts read from the file
//! ([`Facts::read`]) and the decision ([`plan`], pure). Whatever is not
//! kept is moved aside ([`super::aside`]), never deleted; what is kept
//! always ends with a whole line.

use std::{fs::File, io, os::unix::fs::FileExt};

use super::MAX_BATCH;

/// What the data file holds, against what the index recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The index has a log: `recorded` is what its records cover.
    pub indexed: bool,
    /// The length the index covers (what `.keys` covers without a log).
    pub recorded: u64,
    /// The file's length.
    pub on_disk: u64,
    /// `recorded` is 0, or within the file just after a newline.
    pub recorded_ends_line: bool,
    /// Whole lines between `recorded` and the end (counted up to one
    /// more than a batch holds).
    pub lines_beyond: u64,
    /// The length up to and with the file's last newline (0 without one).
    pub last_line_end: u64,
}

/// When the file is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// On start, after a stop or a crash.
    Start,
    /// Before a batch, the file changed by someone else (cut by
    /// logrotate's `copytruncate`, lines appended by another program).
    Running,
}

/// Why bytes are kept or moved aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The file is as recorded.
    Same,
    /// No index: every whole line counts as written (ids unknown).
    Adopted,
    /// Lines written after the last record: a crash stopped their batch
    /// before it was recorded; its messages were not acknowledged.
    CrashTail,
    /// Shorter than recorded: lines were removed by someone else (their
    /// messages count as written).
    Shorter,
    /// Longer than any batch, or not as recorded: written by someone else;
    /// every whole line counts as written (ids unknown).
    Foreign,
}

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Bytes kept; the rest is moved aside.
    pub keep: u64,
    /// Record `keep` in the index (with no ids): it is not what it holds.
    pub record: bool,
    /// Why.
    pub why: Why,
}

/// Decides what to keep of the file.
pub fn plan(facts: &Facts, when: When) -> Plan {
    let whole = |why| Plan {
        keep: facts.last_line_end,
        record: true,
        why,
    };
    if !facts.indexed {
        return whole(Why::Adopted);
    }
    if facts.on_disk < facts.recorded {
        return whole(Why::Shorter);
    }
    if !facts.recorded_ends_line {
        return whole(Why::Foreign);
    }
    if facts.on_disk == facts.recorded {
        return Plan {
            keep: facts.recorded,
            record: false,
            why: Why::Same,
        };
    }
    match when {
        When::Start if facts.lines_beyond <= MAX_BATCH as u64 => Plan {
            keep: facts.recorded,
            record: false,
            why: Why::CrashTail,
        },
        _ => whole(Why::Foreign),
    }
}

impl Facts {
    /// Reads the facts of `file` against the length the index records.
    pub fn read(file: &File, indexed: bool, recorded: u64) -> io::Result<Facts> {
        let on_disk = file.metadata()?.len();
        let recorded_ends_line = recorded == 0
            || (recorded <= on_disk && {
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, recorded - 1)?;
                byte[0] == b'\n'
            });
        let mut lines_beyond = 0;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut at = recorded;
        while at < on_disk && lines_beyond <= MAX_BATCH as u64 {
            let read = file.read_at(&mut buffer, at)?;
            if read == 0 {
                break;
            }
            lines_beyond += buffer[..read].iter().filter(|b| **b == b'\n').count() as u64;
            at += read as u64;
        }
        let mut last_line_end = 0;
        let mut end = on_disk;
        while end > 0 {
            let start = end.saturating_sub(buffer.len() as u64);
            let chunk = &mut buffer[..(end - start) as usize];
            file.read_exact_at(chunk, start)?;
            if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
                last_line_end = start + i as u64 + 1;
                break;
            }
            end = start;
        }
        Ok(Facts {
            indexed,
            recorded,
            on_disk,
            recorded_ends_line,
            lines_beyond,
            last_line_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(recorded: u64, on_disk: u64, lines_beyond: u64, last_line_end: u64) -> Facts {
        Facts {
            indexed: true,
            recorded,
            on_disk,
            recorded_ends_line: true,
            lines_beyond,
            last_line_end,
        }
    }

    fn keep(plan: Plan) -> (u64, bool, Why) {
        (plan.keep, plan.record, plan.why)
    }

    #[test]
    fn a_file_as_recorded_is_kept() {
        let f = facts(100, 100, 0, 100);
        assert_eq!(keep(plan(&f, When::Start)), (100, false, Why::Same));
    }

    #[test]
    fn without_an_index_every_whole_line_is_kept() {
        let f = Facts {
            indexed: false,
            recorded_ends_line: false,
            ..facts(0, 120, 9, 110)
        };
        assert_eq!(keep(plan(&f, When::Start)), (110, true, Why::Adopted));
    }

    #[test]
    fn a_crash_tail_of_one_batch_at_most_is_cut_on_start_only() {
        let f = facts(100, 150, MAX_BATCH as u64, 140);
        assert_eq!(keep(plan(&f, When::Start)), (100, false, Why::CrashTail));
        assert_eq!(keep(plan(&f, When::Running)), (140, true, Why::Foreign));
        let more = facts(100, 150, MAX_BATCH as u64 + 1, 150);
        assert_eq!(keep(plan(&more, When::Start)), (150, true, Why::Foreign));
    }

    #[test]
    fn a_shorter_file_is_kept_to_its_last_whole_line() {
        let f = facts(100, 0, 0, 0);
        assert_eq!(keep(plan(&f, When::Running)), (0, true, Why::Shorter));
        let f = facts(100, 57, 0, 40);
        assert_eq!(keep(plan(&f, When::Start)), (40, true, Why::Shorter));
    }

    #[test]
    fn a_recorded_length_amid_a_line_is_not_a_cut_point() {
        let f = Facts {
            recorded_ends_line: false,
            ..facts(100, 130, 1, 130)
        };
        assert_eq!(keep(plan(&f, When::Start)), (130, true, Why::Foreign));
    }

    #[test]
    fn facts_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "{}\n[1]\n\"x\"\n{\"a\"").unwrap();
        let file = File::open(&path).unwrap();
        let f = Facts::read(&file, true, 3).unwrap();
        assert_eq!(
            (
                f.on_disk,
                f.recorded_ends_line,
                f.lines_beyond,
                f.last_line_end
            ),
            (15, true, 2, 11)
        );
        let f = Facts::read(&file, true, 4).unwrap();
        assert!(!f.recorded_ends_line);
        let f = Facts::read(&file, true, 40).unwrap();
        assert!(!f.recorded_ends_line);
    }
}
