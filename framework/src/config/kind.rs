//! What runs a stage: exactly one of the kinds, each checked in full (an
//! http stage's URL and body templates and headers included, so that a
//! file `warren validate` passes has workers that can start).

use std::collections::BTreeMap;

use super::{
    check::Checker,
    defaults,
    raw::{RawExec, RawExecFull, RawHttp, RawStage},
};
use crate::{
    pipeline::{
        CommandSpec, ExecSpec, HeaderValue, HttpEmit, HttpSpec, Recycle, SinkSpec, StageKind,
    },
    template,
};

/// The keys that choose a stage's kind.
pub(crate) const KIND_KEYS: [&str; 5] = ["command", "exec", "gather", "http", "sink"];

/// The kind of the stage at `path`, or `None` after recording why.
pub(crate) fn kind(v: &mut Checker, path: &str, own: &RawStage) -> Option<StageKind> {
    let set: Vec<&str> = KIND_KEYS.into_iter().filter(|key| own.has(key)).collect();
    match set.as_slice() {
        [] => {
            v.problem(
                path,
                "has no kind; give it exactly one of `command`, `exec`, `gather`, `http` or `sink`",
            );
            return None;
        }
        [_] => {}
        several => {
            v.problem(
                path,
                format!(
                    "has {}; a stage has exactly one kind",
                    several
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            );
            return None;
        }
    }
    if let Some(argv) = &own.command {
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            v.problem(format!("{path}.command"), "is empty; give the program and its arguments, like [target/release/my-worker, --flag]");
            return None;
        }
        let mut argv = argv.clone();
        argv[0] = program_path(v, &argv[0]);
        return Some(StageKind::Command(CommandSpec { argv }));
    }
    if let Some(raw) = &own.exec {
        return exec(v, &format!("{path}.exec"), raw).map(StageKind::Exec);
    }
    if own.gather.is_some() {
        return Some(StageKind::Gather);
    }
    if let Some(raw) = &own.http {
        return http(v, &format!("{path}.http"), raw).map(StageKind::Http);
    }
    let sink = own.sink.as_ref()?;
    if let Some(raw) = &sink.postgres {
        if sink.path.is_some() {
            v.problem(
                format!("{path}.sink"),
                "has `path` and `postgres`; a sink writes a file (`path`) or a table (`postgres`), not both",
            );
            return None;
        }
        return super::postgres::postgres(v, &format!("{path}.sink.postgres"), raw)
            .map(StageKind::Postgres);
    }
    match sink.path.as_deref().map(str::trim) {
        Some(file) if !file.is_empty() => Some(StageKind::Sink(SinkSpec {
            path: v.resolve(file),
        })),
        _ => {
            v.problem(
                format!("{path}.sink.path"),
                "missing; name the JSON-lines file, like `path: results.jsonl` (or write a table: `postgres: {...}`)",
            );
            None
        }
    }
}

fn exec(v: &mut Checker, path: &str, raw: &RawExec) -> Option<ExecSpec> {
    let (argv, env, argv_path) = match raw {
        RawExec::Argv(argv) => (argv.clone(), None, path.to_string()),
        RawExec::Full(full) => (
            full.command.clone().unwrap_or_default(),
            full.env.clone(),
            format!("{path}.command"),
        ),
    };
    let recycle = match raw {
        RawExec::Argv(_) => Some(Recycle::default()),
        RawExec::Full(full) => recycle(v, path, full),
    };
    let Some(program) = argv.first().filter(|p| !p.trim().is_empty()) else {
        v.problem(
            argv_path,
            "is empty; give the program and its arguments, like [python3, lookup.py]",
        );
        return None;
    };
    let program = program_path(v, program);
    if let Err(why) = runnable(&program) {
        v.problem(format!("{argv_path}[0]"), why);
        return None;
    }
    let mut argv = argv;
    argv[0] = program;
    let mut vars = BTreeMap::new();
    for (name, value) in env.iter().flatten() {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            v.problem(
                format!("{path}.env.{name}"),
                "is not a valid environment variable (a name without `=`, no NUL byte)",
            );
            continue;
        }
        if value.starts_with("${") && env_reference(value).is_none() {
            v.problem(
                format!("{path}.env.{name}"),
                "`${...}` must name an environment variable of the worker (letters, digits, `_`), like ${DATABASE_URL}",
            );
            continue;
        }
        vars.insert(name.clone(), value.clone());
    }
    Some(ExecSpec {
        argv,
        env: vars,
        recycle: recycle?,
    })
}

