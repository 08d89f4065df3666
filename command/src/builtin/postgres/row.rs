//! A message as a row, and the one statement that writes a batch of rows.
//!
//! A batch travels as one parameter: a JSON array of objects whose keys
//! are the table's column names (the id, the body, the mapped fields).
//! `jsonb_populate_recordset` turns it into rows of the table's own type,
//! so every value is converted by the server with the column's type (a
//! JSON string `"2026-12-06T01:00:00Z"` into a `timestamptz`, a number into
//! an `integer`), and a value that does not convert is the server's refusal
//! of that row, in its words.

use serde_json::{Map, Value};
use warren::{PostgresSpec, pipeline::quote};

/// How a message becomes a row.
#[derive(Clone, Debug)]
pub struct Shape {
    id: String,
    body: Option<String>,
    columns: Vec<(String, String)>,
}

impl Shape {
    /// The shape of `spec`'s rows.
    pub fn new(spec: &PostgresSpec) -> Shape {
        Shape {
            id: spec.id.clone(),
            body: spec.body.clone(),
            columns: spec.columns.clone(),
        }
    }

    /// The row of the message `id` with body `body`, as a JSON object. A
    /// field the body lacks is left out (the column gets NULL).
    pub fn row(&self, id: &str, body: Value) -> String {
        let mut row = Map::new();
        row.insert(self.id.clone(), Value::String(id.to_string()));
        for (column, field) in &self.columns {
            let value = if field.starts_with('/') {
                body.pointer(field)
            } else {
                body.get(field)
            };
            if let Some(value) = value {
                row.insert(column.clone(), value.clone());
            }
        }
        if let Some(column) = &self.body {
            row.insert(column.clone(), body);
        }
        Value::Object(row).to_string()
    }

    /// Every column written, the id first.
    pub fn columns(&self) -> Vec<&str> {
        let mut all = vec![self.id.as_str()];
        all.extend(self.columns.iter().map(|(column, _)| column.as_str()));
        all.extend(self.body.as_deref());
        all
    }

    /// The statement that writes the rows of `$1` (a JSON array of rows,
    /// as text) into `table`, skipping each id the table holds already.
    pub fn insert(&self, table: &str) -> String {
        let columns: Vec<String> = self.columns().into_iter().map(quote).collect();
        let selected: Vec<String> = columns.iter().map(|c| format!("r.{c}")).collect();
        format!(
            "INSERT INTO {table} ({}) SELECT {} FROM jsonb_populate_recordset(NULL::{table}, $1::text::jsonb) AS r ON CONFLICT ({}) DO NOTHING",
            columns.join(", "),
            selected.join(", "),
            quote(&self.id),
        )
    }
}

/// The parameter of [`Shape::insert`] for `rows` (each a JSON object).
pub fn batch<'a>(rows: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::from("[");
    for (i, row) in rows.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(row);
    }
    text.push(']');
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape(body: Option<&str>, columns: &[(&str, &str)]) -> Shape {
        Shape {
            id: "id".into(),
            body: body.map(str::to_string),
            columns: columns
                .iter()
                .map(|(c, f)| (c.to_string(), f.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_row_holds_the_id_the_mapped_fields_and_the_body() {
        let shape = shape(
            Some("doc"),
            &[("url", "url"), ("agent", "/ua/name"), ("gone", "x")],
        );
        let body = json!({"url": "/a", "ua": {"name": "curl"}, "n": 1});
        let row: Value = serde_json::from_str(&shape.row("m.0", body.clone())).unwrap();
        assert_eq!(
            row,
            json!({"id": "m.0", "url": "/a", "agent": "curl", "doc": body})
        );
    }

    #[test]
    fn the_statement_quotes_every_name_and_skips_known_ids() {
        let shape = shape(Some("doc"), &[("Url", "url")]);
        assert_eq!(
            shape.insert("\"s\".\"t\""),
            "INSERT INTO \"s\".\"t\" (\"id\", \"Url\", \"doc\") SELECT r.\"id\", r.\"Url\", r.\"doc\" FROM jsonb_populate_recordset(NULL::\"s\".\"t\", $1::text::jsonb) AS r ON CONFLICT (\"id\") DO NOTHING"
        );
        assert_eq!(batch(["{\"a\":1}", "{}"].into_iter()), "[{\"a\":1},{}]");
        assert_eq!(batch(std::iter::empty()), "[]");
    }

    #[test]
    fn odd_ids_stay_json_strings() {
        let row = shape(Some("doc"), &[]).row("a\"b\n\u{1}", json!(null));
        let back: Value = serde_json::from_str(&row).unwrap();
        assert_eq!(back["id"], "a\"b\n\u{1}");
    }
}
