//! The environment of an exec stage's program. It inherits only what any
//! program needs to run (the [`INHERITED`] variables and `LC_*`), then gets
//! the stage's `env` (a value `${NAME}` is the worker's variable `NAME`,
//! which must be set), then warren's own: `WARREN_PIPELINE`,
//! `WARREN_STAGE`, `WARREN_WORKER`, `WARREN_CONCURRENCY` and
//! `WARREN_EXEC_FEATURES` (`progress,cancel`). Nothing else
//! of the worker's environment reaches it: not `AMQP_URL`, not the serve
//! token, not other secrets of the box, unless `env` names them.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf};

/// Who runs the program: what its `WARREN_*` variables say, and the log.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The pipeline file (`WARREN_PIPELINE`).
    pub pipeline_file: PathBuf,
    /// The stage (`WARREN_STAGE`).
    pub stage: String,
    /// The worker's name (`WARREN_WORKER`).
    pub worker: String,
    /// Messages handed to the program at once (`WARREN_CONCURRENCY`).
    pub concurrency: u32,
}

/// Variables a program inherits from its worker without asking.
pub const INHERITED: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// Whether the worker's variable `name` passes to the program unasked.
fn inherited(name: &str) -> bool {
    INHERITED.contains(&name) || name.starts_with("LC_")
}

/// The program's whole environment, from the worker's (`worker`), the
/// stage's `env` (`given`) and who runs it; or why not (a variable `env`
/// asks for that is not set).
pub fn build(
    worker: impl IntoIterator<Item = (OsString, OsString)>,
    given: &BTreeMap<String, String>,
    who: &Identity,
) -> Result<Vec<(OsString, OsString)>, String> {
    let worker: Vec<(OsString, OsString)> = worker.into_iter().collect();
    let mut env: BTreeMap<OsString, OsString> = worker
        .iter()
        .filter(|(name, _)| name.to_str().is_some_and(inherited))
        .cloned()
        .collect();
    for (name, value) in given {
        let value = match reference(value) {
            Some(var) => worker
                .iter()
                .find(|(name, _)| name == var)
                .map(|(_, value)| value.clone())
                .ok_or_else(|| {
                    format!("exec.env.{name}: the environment variable {var} is not set")
                })?,
            None => value.into(),
        };
        env.insert(name.into(), value);
    }
    for (name, value) in [
        (
            "WARREN_PIPELINE",
            who.pipeline_file.clone().into_os_string(),
        ),
        ("WARREN_STAGE", who.stage.clone().into()),
        ("WARREN_WORKER", who.worker.clone().into()),
        ("WARREN_CONCURRENCY", who.concurrency.to_string().into()),
        // What this warren speaks beyond the first protocol: `progress`
        // answers, and `cancel` lines on stdin.
        ("WARREN_EXEC_FEATURES", "progress,cancel".into()),
    ] {
        env.insert(name.into(), value);
    }
    Ok(env.into_iter().collect())
}

/// `NAME` of a value `${NAME}`.
fn reference(value: &str) -> Option<&str> {
    value.strip_prefix("${")?.strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Identity {
        Identity {
            pipeline_file: "/p/pipeline.yaml".into(),
            stage: "lookup".into(),
            worker: "2".into(),
            concurrency: 8,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn only_the_basics_the_stage_env_and_warrens_own_reach_the_program() {
        let worker = vars(&[
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("AMQP_URL", "amqp://u:secret@h/"),
            ("WARREN_SERVE_TOKEN", "token"),
            ("DB_PASSWORD", "pw"),
            ("WARREN_STAGE", "from the worker"),
        ]);
        let given = BTreeMap::from([
            ("DB".to_string(), "${DB_PASSWORD}".to_string()),
            ("MODE".to_string(), "fast".to_string()),
            ("PATH".to_string(), "/opt/bin".to_string()),
        ]);
        let env = build(worker, &given, &who()).unwrap();
        assert_eq!(
            env,
            vars(&[
                ("DB", "pw"),
                ("LC_ALL", "C.UTF-8"),
                ("MODE", "fast"),
                ("PATH", "/opt/bin"),
                ("WARREN_CONCURRENCY", "8"),
                ("WARREN_EXEC_FEATURES", "progress,cancel"),
                ("WARREN_PIPELINE", "/p/pipeline.yaml"),
                ("WARREN_STAGE", "lookup"),
                ("WARREN_WORKER", "2"),
            ])
        );
    }

    #[test]
    fn a_variable_asked_for_must_be_set() {
        let given = BTreeMap::from([("URL".to_string(), "${AMQP_URL}".to_string())]);
        let error = build(vars(&[]), &given, &who()).unwrap_err();
        assert_eq!(
            error,
            "exec.env.URL: the environment variable AMQP_URL is not set"
        );
        let given_url = build(vars(&[("AMQP_URL", "amqp://h/")]), &given, &who()).unwrap();
        assert!(given_url.contains(&("URL".into(), "amqp://h/".into())));
    }
}
