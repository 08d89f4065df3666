//! What is wrong with a pipeline file: every problem, each with the path to
//! its field and, where known, its line or the environment variable that set
//! it.

use std::{fmt, path::PathBuf};

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path to the field, like `stages.grade.retry.attempts`; empty for a
    /// problem with the whole file.
    pub path: String,
    /// 1-based line in the file, where the parser knows it.
    pub line: Option<usize>,
    /// The environment variable that set this field, when one did.
    pub from_env: Option<String>,
    /// What is wrong, and how to fix it where that is not obvious.
    pub message: String,
}

impl Problem {
    /// A problem at `path`; the line is looked up later.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line: None,
            from_env: None,
            message: message.into(),
        }
    }
}

/// A pipeline file that cannot be used, with all its problems.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidPipeline {
    /// The file, as given.
    pub file: PathBuf,
    /// Every problem found, in file order where lines are known.
    pub problems: Vec<Problem>,
}

impl InvalidPipeline {
    /// A file with a single problem.
    pub fn single(file: impl Into<PathBuf>, problem: Problem) -> InvalidPipeline {
        InvalidPipeline {
            file: file.into(),
            problems: vec![problem],
        }
    }

    /// One line per problem, `file:line: path: message`.
    pub fn lines(&self) -> Vec<String> {
        let file = self.file.display();
        self.problems
            .iter()
            .map(|problem| {
                let mut out = match problem.line {
                    Some(line) => format!("{file}:{line}: "),
                    None => format!("{file}: "),
                };
                if !problem.path.is_empty() {
                    out.push_str(&problem.path);
                    out.push_str(": ");
                }
                out.push_str(&problem.message);
                if let Some(var) = &problem.from_env {
                    out.push_str(&format!(" (set by the environment variable {var})"));
                }
                out
            })
            .collect()
    }
}

impl fmt::Display for InvalidPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "{} has {count} {noun}:", self.file.display())?;
        for line in self.lines() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_each_problem_with_file_line_and_path() {
        let invalid = InvalidPipeline {
            file: "p.yaml".into(),
            problems: vec![
                Problem {
                    line: Some(7),
                    ..Problem::new("stages.a.prefetch", "must be at least 1")
                },
                Problem::new("", "is empty"),
                Problem {
                    from_env: Some("WARREN_DEFAULTS__PREFETCH".into()),
                    ..Problem::new("defaults.prefetch", "must be at least 1")
                },
            ],
        };
        assert_eq!(
            invalid.lines(),
            vec![
                "p.yaml:7: stages.a.prefetch: must be at least 1",
                "p.yaml: is empty",
                "p.yaml: defaults.prefetch: must be at least 1 (set by the environment variable WARREN_DEFAULTS__PREFETCH)",
            ]
        );
        assert!(invalid.to_string().starts_with("p.yaml has 3 problems:"));
    }
}
