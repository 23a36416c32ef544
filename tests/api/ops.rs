//! Operations: metrics, retention, backup and restore, master-key and data-key rotation,
//! and graceful shutdown of the real binary.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn metrics_count_codes_verifies_deliveries_and_requests_without_personal_data() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.verify(&sk, &key, &wrong(&code)).await;
    app.verify(&sk, &key, &code).await;
    let r = app.get("/metrics", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for needle in [
        "otpmint_codes_minted_total{mode=\"sync\"}".to_string(),
        "otpmint_verify_total{result=\"mismatch\"}".to_string(),
        "otpmint_verify_total{result=\"verified\"}".to_string(),
        "otpmint_delivery_attempts_total{mode=\"sync\",outcome=\"sent\"}".to_string(),
        "otpmint_outbox_depth".to_string(),
        "otpmint_outbox_oldest_due_seconds".to_string(),
        "otpmint_smtp_send_seconds_bucket".to_string(),
        "otpmint_hashing_seconds_count".to_string(),
        "otpmint_hashing_queue_depth".to_string(),
        "otpmint_http_requests_total{method=\"POST\",route=\"/v1/otp/verify\",status=\"200\"}"
            .to_string(),
    ] {
        assert!(
            text.contains(&needle),
            "missing {needle} in {}",
            text.lines()
                .filter(|l| l.contains("http_requests"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for secret in ["ada@example.com", key.as_str(), sk.as_str(), id.as_str()] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}

/// The `otpmint_…` names docs and README mention (not the `__Host-otpmint_…` cookies),
/// with a histogram's `_bucket`/`_sum`/`_count` series named by their family.
fn metric_names_in_docs() -> std::collections::BTreeMap<String, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let mut names = std::collections::BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (at, _) in text.match_indices("otpmint_") {
            if text[..at].ends_with("__Host-") {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `otpmint_<version>_<arch>.deb` and the like are not metric names.
            if !name["otpmint_".len()..].starts_with(|c: char| c.is_ascii_lowercase()) {
                continue;
            }
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            names.insert(name, f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}

#[tokio::test]
async fn the_metric_names_in_the_docs_are_the_ones_the_server_serves() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.verify(&sk, &key, &wrong(&code)).await;
    let text = app.get("/metrics", "").await.text().await.unwrap();
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let registered: std::collections::BTreeSet<String> =
        otpmint::metrics::family_names().into_iter().collect();
    assert!(served.len() >= 10, "{served:?}");
    for name in &served {
        assert!(
            registered.contains(name),
            "{name} is served but not registered"
        );
    }
    let documented = metric_names_in_docs();
    for (name, file) in &documented {
        assert!(
            registered.contains(name),
            "docs/{file} names {name}, which the server does not have (it has {registered:?})"
        );
    }
    for name in &registered {
        assert!(
            documented.contains_key(name),
            "{name} is not in docs/operations.md's list of metrics"
        );
    }
}

/// Every family is served from the start, each once: one with no sample yet (no resend, no
/// webhook) by its `# HELP` and `# TYPE` alone.
#[tokio::test]
async fn every_metric_family_is_served_once_sample_or_not() {
    let app = spawn_app().await;
    let text = app.get("/metrics", "").await.text().await.unwrap();
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let served: std::collections::BTreeSet<String> = typed.iter().map(|s| s.to_string()).collect();
    assert_eq!(typed.len(), served.len(), "a family twice: {text}");
    let registered: std::collections::BTreeSet<String> =
        otpmint::metrics::family_names().into_iter().collect();
    assert_eq!(served, registered);
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let app = spawn_app_with(|s| {
        s.metrics.token = secrecy::SecretString::from("metrics-token-1".to_string())
    })
    .await;
    assert_eq!(
        app.get("/metrics", "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/metrics", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/metrics", "metrics-token-1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn ended_codes_are_kept_for_the_retention_period_then_purged() {
    let app = spawn_app_with(|s| s.otp.retention_seconds = 3600).await;
    let (_, sk) = app.tenant().await;
    let (used, code) = app.mint(&sk, "ada@example.com").await;
    let (pending, _) = app.mint(&sk, "bob@example.com").await;
    app.verify(&sk, &used, &code).await;
    app.clock.advance_secs(1800);
    assert_eq!(app.services.admin.purge_once().await.unwrap(), 0);
    assert_eq!(
        app.get(&format!("/v1/otp/{used}"), &sk).await.status(),
        StatusCode::OK
    );
    app.clock.advance_secs(1801);
    // the verified one ended over an hour ago; the pending one only expired at 600 s
    assert_eq!(app.services.admin.purge_once().await.unwrap(), 1);
    assert_eq!(
        app.get(&format!("/v1/otp/{used}"), &sk).await.status(),
        StatusCode::NOT_FOUND
    );
    let v: Value = app
        .get(&format!("/v1/otp/{pending}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "expired");
    app.clock.advance_secs(600);
    assert_eq!(app.services.admin.purge_once().await.unwrap(), 1);
    assert_eq!(
        app.get(&format!("/v1/otp/{pending}"), &sk).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_and_verifies_a_pending_code() {
    let app = spawn_app().await;
    if on_postgres() {
        // PostgreSQL is backed up with pg_dump: the command says so and writes nothing.
        let copy = app.dir.path().join("backup.db");
        let (ok, _, err) = app.cli(&["backup", copy.to_str().unwrap()]);
        assert!(!ok && err.contains("pg_dump"), "{err}");
        assert!(!copy.exists());
        return;
    }
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let copy = app.dir.path().join("backup.db");
    let (ok, out, err) = app.cli(&["backup", copy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("backup written"));
    let (ok, _, err) = app.cli(&["backup", copy.to_str().unwrap()]);
    assert!(!ok && err.contains("exists"), "never overwrites: {err}");
    // Its error line names the database, as every command's does (API.md §18.8).
    assert!(err.contains("database: sqlite"), "{err}");
    // Owner-only, and never written through a link at PATH (one to nowhere included).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let target = app.dir.path().join("elsewhere.db");
        let link = app.dir.path().join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (ok, _, err) = app.cli(&["backup", link.to_str().unwrap()]);
        assert!(!ok && err.contains("exists"), "{err}");
        assert!(!target.exists());
    }
    // restore: a new server on the copy, same master key
    let mut settings = app.settings.clone();
    settings.database.url = format!("sqlite://{}", copy.display());
    app.handle.stop(true).await;
    let TestApp {
        smtp, dir, clock, ..
    } = app;
    let restored = start(settings, smtp, dir, clock).await;
    assert_eq!(restored.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_rewraps_the_keyring_and_either_key_can_serve_during_it() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let (key_file, old) = master_key_file(&app);
    let new = otpmint::crypto::keyring::MasterKey::generate().to_base64();
    app.handle.stop(true).await;
    let TestApp {
        smtp,
        dir,
        clock,
        settings,
        ..
    } = app;

    // during the rotation: new key active, old one previous
    std::fs::write(&key_file, format!("{new}\n")).unwrap();
    let mut during = settings.clone();
    during.crypto.previous_master_keys = vec![secrecy::SecretString::from(old.clone())];
    let app = start(during, smtp, dir, clock).await;
    let run = |args: &[&str]| {
        let p = app.dir.path().join("rot.toml");
        std::fs::write(
            &p,
            format!(
                "[database]\nurl = \"{}\"\n[crypto]\nmaster_key_file = \"{}\"\nprevious_master_keys = [\"{old}\"]\n",
                app.settings.database.url, app.settings.crypto.master_key_file
            ),
        )
        .unwrap();
        otpmint_with(&p, args)
    };
    let (ok, out, err) = run(&["keys", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains(": 2 re-wrapped"), "{out}");
    let (ok, out, _) = run(&["keys", "rotate"]);
    assert!(
        ok && out.contains("2 already under it") && !out.contains("re-wrapped"),
        "idempotent: {out}"
    );
    app.handle.stop(true).await;
    let TestApp {
        smtp,
        dir,
        clock,
        settings,
        ..
    } = app;

    // after: the new key alone opens it; the old key alone does not
    let mut after = settings.clone();
    after.crypto.previous_master_keys = vec![];
    let app = start(after.clone(), smtp, dir, clock).await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    app.handle.stop(true).await;
    std::fs::write(&key_file, format!("{old}\n")).unwrap();
    let err = otpmint::startup::Application::build_with_clock(
        after,
        Arc::new(otpmint::clock::ManualClock::starting_now()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("does not match"), "{err}");
}

/// The app's master key file, and the key in it.
fn master_key_file(app: &TestApp) -> (std::path::PathBuf, String) {
    let key_file = std::path::PathBuf::from(&app.settings.crypto.master_key_file);
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    (key_file, key)
}

/// The CLI's `keys rotate` then `keys rotate-data-key` on the app's database, with the
/// master key in `key_file` and `old` as the previous one.
fn rotate_with_the_cli(app: &TestApp, key_file: &std::path::Path, old: &str) {
    let conf = app.dir.path().join("rotating.toml");
    std::fs::write(
        &conf,
        format!(
            "[database]\nurl = \"{}\"\n[crypto]\nmaster_key_file = \"{}\"\nprevious_master_keys = [\"{old}\"]\n",
            app.settings.database.url,
            key_file.display()
        ),
    )
    .unwrap();
    for command in ["rotate", "rotate-data-key"] {
        let (ok, _, err) = otpmint_with(&conf, &["keys", command]);
        assert!(ok, "{command}: {err}");
    }
}

/// A master-key rotation done by the CLI is picked up by a running instance without a
/// restart (API.md §7.3): the new key written to the key file the instance reads, the CLI's
/// `keys rotate` then `keys rotate-data-key`, and the instance — which started with the old
/// key and no previous keys — goes on minting, sealing under the new data key, and is ready
/// (found by the PostgreSQL audit: 503 until a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_follows_a_master_key_rotation_through_its_key_file() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let (key_file, old) = master_key_file(&app);
    let new = otpmint::crypto::keyring::MasterKey::generate();
    std::fs::write(&key_file, format!("{}\n", new.to_base64())).unwrap();
    rotate_with_the_cli(&app, &key_file, &old);
    // The instance reloads its keyring within a second or two: under the new key, its new
    // data key active.
    let keys = &app.services.core.keyring;
    for _ in 0..100 {
        if keys.get().active_data_version() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(keys.get().active_data_version(), 2);
    assert_eq!(keys.master().id(), new.id());
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"email": "bob@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ready = reqwest::get(format!("{}/readyz", app.addr)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let bob = app.smtp.wait_for("bob@example.com", 1).await.code();
    let bob_key = v["shareable_key"].as_str().unwrap();
    assert_eq!(app.verify(&sk, bob_key, &bob).await.0, StatusCode::OK);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    // A restart reads the same file: the new key alone opens the keyring.
    let app = app.restart().await;
    app.mint(&sk, "cy@example.com").await;
}

/// The CLI rotates the master key and then the data key before a running instance's key
/// file got the new master key (an operator's slip): that instance cannot open the new data
/// key. It says so — not ready, 503 — and sends nothing under a false cause; its queued
/// message waits (found by a black-box audit: mints answered 502 `http_rejected` /
/// `provider_auth`, `/readyz` 200, and messages left DKIM-unsigned). Once its key file holds
/// the new key, it goes on without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_master_key_no_longer_opens_the_keyring_waits_and_says_so() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let r = app
        .post(
            "/v1/tenant/dkim",
            &sk,
            json!({"domain": "acme.example", "algorithm": "ed25519"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (key_file, old) = master_key_file(&app);
    let new = otpmint::crypto::keyring::MasterKey::generate().to_base64();
    let new_file = app.dir.path().join("new-master.key");
    std::fs::write(&new_file, format!("{new}\n")).unwrap();
    rotate_with_the_cli(&app, &new_file, &old);
    // A sync mint: 503, and nothing reached the relay.
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable")),
        "{v}"
    );
    // Not ready: a load balancer takes it out.
    let ready = reqwest::get(format!("{}/readyz", app.addr)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A queued message waits (it is not failed for this instance's missing key).
    let key = crate::outbox::mint_async(&app, &sk, "bob@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let st = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    assert!(
        ["queued", "sending"].contains(&st["delivery"]["status"].as_str().unwrap())
            && st["delivery"]["attempts"] == 0
            && st["status"] == "pending",
        "{st}"
    );
    assert_eq!(
        app.smtp.count_to("ada@example.com") + app.smtp.count_to("bob@example.com"),
        0
    );

    // Once its key file holds the active key, the instance reads it — no restart (API.md
    // §7.3) — and sends the message, DKIM-signed.
    std::fs::write(&key_file, format!("{new}\n")).unwrap();
    let msg = app.smtp.wait_for("bob@example.com", 1).await;
    assert!(
        msg.header("DKIM-Signature").is_some(),
        "unsigned: {}",
        msg.data
    );
    assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);
    let ready = reqwest::get(format!("{}/readyz", app.addr)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_rotation_reencrypts_passwords_and_the_running_server_keeps_sending() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.tenant().await;
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data key version 2 active (new)") && out.contains("2 re-encrypted"),
        "{out}"
    );
    // the server started with data key 1 only; it must pick up version 2
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (ok, out, _) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok && out.contains("version 3"), "{out}");
    // Three runs at once (found by the configuration audit: one of three failed with the
    // database's own words, its new key's version taken by another run): each ends well;
    // a run that finds its version taken resumes that rotation.
    let conf = app.cli_config();
    let runs: Vec<(bool, String, String)> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| otpmint_with(&conf, &["keys", "rotate-data-key"])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (ok, out, err) in &runs {
        assert!(*ok && out.contains("active"), "{out}{err}");
    }
    let app = app.restart().await;
    app.mint(&sk, "bob@example.com").await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_verifies_and_exits_zero() {
    use std::io::{BufRead, BufReader};
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.handle.stop(true).await;
    // the binary on the same database, with slow hashing so a verify is in flight
    let conf = app.dir.path().join("slow.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nshutdown_grace_seconds = 20\n[database]\nurl = \"{}\"\n[crypto]\nmaster_key_file = \"{}\"\n",
            app.settings.database.url, app.settings.crypto.master_key_file
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_otpmint"))
        .arg("--config")
        .arg(&conf)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains("otpmint listening") {
            let v: Value = serde_json::from_str(&line).unwrap();
            break v["port"].as_u64().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/otp/verify");
    let body = serde_json::json!({"shareable_key": key, "otp": code});
    // hold the request body open so the request is in flight when SIGTERM arrives
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = tokio_stream_from(rx);
    let req = tokio::spawn(
        client
            .post(&url)
            .bearer_auth(&sk)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.send(Ok(serde_json::to_vec(&body).unwrap()))
        .await
        .unwrap();
    drop(tx);
    let r = req
        .await
        .unwrap()
        .expect("the in-flight request gets an answer");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn openapi_json_is_served_and_matches_the_committed_document() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let served: Value = r.json().await.unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["paths"]["/v1/otp/verify"]["post"]["responses"]["422"].is_object());
}

/// Every documented path is a route, and a method it does not document answers 405 with
/// `Allow` naming exactly the documented ones (RFC 9110 §15.5.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_path_answers_an_undocumented_method_with_405_and_allow() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json", "").await.json().await.unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut documented: Vec<String> = ["get", "head", "post", "put", "patch", "delete"]
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let other = ["PATCH", "PUT", "DELETE", "POST"]
            .into_iter()
            .find(|m| !documented.iter().any(|d| d == m))
            .unwrap();
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        // HEAD goes undocumented beside GET (as HTTP implies it), is answered wherever GET
        // is — as GET, without the body — and `Allow` names it.
        if let Some(at) = documented.iter().position(|m| m == "GET") {
            if !documented.iter().any(|m| m == "HEAD") {
                documented.insert(at + 1, "HEAD".into());
            }
            let url = format!("{}{concrete}", app.addr);
            let get = app.client.get(&url).send().await.unwrap().status();
            let head = app.client.head(&url).send().await.unwrap();
            assert_eq!(head.status(), get, "HEAD {path} is answered as GET");
            assert!(
                head.bytes().await.unwrap().is_empty(),
                "HEAD {path} has no body"
            );
        }
        let r = app
            .client
            .request(
                reqwest::Method::from_bytes(other.as_bytes()).unwrap(),
                format!("{}{concrete}", app.addr),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{other} {path}");
        assert_eq!(
            r.headers()["allow"].to_str().unwrap(),
            documented.join(", "),
            "{path}"
        );
        checked += 1;
    }
    assert!(checked >= 40, "{checked}");
    // Health checkers send HEAD: every operations route answers it as GET, without a body.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = app
            .client
            .head(format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "HEAD {path}");
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
    // An API read with its key: HEAD answers as GET would (status, type), without the body.
    let (_, sk) = app.tenant().await;
    let url = format!("{}/v1/tenant", app.addr);
    let get = app.client.get(&url).bearer_auth(&sk).send().await.unwrap();
    let head = app.client.head(&url).bearer_auth(&sk).send().await.unwrap();
    assert_eq!(
        (get.status(), head.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(
        head.headers()["content-type"],
        get.headers()["content-type"],
        "HEAD /v1/tenant"
    );
    assert!(
        head.bytes().await.unwrap().is_empty(),
        "HEAD /v1/tenant has no body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_data_key_rotation_resumes_without_a_new_key() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.tenant().await;
    // as if `keys rotate-data-key` was killed right after adding data key 2
    let row =
        otpmint::crypto::keyring::Keyring::new_data_key(&app.services.core.keyring.master(), 2)
            .unwrap();
    app.services
        .core
        .db(move |s| s.add_data_key(&row, 0))
        .await
        .unwrap();
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data key version 2 active (resumed)") && out.contains("2 re-encrypted"),
        "{out}"
    );
    let (ok, out, _) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok && out.contains("version 3 active (new)"), "{out}");
    app.mint(&sk, "ada@example.com").await;
}

/// A sealed value that cannot be decrypted (here a relay password copied to another
/// tenant's row: its AAD names the other tenant) is reported with what to set again, and
/// does not hold later rotations open: the next run starts a new data key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_password_is_reported_and_does_not_stop_the_next_rotation() {
    let app = spawn_app().await;
    app.tenant().await;
    app.tenant().await;
    crate::lifecycle::sql(
        &app.settings.database.url,
        "UPDATE tenants SET smtp_password = (SELECT t.smtp_password FROM tenants t ORDER BY t.id LIMIT 1)",
    );
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data key version 2 active (new)") && out.contains("1 re-encrypted"),
        "{out}"
    );
    assert!(
        err.contains("its relay's password or OAuth2 secrets cannot be decrypted")
            && err.contains("PATCH smtp"),
        "{err}"
    );
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok && out.contains("version 3 active (new)"), "{out}{err}");
}

/// A newcomer's path (API.md §18.8): the server's address answers a page naming otpmint and
/// where its API is; a 429 names the limit that refused; a test code's delivery is `test`;
/// an OtpMint-style registration names the tenant after the sender's domain.
#[tokio::test]
async fn what_a_newcomer_meets_says_what_it_is() {
    let app = spawn_app_with(|s| s.limits.recipient_max_sends = 1).await;
    let r = reqwest::get(format!("{}/", app.addr)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains("otpmint") && page.contains("/openapi.json"),
        "{page}"
    );

    let (_, sk) = app.tenant().await;
    app.mint(&sk, "ada@example.com").await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["limit"], "recipient", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("limits.recipient_max_sends"),
        "{v}"
    );

    let (_, v) = {
        let r = app
            .post("/v1/tenants", ADMIN, json!({"name": "CI", "test": true}))
            .await;
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let test_sk = v["secret_key"].as_str().unwrap().to_string();
    let r = app
        .post("/v1/otp", &test_sk, json!({"email": "bob@example.com"}))
        .await;
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Value = app
        .get(&format!("/v1/otp/{key}"), &test_sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["delivery"]["status"], "test", "{v}");

    let r = app
        .post(
            "/reg_secretkey",
            ADMIN,
            json!({"secretKey": "legacy-client-secret-key-0002", "smtp_host": "127.0.0.1",
                   "smtp_port": app.smtp.port, "smtp_mail": crate::smtp::SMTP_USER,
                   "smtp_password": crate::smtp::SMTP_PASS}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    let domain = crate::smtp::SMTP_USER
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(crate::smtp::SMTP_USER);
    assert!(
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == domain),
        "{v}"
    );
}
