//! Two sink stages must not share a file: not their data file (the second
//! would wait for ever for the first one's lock) and not a file the sink
//! keeps beside it (its index, a file it moves lines aside to). Paths are
//! compared as written, `.` and `..` resolved (both are relative to the
//! same folder); symbolic links are not followed.

use std::path::{Component, Path, PathBuf};

use super::check::Checker;
use crate::pipeline::{Stage, StageKind};

/// The files a sink keeps beside its data file `{path}`: `{path}` plus
/// one of these (and `{path}.cut.{n}`, [`CUT`]).
pub const BESIDE: [&str; 8] = [
    ".log",
    ".log.new",
    ".keys",
    ".keys.new",
    ".ids",
    ".ids.imported",
    ".index",
    ".index.imported",
];

/// Lines a sink moves aside go to `{path}.cut.{n}`.
pub const CUT: &str = ".cut.";

/// `path` with `.` dropped and `..` applied where it can be.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// How the sink at `other` uses the file `path` of another sink, if it
/// does: `""` (its data file) or the suffix of the file beside it.
fn shared(path: &Path, other: &Path) -> Option<String> {
    if path == other {
        return Some(String::new());
    }
    let (path, other) = (path.to_str()?, other.to_str()?);
    let suffix = path.strip_prefix(other)?;
    (BESIDE.contains(&suffix) || suffix.starts_with(CUT)).then(|| suffix.to_string())
}

/// Reports each sink stage whose files are another sink stage's.
pub(crate) fn check(v: &mut Checker, stages: &[Stage]) {
    let sinks: Vec<(&str, PathBuf)> = stages
        .iter()
        .filter_map(|stage| match &stage.kind {
            StageKind::Sink(spec) => Some((stage.name.as_str(), normal(&spec.path))),
            _ => None,
        })
        .collect();
    for (i, (name, path)) in sinks.iter().enumerate() {
        for (other, other_path) in &sinks[..i] {
            let clash = shared(path, other_path)
                .map(|suffix| (suffix, *other, *name))
                .or_else(|| shared(other_path, path).map(|suffix| (suffix, *name, *other)));
            let Some((suffix, owner, user)) = clash else {
                continue;
            };
            let what = if suffix.is_empty() {
                format!(
                    "`{}` is also the file of stage `{other}`'s sink; two sinks on one file would wait for each other's lock",
                    path.display()
                )
            } else {
                format!(
                    "stage `{user}`'s sink file is a file stage `{owner}`'s sink keeps beside its own (`{suffix}`)"
                )
            };
            v.problem(
                format!("stages.{name}.sink.path"),
                format!("{what}; give each sink a file of its own"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse_str;

    fn problems(paths: &[&str]) -> Vec<String> {
        let mut text = String::from("pipeline: p\nstages:\n");
        for (i, path) in paths.iter().enumerate() {
            text.push_str(&format!("  s{i}:\n    sink: {{ path: \"{path}\" }}\n"));
        }
        match parse_str(&text, Path::new("p.yaml"), &[]) {
            Ok(_) => Vec::new(),
            Err(invalid) => invalid.lines(),
        }
    }

    #[test]
    fn two_sinks_on_one_file_are_refused() {
        let lines = problems(&["out/r.jsonl", "./out/x/../r.jsonl"]);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("stages.s1.sink.path"), "{lines:#?}");
        assert!(
            lines[0].contains("also the file of stage `s0`"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_sink_on_another_sinks_index_is_refused_either_way() {
        for (a, b) in [
            ("r.jsonl", "r.jsonl.log"),
            ("r.jsonl.keys", "r.jsonl"),
            ("r.jsonl", "r.jsonl.cut.1"),
            ("r.jsonl", "./r.jsonl.keys.new"),
        ] {
            let lines = problems(&[a, b]);
            assert_eq!(lines.len(), 1, "{a} {b}: {lines:#?}");
            assert!(lines[0].contains("stages.s1.sink.path"), "{lines:#?}");
            assert!(lines[0].contains("keeps beside its own"), "{lines:#?}");
        }
    }

    #[test]
    fn sinks_on_files_of_their_own_pass() {
        assert!(problems(&["r.jsonl", "r.jsonl2", "r.log", "other/r.jsonl", "q"]).is_empty());
    }
}
