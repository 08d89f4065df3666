//! The stage `greet` of the pipeline {{name}} (pipeline.yaml): a worker
//! program on the warren framework, started by `warren supervise` or
//! `warren run` (a `command` stage).

use serde::{Deserialize, Serialize};
use warren::{Context, Failure, Outcome, Worker};

/// What arrives: `{"name": "Ada"}`. A body that does not fit is
/// dead-lettered at once, with serde's reason.
#[derive(Deserialize)]
struct Person {
    name: String,
}

/// What goes on to the next stage.
#[derive(Serialize)]
struct Greeting {
    name: String,
    greeting: String,
}

async fn greet(person: Person, ctx: Context) -> Outcome {
    if person.name.is_empty() {
        // Can never succeed: to the dead-letter queue, with this reason.
        return Err(Failure::dead("an empty name"));
    }
    let greeting = format!("Hello, {}!", person.name);
    // To every output of the stage; confirmed before the message is acked.
    ctx.emit(&Greeting {
        name: person.name,
        greeting,
    })
    .await?;
    Ok(()) // done; an error (or `?`) is retried with the stage's backoff
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    warren::logging::init(false);
    // Reads WARREN_PIPELINE (the pipeline file's path) and WARREN_STAGE,
    // which the supervisor sets.
    Worker::new().stage("greet", greet).serve().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren::{testing::Harness, worker::Disposition};

    #[tokio::test]
    async fn greets_by_name() {
        let run = Harness::new("greet", greet)
            .outputs(&["greetings"])
            .run_bytes(br#"{"name": "Ada"}"#)
            .await;
        assert_eq!(run.disposition, Disposition::Done);
        assert_eq!(run.emitted[0].body["greeting"], "Hello, Ada!");
    }

    #[tokio::test]
    async fn dead_letters_a_message_without_a_name() {
        let run = Harness::new("greet", greet)
            .run_bytes(br#"{"nom": "Ada"}"#)
            .await;
        assert!(matches!(run.disposition, Disposition::Dead { .. }), "{run:?}");
    }
}
