//! Starting the front door (`warren serve`, `warren supervise --http`) on
//! any address and scheme, and the certificates for HTTPS, made by
//! `openssl` (Debian package `openssl`). Included by the tests that need
//! it (`#[path = "common/front_door.rs"] mod front_door;`).
#![allow(dead_code)]

use std::{path::Path, process::Command, time::Duration};

use crate::common::*;

/// `warren serve` (or `warren supervise --http`: `command`) on a free port
/// of `ip`, answering `/healthz` through `client` at `scheme`: the process
/// and its base URL (on 127.0.0.1).
pub async fn start(
    file: &PipelineFile,
    command: &str,
    ip: &str,
    scheme: &str,
    client: &reqwest::Client,
) -> (ChildGuard, String) {
    let port = free_port();
    let flag = if command == "serve" {
        "--listen"
    } else {
        "--http"
    };
    let child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([command, file.path.to_str().unwrap()])
            .args([flag, &format!("{ip}:{port}")])
            .env("AMQP_URL", amqp_url())
            .env("RUST_LOG", "info")
            .env_remove("WARREN_SERVE_TOKEN")
            .current_dir(file.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&file.file("serve.log")))
            .spawn()
            .expect("start warren"),
    );
    let base = format!("{scheme}://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(30), || async {
        client.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    assert!(up, "warren {command} did not start: {}", serve_log(file));
    (child, base)
}

/// A client that follows no redirect.
pub fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A certificate for localhost and 127.0.0.1 (`NAME-cert.pem`,
/// `NAME-key.pem`) signed by a CA of its own (`NAME-ca.pem`), in `dir`,
/// made by `openssl`.
pub fn certificate(dir: &Path, name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out).1);
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca-key.pem"));
    let (cert, key) = (format!("{name}-cert.pem"), format!("{name}-key.pem"));
    let request = format!("{name}.csr");
    let extensions = format!("{name}.ext");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-days",
        "2",
        "-subj",
        "/CN=warren test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    run(&args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=localhost", "-keyout", &key, "-out", &request]);
    run(&args);
    std::fs::write(
        dir.join(&extensions),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &request,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &extensions,
        "-out",
        &cert,
    ]);
}

/// A client that trusts the CA of certificate `name` of `dir`.
pub fn trusting(dir: &Path, name: &str) -> reqwest::Client {
    let pem = std::fs::read(dir.join(format!("{name}-ca.pem"))).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
