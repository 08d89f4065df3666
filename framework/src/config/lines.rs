//! Where each key of a YAML file is: a map from field path
//! (`stages.grade.retry.attempts`, `stages.grade.retry.backoff[1]`) to its
//! 1-based line, built from the parser's events. The `config` crate keeps no
//! positions, so errors look their line up here. The walk also counts the
//! values the file stands for once its aliases are expanded, so that an
//! alias bomb (a few lines that expand to billions of values) is refused
//! before anything expands it.

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
    /// Values (scalars and collections) once every alias is expanded.
    pub expanded: u64,
}

impl LineMap {
    /// Reads the file's structure. A syntax error is returned with its line.
    pub fn parse(text: &str) -> Result<LineMap, ScanError> {
        let mut walker = Walker::default();
        Parser::new_from_str(text).load(&mut walker, false)?;
        Ok(walker.map)
    }

    /// The line of `path` itself, if the file has it.
    pub fn exact_line(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
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
    /// Expanded size of each anchor.
    anchors: HashMap<usize, u64>,
    /// Open collections: their anchor and the count when they started.
    open: Vec<(usize, u64)>,
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

    /// Counts the values `event` stands for, aliases expanded.
    fn count(&mut self, event: &Event) {
        let expanded = &mut self.map.expanded;
        match event {
            Event::Scalar(_, _, anchor, _) => {
                *expanded = expanded.saturating_add(1);
                if *anchor > 0 {
                    self.anchors.insert(*anchor, 1);
                }
            }
            Event::Alias(anchor) => {
                let size = self.anchors.get(anchor).copied().unwrap_or(1);
                *expanded = expanded.saturating_add(size);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                *expanded = expanded.saturating_add(1);
                self.open.push((*anchor, *expanded));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some((anchor, start)) = self.open.pop()
                    && anchor > 0
                {
                    self.anchors.insert(anchor, *expanded - start + 1);
                }
            }
            _ => {}
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
        self.count(&event);
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
    fn counts_values_with_aliases_expanded() {
        let plain = LineMap::parse("a: [1, 2]\nb: x\n").unwrap();
        // The root map, a, the list, 1, 2, b, x.
        assert_eq!(plain.expanded, 7);
        let aliased = LineMap::parse("a: &l [1, 2]\nb: *l\nc: *l\n").unwrap();
        // As above plus c and two more copies of the three-value list.
        assert_eq!(aliased.expanded, 7 + 1 + 3 + 2);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let previous = format!("*a{}", level - 1);
            bomb.push_str(&format!(
                "a{level}: &a{level} [{}]\n",
                vec![previous; 10].join(", ")
            ));
        }
        assert!(LineMap::parse(&bomb).unwrap().expanded > 1_000_000_000);
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let error = LineMap::parse("stages:\n  a: [1,\n  b: 2\n").unwrap_err();
        assert!(error.marker().line() >= 2, "{error}");
    }
}
