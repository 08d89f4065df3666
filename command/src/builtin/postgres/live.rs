//! The live check of `warren validate` and `declare`: the columns the sink
//! writes, compared with the table in the database, every mismatch named
//! with the path of the field that chose the column.

use std::time::Duration;

use warren::{
    Pipeline, PostgresSpec, StageKind,
    config::{InvalidPipeline, Problem},
};

use super::connect;

/// How long the check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A column of the table as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type, as `format_type` writes it (`character varying(64)`).
    pub shown: String,
    /// Its type's name in `pg_type` (`varchar`, `jsonb`).
    pub base: String,
    /// NOT NULL.
    pub not_null: bool,
    /// Filled when a row does not give it (a default, an identity, a
    /// generated column).
    pub filled: bool,
    /// A column no row may give: generated, or `GENERATED ALWAYS AS IDENTITY`.
    pub read_only: bool,
}

/// What the check found for one stage.
#[derive(Debug)]
pub enum Checked {
    /// The table fits; where it is.
    Fits(String),
    /// Mismatches: (field path, what is wrong).
    Mismatches(Vec<(String, String)>),
    /// The database could not be asked (why, never the password).
    Unreachable(String),
}

/// The types a message id fits.
const TEXT: [&str; 3] = ["text", "varchar", "citext"];
/// The types a whole body fits.
const JSON: [&str; 2] = ["jsonb", "json"];

