//! Where each key of a YAML file is: a map from field path
//! (`stages.grade.retry.attempts`, `stages.grade.retry.backoff[1]`) to its
//! 1-based line, built from the parser's events. The `config` crate keeps no
//! positions, so errors look their line up here.

use std::collections::{HashMap, HashSet};

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, ScanError},
};

/// Field paths and their lines, and the keys written twice.
#[derive(Debug, Default)]
pub(crate) struct LineMap {
    lines: HashMap<String, usize>,
    /// Paths of keys that appear more than once in the same mapping, with
    /// the line of the repetition.
    pub duplicates: Vec<(String, usize)>,
}

impl LineMap {
    /// Reads the file's structure. A syntax error is returned with its line.
    pub fn parse(text: &str) -> Result<LineMap, ScanError> {
        let mut walker = Walker::default();
        Parser::new_from_str(text).load(&mut walker, false)?;
        Ok(walker.map)
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map {
        key: Option<String>,
        awaiting_key: bool,
        seen: HashSet<String>,
    },
    Seq {
        index: usize,
    },
}

#[derive(Default)]
struct Walker {
    frames: Vec<Frame>,
    map: LineMap,
}

impl Walker {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.frames {
            match frame {
                Frame::Map { key: Some(key), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Map { key: None, .. } => {}
                Frame::Seq { index } => path.push_str(&format!("[{index}]")),
            }
        }
        path
    }

    /// A value (scalar or collection) starts at `mark`.
    fn value_starts(&mut self, mark: Marker) {
        if let Some(Frame::Seq { .. }) = self.frames.last() {
            let path = self.path();
            self.map.lines.entry(path).or_insert(mark.line());
        }
    }

    /// The value that started last is complete.
    fn value_done(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { awaiting_key, .. }) => *awaiting_key = true,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }

    /// If the innermost collection is a mapping waiting for a key, takes
    /// `text` as that key and returns true.
    fn take_key(&mut self, text: &str, mark: Marker) -> bool {
        let Some(Frame::Map {
            key,
            awaiting_key,
            seen,
        }) = self.frames.last_mut()
        else {
            return false;
        };
        if !*awaiting_key {
            return false;
        }
        *awaiting_key = false;
        *key = Some(text.to_string());
        let duplicate = !seen.insert(text.to_string());
        let path = self.path();
        if duplicate {
            self.map.duplicates.push((path, mark.line()));
        } else {
            self.map.lines.insert(path, mark.line());
        }
        true
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) if self.take_key(&text, mark) => {}
            Event::Alias(_) if self.take_key("*alias", mark) => {}
            Event::Scalar(..) | Event::Alias(_) => {
                self.value_starts(mark);
                self.value_done();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key is unusual; give it a
                // placeholder name so paths below it stay distinct.
                if !self.take_key("?", mark) {
                    self.value_starts(mark);
                }
                self.frames.push(match event {
                    Event::MappingStart(..) => Frame::Map {
                        key: None,
                        awaiting_key: true,
                        seen: HashSet::new(),
                    },
                    _ => Frame::Seq { index: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
pipeline: grading
stages:
  lookup:
    command: [worker]
    outputs: [grade]
  grade:
    retry:
      attempts: 3
      backoff:
        - 1s
        - 10s
";

    #[test]
    fn finds_lines_of_nested_keys_and_list_items() {
        let map = LineMap::parse(FILE).unwrap();
        assert_eq!(map.line_of("pipeline"), Some(1));
        assert_eq!(map.line_of("stages.lookup.outputs"), Some(5));
        assert_eq!(map.line_of("stages.grade.retry.attempts"), Some(8));
        assert_eq!(map.line_of("stages.grade.retry.backoff[1]"), Some(11));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let map = LineMap::parse(FILE).unwrap();
        assert_eq!(map.line_of("stages.grade.retry.missing"), Some(7));
        assert_eq!(map.line_of("nothing"), None);
    }

    #[test]
    fn reports_duplicate_keys() {
        let map = LineMap::parse("pipeline: a\nstages: {}\npipeline: b\n").unwrap();
        assert_eq!(map.duplicates, vec![("pipeline".to_string(), 3)]);
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let error = LineMap::parse("stages:\n  a: [1,\n  b: 2\n").unwrap_err();
        assert!(error.marker().line() >= 2, "{error}");
    }
}
