//! The broker objects of a pipeline, planned from a [`Pipeline`] (pure) and
//! then declared (idempotent) or deleted.
//!
//! Per pipeline: the direct exchange `{pipeline}`. Per stage: its queue
//! `{pipeline}.{stage}` bound with key `{stage}`; its dead-letter queue
//! `{pipeline}.{stage}.dead`; one retry queue per distinct backoff delay,
//! `{pipeline}.{stage}.retry.{delay}`, whose message TTL is the delay and
//! whose dead-letter target is the stage queue (RabbitMQ 3.10 has no
//! delayed delivery, so the delay is a TTL that expires on the broker).

use std::{fmt, time::Duration};

use lapin::{
    Channel, Connection, ErrorKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};

use crate::{
    duration,
    error::Error,
    mismatch::Mismatch,
    names,
    pipeline::{Pipeline, QueueKind, Stage},
};

/// Everything a pipeline declares.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The pipeline exchange.
    pub exchange: String,
    /// Every queue, stage by stage.
    pub queues: Vec<Queue>,
}

/// One queue to declare.
#[derive(Clone, Debug, PartialEq)]
pub struct Queue {
    /// Queue name.
    pub name: String,
    /// What the queue is for.
    pub role: Role,
    /// Declaration arguments.
    pub args: Vec<(&'static str, Arg)>,
    /// Routing key that binds it to the pipeline exchange, if bound.
    pub binding: Option<String>,
}

/// What a queue is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A stage's input.
    Stage,
    /// Holds a stage's retries for this long.
    Retry(Duration),
    /// A stage's dead letters.
    Dead,
    /// Messages whose worker stopped while holding them, handled alone.
    Isolation,
    /// The job stream of a tracked pipeline (`jobs.track`).
    JobStream,
    /// Elects the job keeper of a tracked pipeline: one token message in a
    /// single-active-consumer queue; the supervisor holding it fires the
    /// callbacks and releases the gathers.
    Keeper,
}

/// A queue argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A string argument.
    Text(String),
    /// An integer argument.
    Int(i64),
    /// A boolean argument.
    Bool(bool),
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Text(text) if text.is_empty() => f.write_str("\"\""),
            Arg::Text(text) => f.write_str(text),
            Arg::Int(n) => write!(f, "{n}"),
            Arg::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Topology {
    /// The objects `pipeline` needs.
    pub fn plan(pipeline: &Pipeline) -> Topology {
        let mut queues: Vec<Queue> = pipeline
            .stages
            .iter()
            .flat_map(|stage| stage_queues(&pipeline.name, stage))
            .collect();
        if pipeline.jobs.track {
            queues.push(Queue {
                name: names::job_stream(&pipeline.name),
                role: Role::JobStream,
                args: vec![
                    ("x-queue-type", Arg::Text("stream".into())),
                    (
                        "x-max-age",
                        Arg::Text(format!("{}s", pipeline.jobs.keep.as_secs())),
                    ),
                ],
                binding: None,
            });
            queues.push(Queue {
                name: names::keeper_queue(&pipeline.name),
                role: Role::Keeper,
                args: vec![
                    ("x-queue-type", Arg::Text("quorum".into())),
                    ("x-single-active-consumer", Arg::Bool(true)),
                ],
                binding: None,
            });
        }
        Topology {
            exchange: names::exchange(&pipeline.name),
            queues,
        }
    }

    /// One line per object, for `warren declare --dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("exchange {} (direct, durable)", self.exchange)];
        for queue in &self.queues {
            let args: Vec<String> = queue.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let what = match &queue.role {
                Role::Stage => "stage input".to_string(),
                Role::Retry(delay) => format!("retries wait {} here", duration::format(*delay)),
                Role::Dead => "dead letters".to_string(),
                Role::Isolation => "handled alone after their worker stopped".to_string(),
                Role::JobStream => "job events, a stream".to_string(),
                Role::Keeper => "elects the job keeper".to_string(),
            };
            let bound = match &queue.binding {
                Some(key) => format!(", bound to {} with key {key}", self.exchange),
                None => String::new(),
            };
            lines.push(format!(
                "queue {} ({what}{bound}) {}",
                queue.name,
                args.join(" ")
            ));
        }
        lines
    }

    /// Declares every object; safe to repeat. Objects that exist with other
    /// arguments are all reported in one [`Error::Mismatch`].
    pub async fn declare(&self, connection: &Connection) -> Result<(), Error> {
        let mut channel = open_channel(connection).await?;
        let mut mismatches = Vec::new();
        let declared = channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Err(error) = declared {
            mismatches.push(mismatch_or(
                error,
                &format!("declare exchange {}", self.exchange),
            )?);
            channel = open_channel(connection).await?;
        }
        for queue in &self.queues {
            let declared = channel
                .queue_declare(
                    queue.name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    arguments(&queue.args),
                )
                .await;
            if let Err(error) = declared {
                mismatches.push(mismatch_or(
                    error,
                    &format!("declare queue {}", queue.name),
                )?);
                channel = open_channel(connection).await?;
                continue;
            }
            if let Some(key) = &queue.binding {
                channel
                    .queue_bind(
                        queue.name.as_str().into(),
                        self.exchange.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| Error::broker(format!("bind queue {}", queue.name), e))?;
            }
        }
        let _ = channel.close(200, "declared".into()).await;
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(Error::Mismatch(mismatches))
        }
    }

    /// Deletes every object of the plan, with whatever messages they hold.
    pub async fn delete(&self, connection: &Connection) -> Result<(), Error> {
        let channel = open_channel(connection).await?;
        for queue in &self.queues {
            channel
                .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| Error::broker(format!("delete queue {}", queue.name), e))?;
        }
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("delete exchange {}", self.exchange), e))?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }
}