/// Compares the sink `spec` at `path` (`stages.S.sink.postgres`) with the
/// table's `columns` (none: the table does not exist) and whether its id
/// column has a unique index of its own.
pub fn compare(
    spec: &PostgresSpec,
    path: &str,
    columns: &[Column],
    id_unique: bool,
) -> Vec<(String, String)> {
    let table = match &spec.schema {
        Some(schema) => format!("{schema}.{}", spec.table),
        None => spec.table.clone(),
    };
    if columns.is_empty() {
        return vec![(
            format!("{path}.table"),
            format!(
                "table `{table}` does not exist (names are taken exactly as written, case included)"
            ),
        )];
    }
    let mut out = Vec::new();
    let find = |name: &str| columns.iter().find(|c| c.name == name);
    let mut written = vec![spec.id.as_str()];
    match find(&spec.id) {
        None => out.push((
            format!("{path}.id"),
            format!("table `{table}` has no column `{}`", spec.id),
        )),
        Some(column) if !TEXT.contains(&column.base.as_str()) => out.push((
            format!("{path}.id"),
            format!(
                "column `{}` is {}; message ids are text (like `c0.3`): make it text or varchar",
                column.name, column.shown
            ),
        )),
        Some(column) if !id_unique => out.push((
            format!("{path}.id"),
            format!(
                "column `{}` has no unique index of its own; make it the primary key (ON CONFLICT ({}) needs one to write each id once)",
                column.name, column.name
            ),
        )),
        Some(_) => {}
    }
    if let Some(body) = &spec.body {
        written.push(body);
        match find(body) {
            None => out.push((
                format!("{path}.body"),
                format!("table `{table}` has no column `{body}`"),
            )),
            Some(column) if !JSON.contains(&column.base.as_str()) => out.push((
                format!("{path}.body"),
                format!(
                    "column `{body}` is {}; the whole body needs jsonb (or json)",
                    column.shown
                ),
            )),
            Some(column) if column.read_only => out.push((
                format!("{path}.body"),
                format!("column `{body}` is generated; no row can give it"),
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &spec.columns {
        written.push(name);
        let at = format!("{path}.columns.{name}");
        match find(name) {
            None => out.push((at, format!("table `{table}` has no column `{name}`"))),
            Some(column) if column.read_only => out.push((
                at,
                format!(
                    "column `{name}` is generated ({}); no row can give it",
                    column.shown
                ),
            )),
            Some(column) if column.base == "bytea" => out.push((
                at,
                format!(
                    "column `{name}` is bytea; a JSON value is text, not bytes: use text or jsonb"
                ),
            )),
            Some(_) => {}
        }
    }
    for column in columns {
        if column.not_null && !column.filled && !written.contains(&column.name.as_str()) {
            out.push((
                path.to_string(),
                format!(
                    "column `{}` ({}) is NOT NULL without a default and nothing fills it: every row would be refused; map a field to it (`columns: {{{}: FIELD}}`)",
                    column.name, column.shown, column.name
                ),
            ));
        }
    }
    out
}

/// Checks every PostgreSQL sink of `pipeline` against its live table.
pub async fn check_all(pipeline: &Pipeline) -> Vec<(String, Checked)> {
    let mut out = Vec::new();
    for stage in &pipeline.stages {
        if let StageKind::Postgres(spec) = &stage.kind {
            let path = format!("stages.{}.sink.postgres", stage.name);
            let application = format!("warren validate {}", pipeline.name);
            let checked =
                match tokio::time::timeout(CHECK_TIMEOUT, check(spec, &path, &application)).await {
                    Ok(checked) => checked,
                    Err(_) => Checked::Unreachable(format!(
                        "no answer within {}s",
                        CHECK_TIMEOUT.as_secs()
                    )),
                };
            out.push((stage.name.clone(), checked));
        }
    }
    out
}

/// Checks every PostgreSQL sink of the pipeline read from `file`: a note
/// per sink (the table fits, or it could not be checked and why), or
/// every mismatch as a problem of the file.
pub async fn verify(
    pipeline: &Pipeline,
    file: &std::path::Path,
) -> Result<Vec<String>, InvalidPipeline> {
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    for (stage, checked) in check_all(pipeline).await {
        match checked {
            Checked::Fits(at) => notes.push(format!(
                "stage `{stage}`: the table at {at} has the columns the sink writes"
            )),
            Checked::Unreachable(why) => notes.push(format!(
                "stage `{stage}`: could not connect to PostgreSQL, so its table was NOT checked: {why}"
            )),
            Checked::Mismatches(found) => problems.extend(
                found
                    .into_iter()
                    .map(|(path, message)| Problem::new(path, message)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(notes)
    } else {
        Err(InvalidPipeline {
            file: file.to_path_buf(),
            problems,
        })
    }
}

/// The catalog's columns of a table: none when it does not exist.
const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, \
     a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', \
     a.attgenerated <> '' OR a.attidentity = 'a' \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// Whether a unique index without predicate or expression has exactly the
/// column `$2` of table `$1` as its key.
const UNIQUE: &str = "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
     ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 \
     AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = $2)";

async fn check(spec: &PostgresSpec, path: &str, application: &str) -> Checked {
    let config = match connect::config(spec, application, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(why) => return Checked::Unreachable(why),
    };
    let shown = connect::describe(&config);
    let client = match connect::connect(&config).await {
        Ok(client) => client,
        Err(error) => return Checked::Unreachable(format!("{shown}: {}", one_line(&error))),
    };
    let table = spec.table_sql();
    let rows = match client.query(COLUMNS, &[&table]).await {
        Ok(rows) => rows,
        Err(error) => return Checked::Unreachable(format!("{shown}: {}", one_line(&error))),
    };
    let columns: Vec<Column> = rows
        .iter()
        .map(|row| Column {
            name: row.get(0),
            shown: row.get(1),
            base: row.get(2),
            not_null: row.get(3),
            filled: row.get(4),
            read_only: row.get(5),
        })
        .collect();
    let unique: bool = match client.query_one(UNIQUE, &[&table, &spec.id]).await {
        Ok(row) => row.get(0),
        Err(error) => return Checked::Unreachable(format!("{shown}: {}", one_line(&error))),
    };
    let mismatches = compare(spec, path, &columns, unique);
    if mismatches.is_empty() {
        Checked::Fits(shown)
    } else {
        Checked::Mismatches(mismatches)
    }
}

fn one_line(error: &tokio_postgres::Error) -> String {
    match super::refusal::classify(error) {
        super::refusal::Fault::Row(text) | super::refusal::Fault::Database(text) => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, base: &str, not_null: bool, filled: bool) -> Column {
        Column {
            name: name.into(),
            shown: base.into(),
            base: base.into(),
            not_null,
            filled,
            read_only: false,
        }
    }

    fn spec() -> PostgresSpec {
        PostgresSpec {
            url: None,
            schema: None,
            table: "views".into(),
            id: "id".into(),
            body: Some("doc".into()),
            columns: vec![("url".into(), "url".into()), ("at".into(), "ts".into())],
            batch: 10,
        }
    }

    const P: &str = "stages.s.sink.postgres";

    #[test]
    fn a_fitting_table_passes() {
        let columns = [
            column("id", "text", true, false),
            column("doc", "jsonb", false, false),
            column("url", "text", false, false),
            column("at", "timestamptz", true, false),
            column("serial", "int8", true, true),
        ];
        assert_eq!(compare(&spec(), P, &columns, true), Vec::new());
    }

    #[test]
    fn every_mismatch_is_named_with_its_path() {
        let mut generated = column("at", "timestamptz", false, true);
        generated.read_only = true;
        let columns = [
            column("id", "int8", true, false),
            column("doc", "text", false, false),
            generated,
            column("must", "int4", true, false),
        ];
        let found = compare(&spec(), P, &columns, true);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stages.s.sink.postgres.id",
                "stages.s.sink.postgres.body",
                "stages.s.sink.postgres.columns.url",
                "stages.s.sink.postgres.columns.at",
                "stages.s.sink.postgres",
            ],
            "{found:#?}"
        );
        assert!(found[0].1.contains("is int8; message ids are text"));
        assert!(found[1].1.contains("needs jsonb"));
        assert!(found[2].1.contains("no column `url`"));
        assert!(found[4].1.contains("`must`"));
    }

    #[test]
    fn a_missing_table_or_unique_index_is_said() {
        let found = compare(&spec(), P, &[], false);
        assert_eq!(found[0].0, "stages.s.sink.postgres.table");
        let columns = [
            column("id", "varchar", true, false),
            column("doc", "json", false, false),
            column("url", "text", false, false),
            column("at", "text", false, false),
        ];
        let found = compare(&spec(), P, &columns, false);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("no unique index"));
    }
}
