//! Secrets stay secret: every command, run with a broker password in the
//! URL, API keys in HTTP headers (in the file and from the environment), in
//! the API's query string and as a password in its URL, with debug and
//! trace logging, in text and JSON, prints none of them; and the keys do
//! reach the API. A password in a job's callback URL is shown neither in
//! the log nor in the job's state.

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
const URL_PASSWORD: &str = "up-77d2e0b4";
const CALLBACK_PASSWORD: &str = "cp-40c9a1f3";

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
/// `dir`.) A long-running command (`until` is `Some`) runs until its output
/// shows `until` (it did its work), then gets SIGTERM like from an operator.
async fn run(
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
    until: Option<&'static str>,
) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command.args(&args).envs(env).current_dir(dir);
        let Some(until) = until else {
            return command.output().expect("run warren");
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start warren");
        let stderr = child.stderr.take().unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut seen = seen.lock().unwrap();
                    seen.push_str(&line);
                    seen.push('\n');
                }
            })
        };
        let started = std::time::Instant::now();
        while !seen.lock().unwrap().contains(until) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let mut out = child.wait_with_output().expect("wait for warren");
        reader.join().unwrap();
        out.stderr = seen.lock().unwrap().clone().into_bytes();
        out
    })
    .await
    .unwrap()
}

/// A string for the whole test.
fn leak(text: &str) -> &'static str {
    Box::leak(text.to_string().into_boxed_str())
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
      url: "http://apiuser:{URL_PASSWORD}@127.0.0.1:{port}/grade?api_key={QUERY_KEY}"
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

    // (arguments, AMQP_URL, exit code, what its output shows when it did
    // its work; a long-running command runs until it shows that).
    struct Case<'a> {
        args: Vec<&'a str>,
        url: &'a str,
        code: i32,
        shows: &'static str,
        long: bool,
    }
    let case = |args: Vec<&'static str>, url, code, shows| Case {
        args,
        url,
        code,
        shows,
        long: false,
    };
    let (p, i, b) = (leak(&path), leak(&input), leak(&bad_file));
    let commands: Vec<Case<'_>> = vec![
        case(vec!["validate", p], &url, 0, "OK, pipeline"),
        case(vec!["declare", p, "--dry-run"], &url, 0, "would declare"),
        case(vec!["declare", p], &url, 0, "declared pipeline"),
        case(vec!["run", p, "--input", i, "--fresh"], &url, 1, "3 inputs"),
        case(vec!["send", p, "fetch", i], &url, 0, "sent 3 messages"),
        case(vec!["status", p], &url, 0, "consumers"),
        case(vec!["status", p, "--json"], &url, 0, "\"stages\""),
        case(vec!["drain", p, "--timeout", "2s"], &url, 1, "not drained"),
        case(vec!["dlq", p, "fetch", "list"], &url, 0, "dead letters in"),
        case(vec!["dlq", p, "fetch", "replay"], &url, 0, "replayed"),
        Case {
            long: true,
            ..case(vec!["supervise", p], &url, 0, "all workers stopped")
        },
        Case {
            long: true,
            ..case(vec!["worker", p, "--stage", "fetch"], &url, 0, "consuming")
        },
        case(vec!["dlq", p, "fetch", "purge"], &url, 0, "dropped"),
        case(vec!["declare", p], &unreachable, 69, "127.0.0.1:1"),
        case(vec!["status", p], &wrong, 69, "refused the login"),
        case(vec!["validate", b], &url, 78, "no stages"),
    ];
    let mut leaks = Vec::new();
    let mut idle = Vec::new();
    for case in &commands {
        for (level, format) in [("debug", "text"), ("trace", "json")] {
            let mut full: Vec<String> = case.args.iter().map(|a| a.to_string()).collect();
            full.extend(["--log-format".to_string(), format.to_string()]);
            let env = vec![
                ("AMQP_URL", case.url.to_string()),
                ("RUST_LOG", level.to_string()),
                ("SECRET_API_KEY", ENV_KEY.to_string()),
            ];
            let until = case.long.then_some(if case.args[0] == "supervise" {
                "supervising"
            } else {
                case.shows
            });
            let out = run(full.clone(), env, file.dir.path().to_path_buf(), until).await;
            let (stdout, stderr) = text(&out);
            if out.status.code() != Some(case.code)
                || !(stdout.contains(case.shows) || stderr.contains(case.shows))
            {
                idle.push(format!(
                    "warren {} (RUST_LOG={level}): exit {:?}, expected {} and `{}` in its output:\n{stdout}\n{}",
                    full.join(" "),
                    out.status.code(),
                    case.code,
                    case.shows,
                    &stderr[stderr.len().saturating_sub(1500)..],
                ));
            }
            for secret in [PASSWORD, FILE_KEY, ENV_KEY, QUERY_KEY, URL_PASSWORD] {
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
    assert!(
        idle.is_empty(),
        "commands that did not do their work (so their silence proves nothing):\n{}",
        idle.join("\n\n")
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n\n"));
    // The keys were really used: the API saw both headers.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|v| v == &format!("Bearer {FILE_KEY}"))
            && seen.iter().any(|v| v == ENV_KEY),
        "the API did not receive the keys: {seen:?}"
    );
}

#[tokio::test]
async fn a_password_in_a_callback_url_is_never_shown() {
    // Nothing listens there: every POST of the callback fails.
    let closed = free_port();
    let file = PipelineFile::new(
        "secretcb",
        &format!(
            "
pipeline: {{name}}
jobs: {{ track: true, callback: \"http://cbuser:{CALLBACK_PASSWORD}@127.0.0.1:{closed}/done?key={QUERY_KEY}\" }}
stages:
  results:
    sink: {{ path: out.jsonl }}
"
        ),
    );
    let _cleanup = Cleanup::pipeline(&file.path, &[format!("{}.supervisors", file.name)]);
    let pipeline = warren::config::load(&file.path).unwrap();
    declare(&pipeline).await;
    let dir = file.file("box");
    std::fs::create_dir_all(&dir).unwrap();
    let _supervisor = supervise_in(&file, &dir, "supervisor.log", &[]);
    let producer = warren::Producer::connect(&pipeline).await.unwrap();
    producer
        .send_with_id("results", "cb1", &json!({"n": 1}))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut view = warren_job(&file, &dir, "cb1", &[]).await.1;
    while view["callback"]["failed_attempts"].as_u64() < Some(1)
        && started.elapsed() < Duration::from_secs(90)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        view = warren_job(&file, &dir, "cb1", &[]).await.1;
    }
    let failed = view["callback"]["failed_attempts"].as_u64() >= Some(1);
    let log = std::fs::read_to_string(file.file("supervisor.log")).unwrap_or_default();
    assert!(failed, "the callback was never tried: {view}\n{log}");
    let error = view["callback"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cbuser:***@127.0.0.1"), "{view}");
    for secret in [CALLBACK_PASSWORD, QUERY_KEY] {
        assert!(
            !view.to_string().contains(secret),
            "the job shows {secret}: {view}"
        );
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}
