//! The grading example's worker: the `lookup` stage finds a company's
//! website (here: derived from its name, as a stand-in for a directory
//! lookup) and passes the company on to `grade`.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warren::{Context, Outcome, Worker};

/// An input line: `{"id": 7, "company": "Acme Inc"}`, other fields kept.
#[derive(Deserialize)]
struct Company {
    company: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// What `grade` receives.
#[derive(Serialize)]
struct Found {
    company: String,
    website: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

async fn lookup(input: Company, ctx: Context) -> Outcome {
    let website = format!("https://www.{}.example", slug(&input.company));
    ctx.emit(&Found {
        company: input.company,
        website,
        rest: input.rest,
    })
    .await?;
    Ok(())
}

/// Lower-case letters and digits of the name, other runs of characters as
/// one `-` (letters of any script stay, as in internationalised domains).
fn slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "unnamed".into()
    } else {
        slug.chars().take(63).collect()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    warren::logging::init(false);
    Worker::new().stage("lookup", lookup).serve().await
}
