//! `sink: { postgres: ... }`: the table a PostgreSQL sink writes, checked
//! as far as it can be without the database (names, the URL's form, the
//! mapping). The live table is checked by `warren validate` and `declare`
//! in the binary, which can connect.

use super::{check::Checker, raw::RawPostgres};
use crate::pipeline::PostgresSpec;

/// Rows per transaction when the file says nothing.
pub const DEFAULT_BATCH: usize = 500;
/// Most rows per transaction.
const MAX_BATCH: u64 = 10_000;
/// PostgreSQL's longest identifier, in bytes.
const MAX_NAME: usize = 63;

/// The sink at `path` (`stages.{name}.sink.postgres`), or `None` after
/// recording every problem.
pub(crate) fn postgres(v: &mut Checker, path: &str, raw: &RawPostgres) -> Option<PostgresSpec> {
    let before = v.count();
    if let Some(url) = &raw.url {
        check_url(v, &format!("{path}.url"), url);
    }
    let (schema, table) = match raw.table.as_deref().map(str::trim) {
        None | Some("") => {
            v.problem(
                format!("{path}.table"),
                "missing; name the table, like `table: pageviews` or `table: analytics.pageviews`",
            );
            (None, String::new())
        }
        Some(text) => {
            let (schema, table) = match text.split_once('.') {
                Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
                None => (None, text.to_string()),
            };
            for part in schema.iter().chain([&table]) {
                name(v, &format!("{path}.table"), part);
            }
            (schema, table)
        }
    };
    let id = raw.id.clone().unwrap_or_else(|| "id".into());
    name(v, &format!("{path}.id"), &id);
    if let Some(body) = &raw.body {
        name(v, &format!("{path}.body"), body);
        if *body == id {
            v.problem(
                format!("{path}.body"),
                format!("`{body}` is also the id column; the body needs a column of its own"),
            );
        }
    }
    let mut columns = Vec::new();
    for (column, field) in raw.columns.iter().flatten() {
        let at = format!("{path}.columns.{column}");
        name(v, &at, column);
        if *column == id || raw.body.as_ref() == Some(column) {
            v.problem(
                &at,
                format!("`{column}` is the id or body column; map a field to a column of its own"),
            );
        }
        if field.is_empty() {
            v.problem(
                &at,
                "is empty; give the body's field, like `user_agent` or `/user/agent` (a JSON pointer)",
            );
        }
        columns.push((column.clone(), field.clone()));
    }
    // The file's order is not kept through the environment overlay: one
    // order, whatever the file's.
    columns.sort();
    if raw.body.is_none() && columns.is_empty() {
        v.problem(
            path,
            "writes nothing but the id; give `body: COLUMN` (a jsonb column for the whole body) and/or `columns: {COLUMN: FIELD}`",
        );
    }
    let batch = match raw.batch {
        Some(n) => v
            .whole(&format!("{path}.batch"), n, 1, MAX_BATCH)
            .map_or(DEFAULT_BATCH, |n| n as usize),
        None => DEFAULT_BATCH,
    };
    (v.count() == before).then_some(PostgresSpec {
        url: raw.url.clone(),
        schema,
        table,
        id,
        body: raw.body.clone(),
        columns,
        batch,
    })
}

/// A `postgres://` URL or a `${NAME}` reference; the problem never quotes
/// the URL (it may hold a password).
fn check_url(v: &mut Checker, path: &str, text: &str) {
    if let Some(var) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            v.problem(
                path,
                "`${...}` must name an environment variable (letters, digits, `_`), like ${DATABASE_URL}",
            );
        }
        return;
    }
    match url::Url::parse(text) {
        Ok(url) if ["postgres", "postgresql"].contains(&url.scheme()) => {}
        Ok(url) => v.problem(
            path,
            format!(
                "is a `{}:` URL; give a postgres:// URL, like postgres://warren@127.0.0.1:5432/analytics",
                url.scheme()
            ),
        ),
        Err(error) => v.problem(
            path,
            format!("is not a URL ({error}); give one like postgres://warren@127.0.0.1:5432/analytics"),
        ),
    }
}

