//! Reading a pipeline file: raw file -> validated [`Pipeline`].
//!
//! The file is read as YAML, then environment overrides are laid over it
//! (`overlay.rs`): `WARREN_<PATH>` where `__` separates the path's parts
//! (`WARREN_DEFAULTS__PREFETCH=8`, `WARREN_STAGES__GRADE__CONCURRENCY=4`,
//! `WARREN_BROKER__URL=...`), then `AMQP_URL` for `broker.url`. Variables
//! without `__` (like `WARREN_STAGE`, set for workers) are not overrides.
//!
//! Every problem is collected, each with its field path and line.

mod check;
pub mod defaults;
mod graph;
mod holding;
mod kind;
mod lines;
mod overlay;
mod postgres;
mod problem;
mod raw;
mod schedules;
mod serve;
mod sinks;
mod tests;
mod validate;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

pub use problem::{InvalidPipeline, Problem};

use crate::pipeline::Pipeline;
use lines::LineMap;
use raw::RawFile;

/// Largest pipeline file read: far above any real pipeline, low enough that
/// a wrong file (a log, a data dump) is refused at once.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Prefix of environment overrides.
const ENV_PREFIX: &str = "WARREN_";

/// Loads and validates `path` with the process environment's overrides.
pub fn load(path: impl AsRef<Path>) -> Result<Pipeline, InvalidPipeline> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(path.as_ref(), &env)
}

/// Loads and validates `path` with the given environment (for tests).
pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Pipeline, InvalidPipeline> {
    let whole_file = |message: String| InvalidPipeline::single(path, Problem::new("", message));
    let meta = std::fs::metadata(path).map_err(|error| whole_file(read_error(&error)))?;
    if meta.is_dir() {
        return Err(whole_file("is a directory, not a pipeline file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(whole_file(format!(
            "is {} bytes; a pipeline file is at most {MAX_FILE_BYTES} bytes",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|error| whole_file(read_error(&error)))?;
    let text = String::from_utf8(bytes).map_err(|error| {
        whole_file(format!(
            "is not UTF-8 text (invalid byte at offset {})",
            error.utf8_error().valid_up_to()
        ))
    })?;
    parse_str(&text, path, env)
}

/// The most values (scalars and collections, aliases expanded) a pipeline
/// file may hold: far more than any real pipeline, far less than an alias
/// bomb expands to.
pub const MAX_VALUES: u64 = 100_000;

/// Validates pipeline text as if read from `source`.
pub fn parse_str(
    text: &str,
    source: &Path,
    env: &[(String, String)],
) -> Result<Pipeline, InvalidPipeline> {
    let invalid = |problems: Vec<Problem>| InvalidPipeline {
        file: source.to_path_buf(),
        problems,
    };
    let lines = LineMap::parse(text).map_err(|error| {
        invalid(vec![Problem {
            line: Some(error.marker().line()),
            ..Problem::new("", format!("is not valid YAML: {}", error.info()))
        }])
    })?;
    if lines.expanded > MAX_VALUES {
        return Err(invalid(vec![Problem::new(
            "",
            format!(
                "stands for {} values once its aliases (`*name`) are expanded, more than the {MAX_VALUES} a pipeline file may hold; use fewer aliases",
                lines.expanded
            ),
        )]));
    }
    let overrides = overrides(env);
    if !lines.duplicates.is_empty() {
        return Err(invalid(
            lines
                .duplicates
                .iter()
                .map(|(path, line)| Problem {
                    line: Some(*line),
                    ..Problem::new(path.clone(), "is written twice; keep one")
                })
                .collect(),
        ));
    }
    let mut problems = Vec::new();

    let value = overlay::layered(text, env, &overrides)
        .map_err(|message| invalid(vec![Problem::new("", message)]))?;
    let (raw, bad_paths, type_problems) = deserialize(value);
    problems.extend(type_problems);
    if let Some(mut raw) = raw {
        // Stages in file order (the parsed map is sorted by name); one added
        // by the environment alone comes last.
        if let Some(stages) = &mut raw.stages {
            stages.sort_by_cached_key(|name, _| {
                lines
                    .exact_line(&format!("stages.{name}"))
                    .unwrap_or(usize::MAX)
            });
        }
        // Seconds in cron expressions only where a test asks for them.
        let seconds = env
            .iter()
            .any(|(var, value)| var == crate::schedule::SECONDS_FOR_TESTS && value == "1");
        match validate::validate(&raw, source, seconds) {
            Ok(pipeline) if problems.is_empty() => return Ok(pipeline),
            Ok(_) => {}
            // A field that failed to read is reported once; the rules that
            // failed only because it is missing are not.
            Err(found) => problems.extend(
                found
                    .into_iter()
                    .filter(|problem| !bad_paths.iter().any(|bad| is_within(bad, &problem.path))),
            ),
        }
    }
    for problem in &mut problems {
        problem.from_env = overrides
            .iter()
            .find(|(path, _)| is_within(&problem.path, path))
            .map(|(_, var)| var.clone());
        if problem.line.is_none() && problem.from_env.is_none() {
            problem.line = lines.line_of(&problem.path);
        }
    }
    problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
    Err(invalid(problems))
}

/// True when `path` is `ancestor` or lies below it.
fn is_within(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || (path.starts_with(ancestor)
            && matches!(path.as_bytes().get(ancestor.len()), Some(b'.' | b'[')))
}

fn read_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "cannot be read (permission denied)".into(),
        _ => format!("cannot be read: {error}"),
    }
}

