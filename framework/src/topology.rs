//! The broker objects of a pipeline, planned from a [`Pipeline`] (pure) and
//! then declared (idempotent) or deleted.
//!
//! Per pipeline: the direct exchange `{pipeline}`. Per stage: its queue
//! `{pipeline}.{stage}` bound with key `{stage}`; its dead-letter queue
//! `{pipeline}.{stage}.dead`; one retry queue per distinct backoff delay,
//! `{pipeline}.{stage}.retry.{delay}`, whose message TTL is the delay and
//! whose dead-letter target is the stage queue (RabbitMQ 3.10 has no
//! delayed delivery, so the delay is a TTL that expires on the broker).
//!
//! Per pipeline, the delay cascade (`delay.rs`): one topic exchange and
//! one quorum queue per level, `{pipeline}.delay.{nn}`, each queue's TTL the
//! level's wait and its dead-letter target the level below (at least
//! once), and the due exchange `{pipeline}.delay.due` bound to every stage
//! queue with `#.{stage}`.
//!
//! Every quorum queue states its delivery limit (`x-delivery-limit`):
//! RabbitMQ 4.0 made 20 the default and drops, or dead-letters, a message
//! handed out more often, where 3.x had none. A stage queue takes the
//! pipeline's `queue.delivery_limit`; every other, and a stage queue
//! without one, states [`NO_DELIVERY_LIMIT`], the same on every version.
//! (`-1`, RabbitMQ 4's "unlimited", means "drop at the first return" on
//! 3.x.) Classic queues and streams never count deliveries.

use std::{fmt, time::Duration};

use lapin::{
    Channel, Connection, ErrorKind,
    options::{
        ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};

use tracing::warn;

use crate::{
    delay, duration,
    error::Error,
    mismatch::Mismatch,
    names,
    pipeline::{Pipeline, QueueKind, Stage},
};

/// The delivery limit warren states where the broker must never drop or
/// dead-letter a message for being handed out too often (RabbitMQ 4's
/// default is 20): a billion, never reached. warren counts attempts
/// itself (`x-warren-attempt`); listing dead letters hands them back.
pub const NO_DELIVERY_LIMIT: i64 = 1_000_000_000;

/// The delivery-limit argument.
const DELIVERY_LIMIT: &str = "x-delivery-limit";

/// Everything a pipeline declares.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The pipeline exchange.
    pub exchange: String,
    /// Every queue, stage by stage, then the pipeline's own.
    pub queues: Vec<Queue>,
    /// The delay cascade's topic exchanges (levels, then the due one).
    pub delay_exchanges: Vec<String>,
    /// The delay cascade's bindings, declared once its exchanges and
    /// queues are.
    pub delay_bindings: Vec<Binding>,
}

/// A binding of the delay cascade: from a topic exchange to a queue or
/// to another exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The exchange messages come from.
    pub source: String,
    /// Where the matching ones go.
    pub destination: Destination,
    /// The topic pattern.
    pub pattern: String,
}

/// Where a binding sends what it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A queue.
    Queue(String),
    /// An exchange.
    Exchange(String),
}

/// One queue to declare.
#[derive(Clone, Debug, PartialEq)]
pub struct Queue {
    /// Queue name.
    pub name: String,
    /// What the queue is for.
    pub role: Role,
    /// The stage it belongs to (none for the job stream and the keeper's
    /// queue, which belong to the pipeline).
    pub stage: Option<String>,
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
    /// The cancelled jobs of a tracked pipeline, a stream every worker
    /// reads (kept for `jobs.keep`).
    CancelStream,
    /// The paused stages of a pipeline, a stream every worker reads
    /// (`pauses.rs`), kept without an age limit.
    PauseStream,
    /// The peeks at a pipeline's waiting messages, a stream every worker
    /// reads (`peeks.rs`), kept a day.
    PeekStream,
    /// Level `n` of the delay cascade: delayed messages wait here for
    /// `delay::level_wait(n)`.
    Delay(u8),
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

/// What [`Topology::declare`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// Queues that exist without a delivery limit (declared by a warren
    /// before limits were stated): RabbitMQ cannot add one to an existing
    /// queue, so they are kept as they are. On RabbitMQ 4 the broker's
    /// default of 20 deliveries applies to them.
    pub without_limit: Vec<String>,
}