/// A table or column name: letters, digits, `_` and `$`, not starting
/// with a digit or `$`, at most 63 bytes; taken exactly as written (the
/// sink quotes it, so `Views` and `views` are two tables).
fn name(v: &mut Checker, path: &str, name: &str) {
    let mut chars = name.chars();
    let starts = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !starts || !rest {
        v.problem(
            path,
            format!("`{name}` is not a table or column name: a letter or `_`, then letters, digits, `_` or `$`"),
        );
    } else if name.len() > MAX_NAME {
        v.problem(
            path,
            format!("`{name}` is longer than {MAX_NAME} bytes, PostgreSQL's limit"),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse_str;
    use crate::StageKind;

    fn parse(sink: &str) -> Result<crate::pipeline::PostgresSpec, Vec<String>> {
        let text = format!("pipeline: p\nstages:\n  store:\n    sink:\n      postgres: {sink}\n");
        match parse_str(&text, Path::new("p.yaml"), &[]) {
            Ok(pipeline) => match &pipeline.stages[0].kind {
                StageKind::Postgres(spec) => Ok(spec.clone()),
                other => panic!("{other:?}"),
            },
            Err(invalid) => Err(invalid.lines()),
        }
    }

    #[test]
    fn a_full_sink_is_read() {
        let spec = parse(
            "{ url: \"postgres://w:s3cret@db:5433/analytics\", table: analytics.views, id: msg, body: doc, columns: { url: url, agent: /ua/name }, batch: 200 }",
        )
        .unwrap();
        assert_eq!(spec.schema.as_deref(), Some("analytics"));
        assert_eq!(spec.table, "views");
        assert_eq!(spec.table_sql(), "\"analytics\".\"views\"");
        assert_eq!(spec.id, "msg");
        assert_eq!(spec.body.as_deref(), Some("doc"));
        assert_eq!(
            spec.columns,
            [
                ("agent".to_string(), "/ua/name".to_string()),
                ("url".to_string(), "url".to_string())
            ]
        );
        assert_eq!(spec.batch, 200);
        let shown = format!("{spec:?} {}", spec.shown_url());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("w:***@db"), "{shown}");
    }

    #[test]
    fn defaults_fill_the_rest() {
        let spec = parse("{ table: views, body: doc }").unwrap();
        assert_eq!((spec.id.as_str(), spec.batch, spec.url), ("id", 500, None));
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let lines = parse(
            "{ url: \"mysql://u:s3cret@h/db\", table: \"1views\", id: \"a b\", columns: { \"a-b\": x, ok: \"\" }, batch: 0 }",
        )
        .unwrap_err();
        let all = lines.join("\n");
        for (path, what) in [
            ("sink.postgres.url", "mysql"),
            (
                "sink.postgres.table",
                "`1views` is not a table or column name",
            ),
            ("sink.postgres.id", "`a b`"),
            (
                "sink.postgres.columns.a-b",
                "`a-b` is not a table or column name",
            ),
            ("sink.postgres.columns.ok", "is empty"),
            ("sink.postgres.batch", "out of range"),
        ] {
            assert!(
                lines.iter().any(|l| l.contains(path) && l.contains(what)),
                "{path}: {all}"
            );
        }
        assert!(!all.contains("s3cret"), "{all}");
    }

    #[test]
    fn the_id_and_body_columns_are_the_sinks_own() {
        let all = parse("{ table: t, body: doc, columns: { id: x, doc: y } }")
            .unwrap_err()
            .join("\n");
        for column in ["columns.id", "columns.doc"] {
            assert!(
                all.contains(&format!("sink.postgres.{column}: `"))
                    && all.contains("id or body column"),
                "{column}: {all}"
            );
        }
        let all = parse("{ table: t, id: doc, body: doc }")
            .unwrap_err()
            .join("\n");
        assert!(
            all.contains("sink.postgres.body: `doc` is also the id column"),
            "{all}"
        );
    }

    #[test]
    fn a_sink_that_writes_only_ids_or_lacks_a_table_is_refused() {
        let all = parse("{ url: \"not a url s3cret\" }")
            .unwrap_err()
            .join("\n");
        assert!(all.contains("sink.postgres.table: missing"), "{all}");
        assert!(all.contains("writes nothing but the id"), "{all}");
        assert!(all.contains("sink.postgres.url: is not a URL"), "{all}");
        assert!(!all.contains("s3cret"), "{all}");
    }
}
