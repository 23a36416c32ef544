//! The client libraries (API.md §18.6) against this server: `clients/python` (its unittest
//! suite) and `clients/typescript` (compiled with its pinned TypeScript, then `node --test`)
//! each mint, verify, claim, resend, cancel and start a hosted session through a real
//! server, reading codes out of a test tenant's inbox, and check webhook signatures — the
//! spec's example and a real delivery of this server to a receiver on loopback.
//! Python and Node are on the machines the tests run on; where one is missing the test says
//! so loudly and is skipped.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::tools::apt_tools;

const RETURN_URL: &str = "https://app.example.com/done";

/// A server with links and hosted pages, and a test tenant's secret key, as environment
/// variables for a client's tests.
async fn server_for_clients() -> (TestApp, Vec<(&'static str, String)>) {
    let app = spawn_app_with(|s| {
        s.server.public_url = "http://localhost:8080/".into();
        // The clients' tests receive a real webhook on 127.0.0.1 over http.
        s.webhooks.allow_private_hosts = true;
        s.webhooks.allow_plaintext = true;
    })
    .await;
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": "Acme", "test": true}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let sk = v["secret_key"].as_str().unwrap().to_string();
    assert!(sk.starts_with("sk_test_"));
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": ["https://app.example.com"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let env = vec![
        ("OTPMINT_URL", app.addr.clone()),
        ("OTPMINT_SECRET_KEY", sk),
        ("OTPMINT_RETURN_URL", RETURN_URL.to_string()),
        ("OTPMINT_LOOPBACK_WEBHOOKS", "1".to_string()),
    ];
    (app, env)
}

/// Run `cmd` off the async workers (the server answers meanwhile); panics with its output
/// when it fails.
async fn run(mut cmd: Command, what: &str) -> Output {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn clients_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// How many tests `file` defines (lines holding `marker`): at least `least`, the number when
/// this was written, so that a marker that stopped matching cannot pass as none.
fn defined(file: &Path, marker: &str, least: usize) -> usize {
    let n = std::fs::read_to_string(file)
        .unwrap()
        .matches(marker)
        .count();
    assert!(n >= least, "{}: {n} tests", file.display());
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_mints_verifies_and_claims_against_the_server() {
    if !apt_tools(&["python3"], &["python3"], false) {
        eprintln!(
            "\n*** PYTHON CLIENT TEST SKIPPED: python3 is not installed and apt-get could not install it ***\n"
        );
        return;
    }
    let (_app, env) = server_for_clients().await;
    let dir = clients_dir("python");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "unittest", "discover", "-v", "-s", "tests"])
        .current_dir(&dir)
        .envs(env);
    let out = run(cmd, "the Python client's tests").await;
    let report = String::from_utf8_lossy(&out.stderr);
    // Every test ran against the server: as many as the file defines, none skipped.
    let defined = defined(&dir.join("tests/test_otpmint.py"), "    def test_", 20);
    assert!(report.contains(&format!("Ran {defined} tests")), "{report}");
    assert!(!report.contains("skipped"), "{report}");
}

/// `pip install ./clients/python` gives an importable, typed package (`py.typed`), built
/// from a copy so that the source folder gets no build files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_installs_with_pip_as_a_typed_package() {
    if !apt_tools(&["python3"], &["python3"], false)
        || !Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        eprintln!(
            "\n*** PYTHON CLIENT INSTALL TEST SKIPPED: python3 with pip is not installed and apt-get could not install it ***\n"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("python");
    std::fs::create_dir_all(source.join("otpmint")).unwrap();
    let from = clients_dir("python");
    for file in [
        "pyproject.toml",
        "README.md",
        "otpmint/__init__.py",
        "otpmint/py.typed",
    ] {
        std::fs::copy(from.join(file), source.join(file)).unwrap();
    }
    let target = work.path().join("site");
    // pip builds it with setuptools, fetched from the package index into an isolated
    // build environment: a machine that cannot reach the index says so and skips.
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&target)
        .arg(&source)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let offline = [
            "No matching distribution found for setuptools",
            "Could not find a version that satisfies the requirement setuptools",
            "NewConnectionError",
            "Temporary failure in name resolution",
        ];
        if offline.iter().any(|s| said.contains(s)) {
            eprintln!(
                "\n*** PYTHON CLIENT INSTALL TEST SKIPPED: pip could not fetch setuptools from the package index ***\n{said}"
            );
            return;
        }
        panic!("pip install of clients/python failed:\n{said}");
    }
    assert!(
        target.join("otpmint/py.typed").exists(),
        "py.typed was not installed"
    );
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import otpmint, sys; assert otpmint.__file__.startswith(sys.argv[1]), otpmint.__file__; \
         print(otpmint.Client('http://127.0.0.1:9', 'sk'))",
    ])
    .arg(&target)
    .current_dir(work.path())
    .env("PYTHONPATH", &target);
    let out = run(cmd, "importing the installed client").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Client('http://127.0.0.1:9')"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_mints_verifies_and_claims_against_the_server() {
    if !apt_tools(&["node", "npm"], &["nodejs", "npm"], false) {
        eprintln!(
            "\n*** TYPESCRIPT CLIENT TEST SKIPPED: node and npm are not installed and apt-get could not install them ***\n"
        );
        return;
    }
    let dir = clients_dir("typescript");
    // The pinned compiler (package-lock.json), installed once.
    if !dir.join("node_modules/typescript").exists() {
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        run(cmd, "npm ci in clients/typescript").await;
    }
    let mut cmd = Command::new("npx");
    cmd.args(["--no-install", "tsc", "-p", "."])
        .current_dir(&dir);
    run(cmd, "tsc in clients/typescript").await;
    let (_app, env) = server_for_clients().await;
    let mut cmd = Command::new("node");
    cmd.args(["--test", "test/client.test.mjs"])
        .current_dir(&dir)
        .envs(env);
    let out = run(cmd, "the TypeScript client's tests").await;
    let report = String::from_utf8_lossy(&out.stdout);
    // Every test ran against the server: as many as the file defines, none skipped.
    let defined = defined(&dir.join("test/client.test.mjs"), " it(\"", 18);
    assert!(report.contains(&format!("# pass {defined}\n")), "{report}");
    assert!(report.contains("# skipped 0"), "{report}");
}