impl Declared {
    /// What to tell the user about `queue`, one of [`Self::without_limit`].
    pub fn explain(queue: &str) -> String {
        format!(
            "queue `{queue}` was declared by an earlier warren without a delivery limit, and \
             RabbitMQ cannot add one to an existing queue: on RabbitMQ 4 the broker's default \
             applies to it (a message handed out 20 times is dropped or dead-lettered). It works \
             as before on RabbitMQ 3. To state the limit, recreate it when it is empty: \
             `rabbitmqctl delete_queue {queue}` (for a dead-letter queue, after `warren dlq ... \
             replay` or `purge`), then `warren declare`."
        )
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
            for (name, role) in [
                (names::job_stream(&pipeline.name), Role::JobStream),
                (names::cancel_stream(&pipeline.name), Role::CancelStream),
            ] {
                queues.push(Queue {
                    name,
                    role,
                    stage: None,
                    args: vec![
                        ("x-queue-type", Arg::Text("stream".into())),
                        (
                            "x-max-age",
                            Arg::Text(format!("{}s", pipeline.jobs.keep.as_secs())),
                        ),
                    ],
                    binding: None,
                });
            }
            queues.push(Queue {
                name: names::keeper_queue(&pipeline.name),
                role: Role::Keeper,
                stage: None,
                args: vec![
                    ("x-queue-type", Arg::Text("quorum".into())),
                    ("x-single-active-consumer", Arg::Bool(true)),
                    (DELIVERY_LIMIT, Arg::Int(NO_DELIVERY_LIMIT)),
                ],
                binding: None,
            });
        }
        queues.push(Queue {
            name: names::pause_stream(&pipeline.name),
            role: Role::PauseStream,
            stage: None,
            args: vec![("x-queue-type", Arg::Text("stream".into()))],
            binding: None,
        });
        queues.push(Queue {
            name: names::peek_stream(&pipeline.name),
            role: Role::PeekStream,
            stage: None,
            args: vec![
                ("x-queue-type", Arg::Text("stream".into())),
                ("x-max-age", Arg::Text(crate::peeks::KEPT.into())),
            ],
            binding: None,
        });
        let (levels, delay_exchanges, delay_bindings) = cascade(pipeline);
        queues.extend(levels);
        Topology {
            exchange: names::exchange(&pipeline.name),
            queues,
            delay_exchanges,
            delay_bindings,
        }
    }

    /// One line per object, for `warren declare --dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("exchange {} (direct, durable)", self.exchange)];
        for exchange in &self.delay_exchanges {
            lines.push(format!("exchange {exchange} (topic, durable, delays)"));
        }
        for queue in &self.queues {
            let args: Vec<String> = queue.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let what = match &queue.role {
                Role::Stage => "stage input".to_string(),
                Role::Retry(delay) => format!("retries wait {} here", duration::format(*delay)),
                Role::Dead => "dead letters".to_string(),
                Role::Isolation => "handled alone after their worker stopped".to_string(),
                Role::JobStream => "job events, a stream".to_string(),
                Role::Keeper => "elects the job keeper".to_string(),
                Role::CancelStream => "cancelled jobs, a stream".to_string(),
                Role::PauseStream => "paused stages, a stream".to_string(),
                Role::PeekStream => "peeks at waiting messages, a stream".to_string(),
                Role::Delay(level) => format!(
                    "delayed messages wait {} here",
                    duration::format(delay::level_wait(*level))
                ),
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
        for binding in &self.delay_bindings {
            let to = match &binding.destination {
                Destination::Queue(queue) => format!("queue {queue}"),
                Destination::Exchange(exchange) => format!("exchange {exchange}"),
            };
            lines.push(format!(
                "binding {} -> {to} with {}",
                binding.source, binding.pattern
            ));
        }
        lines
    }

    /// The names of the queues a look at the pipeline reads (depths,
    /// consumers): every queue but the delay levels, which belong to no
    /// stage and come last, so these are a prefix of [`Topology::queues`].
    pub fn looked_at(&self) -> Vec<String> {
        self.queues
            .iter()
            .take_while(|q| !matches!(q.role, Role::Delay(_)))
            .map(|q| q.name.clone())
            .collect()
    }

    /// The dead-letter queue of `stage`, as planned.
    pub fn dead_queue(&self, stage: &str) -> Option<&Queue> {
        let name = names::dead_queue(&self.exchange, stage);
        self.queues.iter().find(|q| q.name == name)
    }

    /// Declares every object; safe to repeat. Objects that exist with other
    /// arguments are all reported in one [`Error::Mismatch`], except a
    /// queue that exists without the delivery limit warren states by
    /// default: it is kept, and named in [`Declared::without_limit`] (and
    /// a warning).
    pub async fn declare(&self, connection: &Connection) -> Result<Declared, Error> {
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
        for exchange in &self.delay_exchanges {
            let declared = channel
                .exchange_declare(
                    exchange.as_str().into(),
                    lapin::ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if let Err(error) = declared {
                mismatches.push(mismatch_or(error, &format!("declare exchange {exchange}"))?);
                channel = open_channel(connection).await?;
            }
        }
        let mut found = Declared::default();
        for queue in &self.queues {
            let mut declared = declare_queue(&channel, &queue.name, &queue.args).await;
            if let Err(error) = declared {
                let mismatch = mismatch_or(error, &format!("declare queue {}", queue.name))?;
                channel = open_channel(connection).await?;
                if !queue.legacy(&mismatch) {
                    mismatches.push(mismatch);
                    continue;
                }
                // As an earlier warren declared it: the rest must match.
                let args: Vec<_> = queue
                    .args
                    .iter()
                    .filter(|(key, _)| *key != DELIVERY_LIMIT)
                    .cloned()
                    .collect();
                declared = declare_queue(&channel, &queue.name, &args).await;
                if let Err(error) = declared {
                    mismatches.push(mismatch_or(
                        error,
                        &format!("declare queue {}", queue.name),
                    )?);
                    channel = open_channel(connection).await?;
                    continue;
                }
                warn!("{}", Declared::explain(&queue.name));
                found.without_limit.push(queue.name.clone());
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
        if mismatches.is_empty() {
            for binding in &self.delay_bindings {
                bind(&channel, binding).await?;
            }
        }
        let _ = channel.close(200, "declared".into()).await;
        if mismatches.is_empty() {
            Ok(found)
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
        for exchange in std::iter::once(&self.exchange).chain(&self.delay_exchanges) {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|e| Error::broker(format!("delete exchange {exchange}"), e))?;
        }
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }
}

impl Queue {
    /// The delivery limit the queue states, if it is a quorum queue.
    pub fn delivery_limit(&self) -> Option<i64> {
        self.args.iter().find_map(|(key, value)| match value {
            Arg::Int(n) if *key == DELIVERY_LIMIT => Some(*n),
            _ => None,
        })
    }

    /// Whether `mismatch` only says that the queue exists without the
    /// limit warren states by default: a queue an earlier warren declared.
    fn legacy(&self, mismatch: &Mismatch) -> bool {
        mismatch.argument == DELIVERY_LIMIT
            && mismatch.existing == "(not set)"
            && self.delivery_limit() == Some(NO_DELIVERY_LIMIT)
    }

    /// Declares this queue alone (on a channel of its own): for a queue a
    /// command writes to that workers of an earlier warren did not declare.
    pub async fn declare_alone(&self, connection: &Connection) -> Result<(), Error> {
        let channel = open_channel(connection).await?;
        declare_queue(&channel, &self.name, &self.args)
            .await
            .map_err(|e| Error::broker(format!("declare queue {}", self.name), e))?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Whether the queue on the broker never drops a message for being
    /// handed out too often: it exists with the arguments planned here
    /// (so with [`NO_DELIVERY_LIMIT`], or as a classic queue, which counts
    /// nothing). A queue without a limit of its own (an earlier warren's,
    /// where RabbitMQ 4 applies its default), with another limit or with
    /// other arguments is not known to. The check is a declaration with the
    /// planned arguments, which the broker refuses when they differ; the
    /// queue must exist. A `delivery-limit` policy is not seen: it lowers
    /// what the queue states.
    pub async fn keeps_what_it_hands_back(&self, connection: &Connection) -> Result<bool, Error> {
        let channel = open_channel(connection).await?;
        match declare_queue(&channel, &self.name, &self.args).await {
            Ok(()) => {
                let _ = channel.close(200, "checked".into()).await;
                Ok(true)
            }
            Err(error) => {
                mismatch_or(error, &format!("look at queue {}", self.name))?;
                Ok(false)
            }
        }
    }
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: &[(&'static str, Arg)],
) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments(args),
        )
        .await
        .map(|_| ())
}

fn stage_queues(pipeline: &str, stage: &Stage) -> Vec<Queue> {
    let kind = stage.queue.kind;
    let queue_type = ("x-queue-type", Arg::Text(kind.as_str().into()));
    let dead = names::dead_queue(pipeline, &stage.name);
    // Quorum queues state their limit; classic queues have none.
    let limit = |limit: Option<u32>| -> Vec<(&'static str, Arg)> {
        match kind {
            QueueKind::Quorum => vec![(
                DELIVERY_LIMIT,
                Arg::Int(limit.map_or(NO_DELIVERY_LIMIT, i64::from)),
            )],
            QueueKind::Classic => Vec::new(),
        }
    };
    let mut input_args = vec![
        queue_type.clone(),
        ("x-dead-letter-exchange", Arg::Text(String::new())),
        ("x-dead-letter-routing-key", Arg::Text(dead.clone())),
    ];
    input_args.extend(limit(stage.queue.delivery_limit));
    let mut queues = vec![Queue {
        name: names::stage_queue(pipeline, &stage.name),
        role: Role::Stage,
        stage: Some(stage.name.clone()),
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
        args.extend(limit(None));
        queues.push(Queue {
            name: names::retry_queue(pipeline, &stage.name, delay),
            role: Role::Retry(delay),
            stage: Some(stage.name.clone()),
            args,
            binding: None,
        });
    }
    queues.push(Queue {
        name: names::isolation_queue(pipeline, &stage.name),
        role: Role::Isolation,
        stage: Some(stage.name.clone()),
        args: [
            vec![
                queue_type.clone(),
                ("x-dead-letter-exchange", Arg::Text(String::new())),
                ("x-dead-letter-routing-key", Arg::Text(dead.clone())),
            ],
            limit(None),
        ]
        .concat(),
        binding: None,
    });
    queues.push(Queue {
        name: dead,
        role: Role::Dead,
        stage: Some(stage.name.clone()),
        args: [vec![queue_type], limit(None)].concat(),
        binding: None,
    });
    queues
}

/// The delay cascade of `pipeline`: a queue per level, the exchanges
/// (levels, then due) and their bindings (see `delay.rs`).
fn cascade(pipeline: &Pipeline) -> (Vec<Queue>, Vec<String>, Vec<Binding>) {
    let name = &pipeline.name;
    let due = names::delay_due(name);
    let below = |level: u8| match level.checked_sub(1) {
        Some(lower) => names::delay_level(name, lower),
        None => due.clone(),
    };
    let mut queues = Vec::new();
    let mut exchanges = Vec::new();
    let mut bindings = Vec::new();
    for level in 0..delay::LEVELS {
        let level_name = names::delay_level(name, level);
        queues.push(Queue {
            name: level_name.clone(),
            role: Role::Delay(level),
            stage: None,
            args: vec![
                ("x-queue-type", Arg::Text("quorum".into())),
                (
                    "x-message-ttl",
                    Arg::Int(delay::level_wait(level).as_millis() as i64),
                ),
                ("x-dead-letter-exchange", Arg::Text(below(level))),
                ("x-dead-letter-strategy", Arg::Text("at-least-once".into())),
                ("x-overflow", Arg::Text("reject-publish".into())),
                (DELIVERY_LIMIT, Arg::Int(NO_DELIVERY_LIMIT)),
            ],
            binding: None,
        });
        bindings.push(Binding {
            source: level_name.clone(),
            destination: Destination::Queue(level_name.clone()),
            pattern: delay::pattern(level, true),
        });
        bindings.push(Binding {
            source: level_name.clone(),
            destination: Destination::Exchange(below(level)),
            pattern: delay::pattern(level, false),
        });
        exchanges.push(level_name);
    }
    for stage in &pipeline.stages {
        bindings.push(Binding {
            source: due.clone(),
            destination: Destination::Queue(names::stage_queue(name, &stage.name)),
            pattern: delay::due_pattern(&stage.name),
        });
    }
    exchanges.push(due);
    (queues, exchanges, bindings)
}

async fn bind(channel: &Channel, binding: &Binding) -> Result<(), Error> {
    let source = binding.source.as_str().into();
    let pattern = binding.pattern.as_str().into();
    let bound = match &binding.destination {
        Destination::Queue(queue) => {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    source,
                    pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
        Destination::Exchange(exchange) => {
            channel
                .exchange_bind(
                    exchange.as_str().into(),
                    source,
                    pattern,
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
    };
    bound.map_err(|e| {
        Error::broker(
            format!("bind {} with {}", binding.source, binding.pattern),
            e,
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Topology {
        let pipeline = crate::config::parse_str(yaml, std::path::Path::new("p.yaml"), &[])
            .expect("a valid pipeline");
        Topology::plan(&pipeline)
    }

    /// RabbitMQ 4 drops (or dead-letters) a message of a quorum queue
    /// handed out 20 times unless the queue says otherwise: each states
    /// its limit. Classic queues and streams count nothing.
    #[test]
    fn every_quorum_queue_states_its_delivery_limit() {
        let topology = plan(
            "
pipeline: p
jobs: { track: true }
stages:
  a:
    command: [x]
    retry: { attempts: 3, backoff: [1s, 5s] }
  b:
    command: [x]
    queue: { delivery_limit: 7 }
  c:
    command: [x]
    queue: { type: classic }
",
        );
        for queue in &topology.queues {
            let kind = queue.args.iter().find_map(|(k, v)| match v {
                Arg::Text(t) if *k == "x-queue-type" => Some(t.as_str()),
                _ => None,
            });
            let wanted = match (kind, queue.name.as_str()) {
                (Some("quorum"), "p.b") => Some(7),
                (Some("quorum"), _) => Some(NO_DELIVERY_LIMIT),
                _ => None,
            };
            assert_eq!(queue.delivery_limit(), wanted, "{}", queue.name);
        }
        let keeper = topology.queues.iter().find(|q| q.role == Role::Keeper);
        assert_eq!(
            keeper.and_then(Queue::delivery_limit),
            Some(NO_DELIVERY_LIMIT)
        );
        let stream = topology.queues.iter().find(|q| q.role == Role::JobStream);
        assert_eq!(stream.and_then(Queue::delivery_limit), None);
        assert!(
            topology
                .describe()
                .iter()
                .any(|l| l.starts_with("queue p.a.dead ")
                    && l.contains("x-delivery-limit=1000000000"))
        );
        assert_eq!(
            topology.dead_queue("b").map(|q| q.name.as_str()),
            Some("p.b.dead")
        );
        assert!(topology.dead_queue("nope").is_none());
    }

    /// Each delay level waits its time and hands on to the level below,
    /// the last to the due exchange, bound to every stage queue.
    #[test]
    fn the_delay_cascade_chains_its_levels_down_to_the_stage_queues() {
        let topology = plan(
            "
pipeline: p
stages:
  a:
    command: [x]
  b:
    command: [x]
",
        );
        let levels: Vec<&Queue> = topology
            .queues
            .iter()
            .filter(|q| matches!(q.role, Role::Delay(_)))
            .collect();
        assert_eq!(levels.len(), usize::from(delay::LEVELS));
        // Last, and not looked at.
        assert_eq!(
            topology.looked_at().len(),
            topology.queues.len() - levels.len()
        );
        let arg = |queue: &Queue, key: &str| {
            queue
                .args
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        for (n, queue) in levels.iter().enumerate() {
            assert_eq!(queue.name, format!("p.delay.{n:02}"));
            assert_eq!(arg(queue, "x-message-ttl"), Some((125u64 << n).to_string()));
            let below = if n == 0 {
                "p.delay.due".to_string()
            } else {
                format!("p.delay.{:02}", n - 1)
            };
            assert_eq!(arg(queue, "x-dead-letter-exchange"), Some(below));
            assert_eq!(
                arg(queue, "x-dead-letter-strategy").as_deref(),
                Some("at-least-once")
            );
            assert_eq!(queue.delivery_limit(), Some(NO_DELIVERY_LIMIT));
            assert!(topology.delay_exchanges.contains(&queue.name));
        }
        assert_eq!(topology.delay_exchanges.len(), levels.len() + 1);
        let due: Vec<(&Destination, &str)> = topology
            .delay_bindings
            .iter()
            .filter(|b| b.source == "p.delay.due")
            .map(|b| (&b.destination, b.pattern.as_str()))
            .collect();
        assert_eq!(
            due,
            vec![
                (&Destination::Queue("p.a".into()), "#.a"),
                (&Destination::Queue("p.b".into()), "#.b")
            ]
        );
        assert_eq!(
            topology.delay_bindings.len(),
            2 * usize::from(delay::LEVELS) + 2
        );
        assert!(
            topology
                .describe()
                .iter()
                .any(|l| l == "binding p.delay.00 -> exchange p.delay.due with *.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.0.#")
        );
    }

    /// A queue that exists without any limit is one an earlier warren
    /// declared: kept where warren states no limit of its own choosing.
    #[test]
    fn only_queues_without_any_limit_where_warren_states_none_are_legacy() {
        let topology = plan(
            "
pipeline: p
stages:
  a:
    command: [x]
    queue: { delivery_limit: 7 }
",
        );
        let queue = |name: &str| topology.queues.iter().find(|q| q.name == name).unwrap();
        let mismatch = |text: &str| Mismatch::parse(text).unwrap();
        let none = mismatch(
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'p.a.dead' in vhost '/': received the value '1000000000' of type 'long' but current is none",
        );
        assert!(queue("p.a.dead").legacy(&none));
        assert!(queue("p.a.isolated").legacy(&none));
        // The user asked for 7: the file and the broker must agree.
        assert!(!queue("p.a").legacy(&none));
        let other = mismatch(
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'p.a.dead' in vhost '/': received the value '1000000000' of type 'long' but current is the value '20' of type 'long'",
        );
        assert!(!queue("p.a.dead").legacy(&other));
        let kind = mismatch(
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'p.a.dead' in vhost '/': received 'quorum' but current is 'classic'",
        );
        assert!(!queue("p.a.dead").legacy(&kind));
    }
}
