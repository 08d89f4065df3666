//! The problem list that validation fills, and the checks of single values
//! (names, durations, whole numbers) every part of validation uses.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    Problem,
    raw::{Number, RawStage, Text},
};
use crate::duration;

/// Longest name of a pipeline or a stage: queue names are at most 255 bytes.
const MAX_NAME: usize = 64;

/// Problems found so far; each is kept once. Also where the file's
/// relative paths start from.
#[derive(Default)]
pub(crate) struct Checker {
    pub problems: Vec<Problem>,
    /// The pipeline file's folder: relative paths in the file (`sink.path`,
    /// a program given as a path) are relative to it.
    pub dir: PathBuf,
}

/// A stage's settings over `defaults`: each field with the path it came from.
pub(crate) struct Layers<'a> {
    pub stage: &'a RawStage,
    pub defaults: &'a RawStage,
    /// `stages.{name}`.
    pub path: String,
}

impl Layers<'_> {
    /// The stage's value of a field, else the default's, with its path.
    pub fn get<T>(
        &self,
        field: &str,
        read: impl Fn(&RawStage) -> Option<T>,
    ) -> Option<(T, String)> {
        match read(self.stage) {
            Some(value) => Some((value, format!("{}.{field}", self.path))),
            None => read(self.defaults).map(|value| (value, format!("defaults.{field}"))),
        }
    }
}

impl Checker {
    /// A checker for the file at `source`.
    pub fn for_file(source: &Path) -> Checker {
        Checker {
            problems: Vec::new(),
            dir: source.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    /// `path` as written in the file, resolved from the file's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    /// Records a problem at `path`.
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let problem = Problem::new(path, message);
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// How many problems were found so far (to tell whether a part added any).
    pub fn count(&self) -> usize {
        self.problems.len()
    }

    /// A pipeline or stage name: `[a-z][a-z0-9_-]*`, at most 64 characters.
    pub fn name(&mut self, path: &str, name: &str) {
        let mut chars = name.chars();
        let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !starts_well || !rest_ok {
            self.problem(
                path,
                format!("`{name}` is not a valid name: use a lower-case letter, then lower-case letters, digits, `_` or `-`"),
            );
        } else if name.len() > MAX_NAME {
            self.problem(
                path,
                format!("`{name}` is longer than {MAX_NAME} characters"),
            );
        }
    }

    /// A duration longer than zero.
    pub fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match duration::parse(text) {
            Ok(d) if d.is_zero() => {
                self.problem(path, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(error) => {
                self.problem(path, error);
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub fn whole(&mut self, path: &str, number: Number, min: u64, max: u64) -> Option<u64> {
        let n = number.0;
        if !n.is_finite() || n.fract() != 0.0 {
            self.problem(path, format!("`{n}` is not a whole number"));
            None
        } else if n < min as f64 || n > max as f64 {
            self.problem(
                path,
                format!("{n} is out of range: it must be between {min} and {max}"),
            );
            None
        } else {
            Some(n as u64)
        }
    }

    /// A whole number from the layers, or the default.
    pub fn number(
        &mut self,
        layers: &Layers<'_>,
        field: &str,
        read: impl Fn(&RawStage) -> Option<Number>,
        range: (u64, u64),
        default: u64,
    ) -> u64 {
        match layers.get(field, read) {
            Some((n, path)) => self.whole(&path, n, range.0, range.1).unwrap_or(default),
            None => default,
        }
    }

    /// A duration from the layers (or the default), and the path it came from.
    pub fn layered_duration(
        &mut self,
        layers: &Layers<'_>,
        field: &str,
        read: impl Fn(&RawStage) -> Option<Text>,
        default: Duration,
    ) -> (Duration, Option<String>) {
        match layers.get(field, read) {
            Some((text, path)) => (self.duration(&path, &text).unwrap_or(default), Some(path)),
            None => (default, None),
        }
    }
}
