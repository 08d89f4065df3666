//! The Kubernetes and KEDA manifests of `deploy/kubernetes/`, checked
//! offline by `tests/kubernetes/check.py` (see its docstring): every object
//! against Kubernetes' schemas (`kubernetes-validate` from PyPI, strict) or
//! the KEDA schemas kept in `tests/kubernetes/keda-schemas.yaml`
//! (`jsonschema`), and each stage of the pipeline file in the ConfigMap
//! against its Deployment and its ScaledObject. The pipeline file itself
//! passes `warren validate`. Each way a manifest can be wrong is shown to
//! fail on a broken copy.
//!
//! The Python packages go into a venv under target/ (`target/tmp/
//! kubernetes-venv`), made with pip on the first run (about 5 s, needs
//! PyPI) and kept for the next ones; a pip that cannot install them fails
//! the test, saying so.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The pinned packages of the venv.
const PACKAGES: [&str; 3] = [
    "kubernetes-validate==1.37.0",
    "jsonschema>=4.18,<5",
    "pyyaml>=6,<7",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a program; its exit status and what it printed.
fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The venv's interpreter, with the packages installed (once, then kept).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-venv");
        let python = venv.join("bin/python");
        let ready = |python: &Path| {
            python.exists()
                && run(python, &["-c", "import kubernetes_validate, jsonschema, yaml"]).0
        };
        if ready(&python) {
            return python;
        }
        let _ = std::fs::remove_dir_all(&venv);
        let (made, said) = run(
            Path::new("python3"),
            &["-m", "venv", venv.to_str().unwrap()],
        );
        assert!(
            made,
            "python3 -m venv failed (install python3-venv):\n{said}"
        );
        let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
        args.extend(PACKAGES);
        let (installed, said) = run(&venv.join("bin/pip"), &args);
        assert!(
            installed,
            "pip could not install {PACKAGES:?} into {} (it needs PyPI): the manifests are not checked\n{said}",
            venv.display()
        );
        assert!(ready(&python), "the venv at {} does not import the packages", venv.display());
        python
    })
}

/// Runs check.py on a folder of manifests: whether it passed, what it said.
fn check(dir: &Path) -> (bool, String) {
    let script = root().join("tests/kubernetes/check.py");
    let lookup = format!(
        "lookup.py={}",
        root().join("examples/grading/lookup.py").display()
    );
    run(
        python(),
        &[
            script.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--keda-schemas",
            root()
                .join("tests/kubernetes/keda-schemas.yaml")
                .to_str()
                .unwrap(),
            "--metrics",
            root().join("serve/src/metrics.rs").to_str().unwrap(),
            "--version",
            env!("CARGO_PKG_VERSION"),
            "--same",
            &lookup,
        ],
    )
}

