//! Whose fault an error is: the row's (the server refused its values:
//! dead-letter that message, write its neighbours) or the database's (down,
//! refusing connections, read-only, the table missing or not ours to write:
//! every message goes back uncharged and the stage pauses).

use tokio_postgres::error::DbError;

/// What an error of a write says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A row of the statement was refused: its values break a constraint
    /// or do not convert (the reason, one line).
    Row(String),
    /// The database cannot take rows now (the reason, one line).
    Database(String),
}

/// SQLSTATE classes that refuse a row for what it holds: 22 (data
/// exception: a value that does not convert, out of range, bad JSON
/// text), 23 (integrity constraint violation: NOT NULL, CHECK, UNIQUE,
/// FOREIGN KEY), 54 (program limit exceeded: a value too large to index).
const ROW_CLASSES: [&str; 3] = ["22", "23", "54"];

/// The fault of the SQLSTATE `code`, its reason `reason`.
pub fn classify_code(code: Option<&str>, reason: String) -> Fault {
    match code {
        Some(code) if ROW_CLASSES.iter().any(|class| code.starts_with(class)) => Fault::Row(reason),
        _ => Fault::Database(reason),
    }
}

/// The fault of `error`, with the server's words when it said any.
pub fn classify(error: &tokio_postgres::Error) -> Fault {
    match error.as_db_error() {
        Some(db) => classify_code(Some(db.code().code()), reason(db)),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            Fault::Database(warren::message::one_line(
                &format!("PostgreSQL: {text}"),
                500,
            ))
        }
    }
}

/// The server's reason: its message, detail and SQLSTATE, on one line.
fn reason(db: &DbError) -> String {
    let mut text = format!("PostgreSQL {}: {}", db.code().code(), db.message());
    if let Some(detail) = db.detail() {
        text.push_str(" (");
        text.push_str(detail);
        text.push(')');
    }
    warren::message::one_line(&text, 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_constraints_are_the_rows_fault() {
        for code in ["22P02", "22003", "23502", "23514", "23503", "54000"] {
            assert_eq!(
                classify_code(Some(code), "r".into()),
                Fault::Row("r".into()),
                "{code}"
            );
        }
    }

    #[test]
    fn everything_else_is_the_databases() {
        // Undefined table, privilege, read-only, shutting down, too many
        // connections, a deadlock, no code at all (the connection).
        for code in [
            Some("42P01"),
            Some("42501"),
            Some("25006"),
            Some("57P01"),
            Some("53300"),
            Some("40P01"),
            None,
        ] {
            assert_eq!(
                classify_code(code, "r".into()),
                Fault::Database("r".into()),
                "{code:?}"
            );
        }
    }
}