/// Environment overrides: field path -> variable name.
fn overrides(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter()
        .filter_map(|(var, _)| {
            let rest = var.strip_prefix(ENV_PREFIX)?;
            rest.contains("__")
                .then(|| (rest.to_lowercase().replace("__", "."), var.clone()))
        })
        .chain(
            env.iter()
                .filter(|(var, _)| var == "AMQP_URL")
                .map(|(var, _)| ("broker.url".to_string(), var.clone())),
        )
        .collect()
}

/// Reads the raw file, collecting every type error and unknown key: each
/// offending key is reported, removed, and reading starts again.
fn deserialize(mut value: serde_json::Value) -> (Option<RawFile>, Vec<String>, Vec<Problem>) {
    if value.is_null() {
        value = serde_json::Value::Object(serde_json::Map::new());
    }
    let mut problems = Vec::new();
    let mut bad_paths = Vec::new();
    for _ in 0..500 {
        match serde_path_to_error::deserialize::<_, RawFile>(&value) {
            Ok(raw) => return (Some(raw), bad_paths, problems),
            Err(error) => {
                let segments: Vec<serde_path_to_error::Segment> =
                    error.path().iter().cloned().collect();
                let path = error.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let message = error.inner().to_string();
                problems.push(Problem::new(path.clone(), hint(&path, &message)));
                bad_paths.push(path);
                if !remove(&mut value, &segments) {
                    return (None, bad_paths, problems);
                }
            }
        }
    }
    (None, bad_paths, problems)
}

/// Removes the deepest mapping key on `path`; false if there is none.
fn remove(value: &mut serde_json::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Segment::Map { .. })) else {
        return false;
    };
    let mut at = value;
    for segment in &path[..last_key] {
        at = match (segment, at) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, serde_json::Value::Array(items)) => {
                match items.get_mut(*index) {
                    Some(next) => next,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match (&path[last_key], at) {
        (Segment::Map { key }, serde_json::Value::Object(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

/// Makes serde's messages say what to write.
fn hint(path: &str, message: &str) -> String {
    let last = path.rsplit('.').next().unwrap_or(path);
    let wanted = match last {
        "command" => "; write it as a list: [program, arg, ...]",
        "exec" if message.contains("did not match any variant") => {
            return "write it as a list, [program, arg, ...], or as a mapping with `command` (a list) and `env` (a mapping)".into();
        }
        "outputs" => "; write it as a list of stage names: [next, other]",
        "backoff" => "; write it as a list of durations: [1s, 10s, 1m]",
        "" if message.starts_with("invalid type") => {
            return "must be a mapping with `pipeline:` and `stages:`".into();
        }
        _ => "",
    };
    if message.starts_with("invalid type") {
        format!("{message}{wanted}")
    } else {
        message.to_string()
    }
}

/// Where the pipeline file of a worker is: `WARREN_PIPELINE`.
pub fn pipeline_path_from_env() -> Option<PathBuf> {
    std::env::var_os("WARREN_PIPELINE").map(PathBuf::from)
}