fn manifests() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// A copy of deploy/kubernetes in a fresh folder, for breaking.
fn copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kubernetes-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    fn walk(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                walk(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    walk(&manifests(), dir.path());
    dir
}

/// Replaces `from` (which must be there) with `to` in a file of the copy.
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// Checks a broken copy: it must fail, saying each of `expected`.
fn fails_saying(dir: &Path, expected: &[&str]) {
    let (passed, said) = check(dir);
    assert!(!passed, "a broken manifest passed:\n{said}");
    for line in expected {
        assert!(said.contains(line), "no `{line}` in:\n{said}");
    }
}

#[test]
fn the_manifests_validate() {
    let (passed, said) = check(&manifests());
    assert!(passed, "deploy/kubernetes has problems:\n{said}");
    assert!(said.contains(" passed, 0 failed"), "{said}");
    println!("{said}");
}

#[test]
fn the_pipeline_file_in_the_configmap_is_valid() {
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let script = root().join("tests/kubernetes/check.py");
    let (extracted, said) = run(
        python(),
        &[
            script.to_str().unwrap(),
            manifests().to_str().unwrap(),
            "--keda-schemas",
            "-",
            "--metrics",
            "-",
            "--version",
            "-",
            "--extract",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(extracted, "{said}");
    let file = out.path().join("pipeline.yaml");
    let (valid, said) = run(
        Path::new(env!("CARGO_BIN_EXE_warren")),
        &["validate", file.to_str().unwrap()],
    );
    assert!(
        valid,
        "warren validate refuses the ConfigMap's pipeline file:\n{said}"
    );
}

#[test]
fn a_manifest_kubernetes_refuses_fails() {
    let dir = copy("schema");
    // An unknown field, and a port that is not a number.
    edit(
        dir.path(),
        "worker-grade.yaml",
        "          ports:",
        "          portz:",
    );
    edit(
        dir.path(),
        "serve.yaml",
        "port: 8080, targetPort",
        "port: eighty, targetPort",
    );
    fails_saying(
        dir.path(),
        &[
            "worker-grade.yaml: Deployment/grading-grade: ",
            "portz",
            "serve.yaml: Service/warren-serve: spec.ports.0.port",
        ],
    );
}

#[test]
fn a_keda_object_its_schema_refuses_fails() {
    let dir = copy("keda");
    edit(
        dir.path(),
        "keda.yaml",
        "mode: QueueLength",
        "mode: QueueLenght",
    );
    edit(
        dir.path(),
        "keda.yaml",
        "    - parameter: host",
        "    - paramter: host",
    );
    edit(
        dir.path(),
        "prometheus/scaledobject-grade.yaml",
        "threshold: \"500\"",
        "treshold: \"500\"",
    );
    fails_saying(
        dir.path(),
        &[
            "keda.yaml: ScaledObject/grading-lookup: spec.triggers.0.metadata.mode: 'QueueLenght' is not one of",
            "keda.yaml: TriggerAuthentication/warren-broker: spec.secretTargetRef.0",
            "prometheus/scaledobject-grade.yaml: ScaledObject/grading-grade: spec.triggers.0.metadata: 'threshold' is a required property",
        ],
    );
}

#[test]
fn a_stage_without_its_deployment_or_its_queue_fails() {
    let dir = copy("stages");
    edit(
        dir.path(),
        "keda.yaml",
        "queueName: grading.grade",
        "queueName: grading.grades",
    );
    std::fs::remove_file(dir.path().join("worker-results.yaml")).unwrap();
    fails_saying(
        dir.path(),
        &[
            "keda.yaml: ScaledObject/grading-grade: queueName 'grading.grades', but the stage's queue is 'grading.grade'",
            "-: stage results: no Deployment runs it",
            "kustomization.yaml: resources: worker-results.yaml does not exist",
            "ScaledObject/grading-results: scales Deployment grading-results, which is not here",
        ],
    );
}

#[test]
fn a_worker_that_does_not_run_its_stage_as_the_pipeline_says_fails() {
    let dir = copy("worker");
    edit(
        dir.path(),
        "worker-lookup.yaml",
        "terminationGracePeriodSeconds: 40",
        "terminationGracePeriodSeconds: 30",
    );
    edit(
        dir.path(),
        "worker-grade.yaml",
        "path: /readyz",
        "path: /healthz",
    );
    edit(
        dir.path(),
        "worker-results.yaml",
        "key: AMQP_URL",
        "key: AMQP_URI",
    );
    edit(
        dir.path(),
        "keda.yaml",
        "maxReplicaCount: 1",
        "maxReplicaCount: 3",
    );
    edit(
        dir.path(),
        "prometheus/scaledobject-grade.yaml",
        "max(warren_queue_ready{",
        "max(warren_queue_readyness{",
    );
    edit(
        dir.path(),
        "configmap.yaml",
        "    import sys\n",
        "    import sys  # changed\n",
    );
    fails_saying(
        dir.path(),
        &[
            "worker-lookup.yaml: Deployment/grading-lookup: terminationGracePeriodSeconds 30 is under the stage's timeout + 10 s (40)",
            "worker-grade.yaml: Deployment/grading-grade: readinessProbe is not an httpGet on /readyz",
            "keda.yaml: ScaledObject/grading-results: a file sink stage scaled above 1 replica",
            "query names warren_queue_readyness, which warren does not serve",
            "data.lookup.py differs from",
        ],
    );
}

#[test]
fn a_reference_to_something_that_is_not_there_fails() {
    let dir = copy("references");
    edit(
        dir.path(),
        "worker-results.yaml",
        "key: AMQP_URL",
        "key: AMQP_URI",
    );
    edit(
        dir.path(),
        "worker-results.yaml",
        "claimName: grading-results",
        "claimName: grading-result",
    );
    edit(
        dir.path(),
        "worker-lookup.yaml",
        "name: warren-pipeline",
        "name: warren-pipelines",
    );
    edit(dir.path(), "keda.yaml", "key: AMQP_URL", "key: url");
    // The serve readiness probe's Python, broken.
    edit(dir.path(), "serve.yaml", "timeout=4)", "timeout=4");
    edit(dir.path(), "serve.yaml", "path: /healthz", "path: /health");
    edit(
        dir.path(),
        "serve.yaml",
        "          valueFrom:\n                secretKeyRef: { name: warren-serve, key: read }",
        "          value: a-token-in-the-manifest",
    );
    fails_saying(
        dir.path(),
        &[
            "worker-results.yaml: Deployment/grading-results: Secret warren-broker has no key AMQP_URI here",
            "worker-results.yaml: Deployment/grading-results: PersistentVolumeClaim grading-result is not here",
            "worker-lookup.yaml: Deployment/grading-lookup: ConfigMap warren-pipelines is not here",
            "keda.yaml: TriggerAuthentication/warren-broker: Secret warren-broker has no key url here",
            "serve.yaml: Deployment/warren-serve: the probe's python3 -c does not compile",
            "serve.yaml: Deployment/warren-serve: livenessProbe is not an httpGet on /healthz",
            "serve.yaml: Deployment/warren-serve: WARREN_SERVE__TOKENS__READ does not come from a Secret",
        ],
    );
}

#[test]
fn warren_knows_the_flags_the_pods_pass() {
    let warren = Path::new(env!("CARGO_BIN_EXE_warren"));
    for (command, flags) in [
        ("worker", &["--stage", "--health"][..]),
        ("serve", &["--listen"]),
    ] {
        let (ok, help) = run(warren, &[command, "--help"]);
        assert!(ok, "warren {command} --help: {help}");
        for flag in flags {
            let listed = help.contains(&format!("{flag} <"));
            assert!(
                listed,
                "the manifests pass `warren {command} {flag}`, which `warren {command} --help` does not list:\n{help}"
            );
        }
    }
}
