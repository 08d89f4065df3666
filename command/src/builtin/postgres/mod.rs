//! The built-in PostgreSQL sink (`sink: { postgres: ... }`): each message
//! one row of a table, each id once, acknowledged after COMMIT.
//!
//! **Rows.** A message becomes one row ([`row`]): its id in the `id`
//! column, its body in the `body` column (jsonb), fields of the body in
//! the mapped `columns`. The server converts each value to its column's
//! type; a body that is not JSON is dead-lettered before any write.
//!
//! **Once.** Rows are written in batches ([`write`]), one transaction per
//! batch, `INSERT ... ON CONFLICT (id) DO NOTHING`; a message is
//! acknowledged only after its batch committed. A crash before COMMIT
//! writes nothing and the messages come again; a crash between COMMIT and
//! the acks brings them again too, and their ids, in the table already,
//! are skipped. So each id is one row, however often it comes (the `id`
//! column must be the table's primary key or have a unique index: the
//! live check says so when it is not).
//!
//! **Refusals** ([`refusal`]). A row the server refuses (a constraint, a
//! value that does not convert) is dead-lettered with the server's reason;
//! the other rows of its batch are written. A database that does not
//! answer, refuses the connection, is read-only or lacks the table fails
//! no message: each goes back to its queue uncharged and the stage pauses
//! like an open circuit breaker, probing with one message, every 2 s at
//! first, then up to every 30 s, until a write succeeds.
//!
//! **Checked live** ([`live`]): `warren validate` and `declare` compare
//! the columns with the table when they can connect.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warren::{
    Context, Failure, Outcome, PostgresSpec,
    worker::{Handler, HandlerFuture},
};

pub mod connect;
pub mod live;
mod refusal;
mod row;
mod write;

use refusal::Fault;
use row::Shape;
use write::{Pending, Writer};

/// A PostgreSQL sink: the queue of its writer.
pub struct PgSink {
    queue: mpsc::Sender<Pending>,
    shape: Shape,
}

impl PgSink {
    /// Starts the writer of `spec` (it connects at its first batch).
    /// `timeout` is the stage's: a batch that takes a third of it counts
    /// as the database not answering, so that a message waiting behind
    /// one batch is still answered in time.
    pub fn start(
        spec: &PostgresSpec,
        application: &str,
        timeout: Duration,
    ) -> Result<PgSink, String> {
        let config = connect::config(spec, application, |name| std::env::var(name).ok())?;
        let shape = Shape::new(spec);
        let (queue, rows) = mpsc::channel(spec.batch * 4);
        let writer = Writer {
            shown: connect::describe(&config),
            config,
            table: spec.table_sql(),
            shape: shape.clone(),
            batch: spec.batch,
            deadline: (timeout / 3).max(Duration::from_secs(1)),
        };
        tokio::spawn(writer.run(rows));
        Ok(PgSink { queue, shape })
    }

    /// Writes the row of message `id` and answers once it is committed.
    async fn write(&self, id: String, row: String) -> Outcome {
        let (done, written) = oneshot::channel();
        let stopped = || Failure::unavailable("the PostgreSQL writer stopped");
        self.queue
            .send(Pending { id, row, done })
            .await
            .map_err(|_| stopped())?;
        match written.await.map_err(|_| stopped())? {
            Ok(()) => Ok(()),
            Err(Fault::Row(reason)) => Err(Failure::dead(reason)),
            Err(Fault::Database(reason)) => Err(Failure::unavailable(reason)),
        }
    }
}

/// The sink as a handler: the body must be JSON.
pub struct PgHandler(pub Arc<PgSink>);

impl Handler for PgHandler {
    fn start(&self, body: &[u8], ctx: Context) -> Result<HandlerFuture, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "body is not valid JSON: {}",
                warren::message::one_line(&e.to_string(), 500)
            )
        })?;
        let row = self.0.shape.row(ctx.id(), value);
        let sink = self.0.clone();
        let id = ctx.id().to_string();
        Ok(Box::pin(async move { sink.write(id, row).await }))
    }
}