/// Most messages one child may be given before it is replaced.
const MAX_MESSAGES: u64 = 1_000_000_000;

/// `max_messages` and `max_memory` of `exec: {...}` at `path`.
fn recycle(v: &mut Checker, path: &str, full: &RawExecFull) -> Option<Recycle> {
    let mut ok = true;
    let max_messages = full.max_messages.and_then(|n| {
        let n = v.whole(&format!("{path}.max_messages"), n, 1, MAX_MESSAGES);
        ok &= n.is_some();
        n
    });
    let max_memory = full.max_memory.as_ref().and_then(|text| {
        let field = format!("{path}.max_memory");
        match size(text) {
            Ok(bytes) if bytes >= 1_000_000 => Some(bytes),
            Ok(_) => {
                v.problem(
                    field,
                    format!("`{text}` is too small: give at least 1MB, like 512MB or 1GiB"),
                );
                ok = false;
                None
            }
            Err(why) => {
                v.problem(field, why);
                ok = false;
                None
            }
        }
    });
    ok.then_some(Recycle {
        max_messages,
        max_memory,
    })
}

/// A program as it is started: a relative path (one with a `/`) resolved
/// from the pipeline file's folder; a bare name is looked up on `PATH`.
fn program_path(v: &Checker, program: &str) -> String {
    if program.contains('/') && !program.starts_with('/') {
        v.resolve(program).display().to_string()
    } else {
        program.to_string()
    }
}

/// `NAME` of a value `${NAME}`, when it is one and names a variable.
fn env_reference(value: &str) -> Option<&str> {
    let var = value.strip_prefix("${")?.strip_suffix('}')?;
    let fine = !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    fine.then_some(var)
}

/// Whether `program` can be started from here: a path to an executable
/// file, or a name found on `PATH`.
fn runnable(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = std::path::Path::new(program);
        return match std::fs::metadata(path) {
            Err(_) => Err(format!(
                "`{program}` is not a file (a relative path is relative to the pipeline file's folder)"
            )),
            Ok(meta) if !meta.is_file() => Err(format!("`{program}` is not a file")),
            Ok(_) if !executable(path) => Err(format!(
                "`{program}` is not executable (chmod +x it, or run it through its interpreter: [python3, {program}])"
            )),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("`{program}` is not on PATH and not a file"))
    }
}

