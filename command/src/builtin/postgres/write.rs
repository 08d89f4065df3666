//! The writer of a PostgreSQL sink: one connection, one batch at a time.
//!
//! The rows that wait when a batch starts (up to `batch`) are written by
//! one `INSERT ... ON CONFLICT (id) DO NOTHING` statement, which is its own
//! transaction: each row is committed or none is. When the server refuses
//! a row of it, the statement changed nothing, and the batch is written
//! again in one transaction, halves in savepoints, the half that holds a
//! refused row halved again, down to the single rows refused: those are
//! answered with the server's reason, the others committed together.
//! When the database does not answer (or refuses the connection, or the
//! table), every row of the batch is answered `Database`, the connection
//! is dropped, and the next batch connects again.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Config};
use tracing::{debug, warn};

use super::{
    connect,
    refusal::{Fault, classify},
    row::{Shape, batch},
};

/// What became of one row.
pub type Written = Result<(), Fault>;

/// A row waiting for the writer, and who waits for it.
pub struct Pending {
    /// The message id (rows are written in the order of their ids, so
    /// that two workers writing the same ids take their locks in one order).
    pub id: String,
    /// The row, a JSON object.
    pub row: String,
    /// Told once the row is committed, refused, or could not be written.
    pub done: oneshot::Sender<Written>,
}

/// One sink's writer.
pub struct Writer {
    pub config: Config,
    pub shown: String,
    pub table: String,
    pub shape: Shape,
    pub batch: usize,
    /// Longest a batch may take before the database counts as not answering.
    pub deadline: Duration,
}

impl Writer {
    /// Writes batches until every sender is gone.
    pub async fn run(self, mut queue: mpsc::Receiver<Pending>) {
        let statement = self.shape.insert(&self.table);
        let mut client: Option<Client> = None;
        let mut waiting = Vec::with_capacity(self.batch);
        while queue.recv_many(&mut waiting, self.batch).await > 0 {
            let mut rows = std::mem::take(&mut waiting);
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            let texts: Vec<&str> = rows.iter().map(|p| p.row.as_str()).collect();
            let outcome =
                tokio::time::timeout(self.deadline, self.write(&mut client, &statement, &texts))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "PostgreSQL did not finish a batch within {:.0}s",
                            self.deadline.as_secs_f64()
                        ))
                    });
            let answers = match outcome {
                Ok(answers) => answers,
                Err(reason) => {
                    client = None;
                    vec![Err(Fault::Database(reason)); rows.len()]
                }
            };
            for (pending, answer) in rows.into_iter().zip(answers) {
                let _ = pending.done.send(answer);
            }
        }
    }

    /// Writes `rows`: an answer per row, or why the database took none.
    async fn write(
        &self,
        client: &mut Option<Client>,
        statement: &str,
        rows: &[&str],
    ) -> Result<Vec<Written>, String> {
        if client.as_ref().is_none_or(Client::is_closed) {
            *client = None;
            let connected = connect::connect(&self.config).await.map_err(|error| {
                format!(
                    "cannot connect to PostgreSQL at {}: {}",
                    self.shown,
                    fault_text(classify(&error))
                )
            })?;
            debug!(at = %self.shown, "connected to PostgreSQL");
            *client = Some(connected);
        }
        let db = client.as_mut().expect("connected");
        match db.execute(statement, &[&batch(rows.iter().copied())]).await {
            Ok(_) => Ok(vec![Ok(()); rows.len()]),
            Err(error) => match classify(&error) {
                Fault::Database(reason) => Err(reason),
                Fault::Row(reason) if rows.len() == 1 => Ok(vec![Err(Fault::Row(reason))]),
                Fault::Row(_) => bisect(db, statement, rows).await,
            },
        }
    }
}

fn fault_text(fault: Fault) -> String {
    match fault {
        Fault::Row(text) | Fault::Database(text) => text,
    }
}

/// Writes `rows` in one transaction, each part in a savepoint, halving
/// each part the server refuses until the refused rows stand alone.
async fn bisect(db: &mut Client, statement: &str, rows: &[&str]) -> Result<Vec<Written>, String> {
    let fail = |error: tokio_postgres::Error| fault_text(classify(&error));
    let mut answers: Vec<Written> = vec![Ok(()); rows.len()];
    let mut tx = db.transaction().await.map_err(fail)?;
    // The whole was refused already: start with its halves.
    let middle = rows.len() / 2;
    let mut parts = vec![(middle, rows.len()), (0, middle)];
    let mut statements = 0usize;
    while let Some((start, end)) = parts.pop() {
        statements += 1;
        let part = batch(rows[start..end].iter().copied());
        let savepoint = tx.savepoint("warren_part").await.map_err(fail)?;
        match savepoint.execute(statement, &[&part]).await {
            Ok(_) => savepoint.commit().await.map_err(fail)?,
            Err(error) => {
                savepoint.rollback().await.map_err(fail)?;
                match classify(&error) {
                    Fault::Database(reason) => return Err(reason),
                    Fault::Row(reason) if end - start == 1 => {
                        answers[start] = Err(Fault::Row(reason));
                    }
                    Fault::Row(_) => {
                        let middle = start + (end - start) / 2;
                        parts.push((middle, end));
                        parts.push((start, middle));
                    }
                }
            }
        }
    }
    tx.commit().await.map_err(fail)?;
    let refused = answers.iter().filter(|a| a.is_err()).count();
    if refused > 0 {
        warn!(
            refused,
            rows = rows.len(),
            statements,
            "PostgreSQL refused rows of a batch; they are dead-lettered with its reason, the others are written"
        );
    }
    Ok(answers)
}