fn stage_queues(pipeline: &str, stage: &Stage) -> Vec<Queue> {
    let kind = stage.queue.kind;
    let queue_type = ("x-queue-type", Arg::Text(kind.as_str().into()));
    let dead = names::dead_queue(pipeline, &stage.name);
    let mut input_args = vec![
        queue_type.clone(),
        ("x-dead-letter-exchange", Arg::Text(String::new())),
        ("x-dead-letter-routing-key", Arg::Text(dead.clone())),
    ];
    if let Some(limit) = stage.queue.delivery_limit {
        input_args.push(("x-delivery-limit", Arg::Int(i64::from(limit))));
    }
    let mut queues = vec![Queue {
        name: names::stage_queue(pipeline, &stage.name),
        role: Role::Stage,
        args: input_args,
        binding: Some(stage.name.clone()),
    }];
    for delay in stage.retry.levels() {
        let mut args = vec![
            queue_type.clone(),
            ("x-message-ttl", Arg::Int(delay.as_millis() as i64)),
            (
                "x-dead-letter-exchange",
                Arg::Text(names::exchange(pipeline)),
            ),
            ("x-dead-letter-routing-key", Arg::Text(stage.name.clone())),
        ];
        if kind == QueueKind::Quorum {
            // Quorum queues can dead-letter at least once (the expired
            // message stays until the stage queue confirms it).
            args.push(("x-dead-letter-strategy", Arg::Text("at-least-once".into())));
            args.push(("x-overflow", Arg::Text("reject-publish".into())));
        }
        queues.push(Queue {
            name: names::retry_queue(pipeline, &stage.name, delay),
            role: Role::Retry(delay),
            args,
            binding: None,
        });
    }
    queues.push(Queue {
        name: names::isolation_queue(pipeline, &stage.name),
        role: Role::Isolation,
        args: vec![
            queue_type.clone(),
            ("x-dead-letter-exchange", Arg::Text(String::new())),
            ("x-dead-letter-routing-key", Arg::Text(dead.clone())),
        ],
        binding: None,
    });
    queues.push(Queue {
        name: dead,
        role: Role::Dead,
        args: vec![queue_type],
        binding: None,
    });
    queues
}

fn arguments(args: &[(&'static str, Arg)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in args {
        let value = match value {
            Arg::Text(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            Arg::Int(n) => AMQPValue::LongLongInt(*n),
            Arg::Bool(b) => AMQPValue::Boolean(*b),
        };
        table.insert((*key).into(), value);
    }
    table
}

async fn open_channel(connection: &Connection) -> Result<Channel, Error> {
    connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open a channel", e))
}

/// A PRECONDITION_FAILED about arguments becomes a [`Mismatch`]; any other
/// error is returned as is.
fn mismatch_or(error: lapin::Error, context: &str) -> Result<Mismatch, Error> {
    if let ErrorKind::ProtocolError(amqp) = error.kind()
        && let Some(mismatch) = Mismatch::parse(amqp.get_message().as_str())
    {
        return Ok(mismatch);
    }
    Err(Error::broker(context, error))
}