fn http(v: &mut Checker, path: &str, raw: &RawHttp) -> Option<HttpSpec> {
    let before = v.count();
    let method = raw
        .method
        .clone()
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase();
    if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
        v.problem(
            format!("{path}.method"),
            format!("`{method}` is not one of GET, POST, PUT, PATCH, DELETE, HEAD"),
        );
    }
    let url = raw.url.clone().unwrap_or_default();
    if url.is_empty() {
        v.problem(
            format!("{path}.url"),
            "missing; give the URL to call, like http://127.0.0.1:8089/grade",
        );
    } else if let Err(error) = template::check_url(&url) {
        v.problem(format!("{path}.url"), error);
    }
    if let Some(body) = &raw.body
        && let Err(error) = template::check_body(body)
    {
        v.problem(format!("{path}.body"), error);
    }
    let mut headers = BTreeMap::new();
    for (header, value) in raw.headers.iter().flatten() {
        let at = format!("{path}.headers.{header}");
        if !is_token(header) {
            v.problem(
                &at,
                format!(
                    "`{header}` is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
                ),
            );
            continue;
        }
        let reference = value.strip_prefix("${").and_then(|v| v.strip_suffix('}'));
        let value = match reference.map(|_| env_reference(value)) {
            Some(Some(var)) => HeaderValue::Env(var.to_string()),
            Some(None) => {
                v.problem(
                    &at,
                    "`${...}` must name an environment variable (letters, digits, `_`)",
                );
                continue;
            }
            None if value.chars().any(|c| c.is_control() && c != '\t') => {
                v.problem(
                    &at,
                    "holds a control character (a line break?); a header value is one line of text",
                );
                continue;
            }
            None => HeaderValue::Literal(value.clone()),
        };
        headers.insert(header.clone(), value);
    }
    let timeout = match &raw.timeout {
        Some(text) => v
            .duration(&format!("{path}.timeout"), text)
            .unwrap_or(defaults::HTTP_TIMEOUT),
        None => defaults::HTTP_TIMEOUT,
    };
    let emit = match raw.emit.as_deref() {
        None | Some("response") => HttpEmit::Response,
        Some("merge") => HttpEmit::Merge,
        Some(other) => {
            v.problem(format!("{path}.emit"), format!("`{other}` is not one of `response` (the answer's JSON) or `merge` (the input with the answer's fields over it)"));
            HttpEmit::Response
        }
    };
    let idempotency_key = match &raw.idempotency_key {
        None | Some(serde_json::Value::Bool(true)) => Some(defaults::IDEMPOTENCY_HEADER.into()),
        Some(serde_json::Value::Bool(false)) => None,
        Some(serde_json::Value::String(name)) if is_token(name) => Some(name.clone()),
        Some(other) => {
            v.problem(
                format!("{path}.idempotency_key"),
                format!("`{other}` is not a header name; give one (default `{}`) or `false` to send none", defaults::IDEMPOTENCY_HEADER),
            );
            None
        }
    };
    let max_response = match &raw.max_response {
        None => defaults::HTTP_MAX_RESPONSE,
        Some(text) => match size(text) {
            Ok(bytes) if (MIN_RESPONSE..=MAX_RESPONSE).contains(&bytes) => bytes,
            Ok(_) => {
                v.problem(
                    format!("{path}.max_response"),
                    format!("`{text}` is out of range: from 1KiB to 1GiB"),
                );
                defaults::HTTP_MAX_RESPONSE
            }
            Err(why) => {
                v.problem(format!("{path}.max_response"), why);
                defaults::HTTP_MAX_RESPONSE
            }
        },
    };
    (v.count() == before).then_some(HttpSpec {
        method,
        url,
        body: raw.body.clone(),
        headers,
        timeout,
        emit,
        idempotency_key,
        max_response,
    })
}

/// Smallest `http.max_response`.
const MIN_RESPONSE: u64 = 1024;
/// Largest `http.max_response`.
const MAX_RESPONSE: u64 = 1024 * 1024 * 1024;

/// A size in bytes, written like `10MiB`, `512KB`, `1GiB` or `2000` (bytes).
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit_bytes = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => Some(1),
        "kb" => Some(1000),
        "kib" => Some(1024),
        "mb" => Some(1000 * 1000),
        "mib" => Some(1024 * 1024),
        "gb" => Some(1000 * 1000 * 1000),
        "gib" => Some(1024 * 1024 * 1024),
        _ => None,
    };
    match (number.parse::<u64>(), unit_bytes) {
        (Ok(n), Some(unit)) => n
            .checked_mul(unit)
            .ok_or_else(|| format!("`{text}` is too large")),
        _ => Err(format!(
            "`{text}` is not a size; write a whole number with a unit, like 10MiB, 512KiB or 2MB"
        )),
    }
}

/// An HTTP token (RFC 9110): what a header name may be made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_numbers_with_a_unit() {
        assert_eq!(size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(size("512 KB"), Ok(512_000));
        assert_eq!(size("1gib"), Ok(1 << 30));
        assert_eq!(size("2000"), Ok(2000));
        assert!(size("10 parsecs").unwrap_err().contains("not a size"));
        assert!(size("1.5MiB").is_err());
        assert!(size("").is_err());
        assert!(size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn only_whole_references_name_variables() {
        assert_eq!(env_reference("${DATABASE_URL}"), Some("DATABASE_URL"));
        assert_eq!(env_reference("${}"), None);
        assert_eq!(env_reference("${A B}"), None);
        assert_eq!(env_reference("x${A}"), None);
        assert_eq!(env_reference("plain"), None);
    }
}
