//! Secrets stay secret: every command, run with a broker password in the
//! URL, API keys in HTTP headers (in the file and from the environment) and
//! in the API's query string, with debug and trace logging, in text and
//! JSON, prints none of them; and the keys do reach the API.

mod common;

use std::{
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, http::HeaderMap, http::StatusCode, routing::post};
use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "Pw-8c1f2e7d93";
const FILE_KEY: &str = "sk-file-5b0d77a1";
const ENV_KEY: &str = "sk-env-3e9a41c6";
const QUERY_KEY: &str = "qk-1f2a9b3c";

/// A broker user with a recognisable password, deleted when dropped.
struct BrokerUser(String);

impl BrokerUser {
    fn create(name: &str) -> BrokerUser {
        rabbitmqctl(&["add_user", name, PASSWORD]);
        let user = BrokerUser(name.to_string());
        rabbitmqctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        rabbitmqctl(&["set_user_tags", name, "monitoring"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

/// An API that records the keys it is sent: 200 with a grade, or 400 for
/// `n == 0` (a dead letter whose reason quotes the answer).
async fn api(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let app = Router::new().route(
        "/grade",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                for name in ["authorization", "x-api-key"] {
                    if let Some(value) = headers.get(name) {
                        seen.lock()
                            .unwrap()
                            .push(value.to_str().unwrap_or("").to_string());
                    }
                }
                if body["n"] == 0 {
                    (StatusCode::BAD_REQUEST, Json(json!({"error": "refused"})))
                } else {
                    (StatusCode::OK, Json(json!({"grade": "A"})))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Runs `warren args` with `env` (blocking, on a thread of its own).
/// (`warren run` keeps its state in `.warren` of the working directory:
/// `dir`.)
async fn run(
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
    for_a_while: bool,
) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command.args(&args).envs(env).current_dir(dir);
        if !for_a_while {
            return command.output().expect("run warren");
        }
        // A long-running command: let it work, then stop it like an operator.
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start warren");
        std::thread::sleep(Duration::from_secs(4));
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        child.wait_with_output().expect("wait for warren")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_prints_a_password_or_an_api_key() {
    let user_name = unique_name("secret");
    let _user = BrokerUser::create(&user_name);
    let url = format!("amqp://{user_name}:{PASSWORD}@127.0.0.1:5672/%2f");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let port = api(seen.clone()).await;
    let file = PipelineFile::new("secrets", "");
    std::fs::write(
        &file.path,
        format!(
            r#"
pipeline: {{name}}
broker: {{ url: "{url}" }}
defaults:
  timeout: 5s
  retry: {{ attempts: 1, backoff: [] }}
stages:
  fetch:
    http:
      method: POST
      url: "http://127.0.0.1:{port}/grade?api_key={QUERY_KEY}"
      headers:
        Authorization: "Bearer {FILE_KEY}"
        X-Api-Key: "${{SECRET_API_KEY}}"
      timeout: 5s
    outputs: [out]
  out:
    sink: {{ path: {sink} }}
"#,
            sink = file.file("out.jsonl").display()
        )
        .replace("{name}", &file.name),
    )
    .unwrap();
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let input = file.file("input.jsonl");
    std::fs::write(&input, "{\"n\": 0}\n{\"n\": 1}\n{\"n\": 2}\n").unwrap();
    let path = file.path.display().to_string();
    let input = input.display().to_string();
    let unreachable = format!("amqp://{user_name}:{PASSWORD}@127.0.0.1:1/%2f");
    let wrong = format!("amqp://{user_name}:{PASSWORD}x@127.0.0.1:5672/%2f");
    let bad_file = file.file("bad.yaml");
    std::fs::write(
        &bad_file,
        format!(
            "pipeline: x\nbroker: {{ url: \"amqp://u:{PASSWORD}@host:port/\" }}\nstages: {{}}\n"
        ),
    )
    .unwrap();
    let bad_file = bad_file.display().to_string();

    // (arguments, AMQP_URL, runs until stopped)
    let commands: Vec<(Vec<&str>, &str, bool)> = vec![
        (vec!["validate", &path], &url, false),
        (vec!["declare", &path, "--dry-run"], &url, false),
        (vec!["declare", &path], &url, false),
        (vec!["run", &path, "--input", &input], &url, false),
        (vec!["send", &path, "fetch", &input], &url, false),
        (vec!["status", &path], &url, false),
        (vec!["status", &path, "--json"], &url, false),
        (vec!["drain", &path, "--timeout", "2s"], &url, false),
        (vec!["dlq", &path, "fetch", "list"], &url, false),
        (vec!["dlq", &path, "fetch", "replay"], &url, false),
        (vec!["supervise", &path], &url, true),
        (vec!["worker", &path, "--stage", "fetch"], &url, true),
        (vec!["dlq", &path, "fetch", "purge"], &url, false),
        (vec!["declare", &path], &unreachable, false),
        (vec!["status", &path], &wrong, false),
        (vec!["validate", &bad_file], &url, false),
    ];
    let mut leaks = Vec::new();
    let mut runs = 0;
    for (args, amqp_url, for_a_while) in &commands {
        for (level, format) in [("debug", "text"), ("trace", "json")] {
            let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            full.extend(["--log-format".to_string(), format.to_string()]);
            let env = vec![
                ("AMQP_URL", amqp_url.to_string()),
                ("RUST_LOG", level.to_string()),
                ("SECRET_API_KEY", ENV_KEY.to_string()),
            ];
            let out = run(
                full.clone(),
                env,
                file.dir.path().to_path_buf(),
                *for_a_while,
            )
            .await;
            runs += 1;
            let (stdout, stderr) = text(&out);
            for secret in [PASSWORD, FILE_KEY, ENV_KEY, QUERY_KEY] {
                if stdout.contains(secret) || stderr.contains(secret) {
                    let at = stderr.find(secret).unwrap_or(0);
                    leaks.push(format!(
                        "warren {} (RUST_LOG={level}) printed {secret}: ...{}...",
                        full.join(" "),
                        &stderr[at.saturating_sub(200)..(at + 50).min(stderr.len())]
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n\n"));
    assert_eq!(runs, commands.len() * 2);
    // The keys were really used: the API saw both headers.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|v| v == &format!("Bearer {FILE_KEY}"))
            && seen.iter().any(|v| v == ENV_KEY),
        "the API did not receive the keys: {seen:?}"
    );
}
