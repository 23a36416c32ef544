//! PostgreSQL's own bounds (API.md §6.28, §6.33): a statement waiting on a lock gives up
//! within `database.timeout_seconds`, `/readyz` consumes no transaction id, and the driver's
//! debug lines never reach the log.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};

/// Hold `LOCK TABLE challenges` on a connection of its own until told to let go.
fn hold_lock(url: String) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("LOCK TABLE challenges").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        tx.rollback().unwrap();
    });
    locked_rx.recv().unwrap();
    (release_tx, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_held_locked_answers_503_within_the_timeout_and_readyz_follows() {
    let app = spawn_app_with(|s| s.database.timeout_seconds = 1).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let (release, holder) = hold_lock(app.settings.database.url.clone());
    let status_path = format!("/v1/otp/{key}");
    let started = Instant::now();
    let (verify, mint, status, ready) = tokio::join!(
        app.post(
            "/v1/otp/verify",
            &sk,
            json!({"shareable_key": key, "otp": code})
        ),
        app.post("/v1/otp", &sk, json!({"email": "bob@example.com"})),
        app.get(&status_path, &sk),
        app.get("/readyz", ""),
    );
    let took = started.elapsed();
    for (what, r) in [
        ("verify", verify),
        ("mint", mint),
        ("status", status),
        ("readyz", ready),
    ] {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    }
    // database.timeout_seconds = 1: the pool wait and the statement's own lock wait.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert_eq!(
        app.smtp.count_to("bob@example.com"),
        0,
        "the refused mint sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_consumes_no_transaction_id() {
    let app = spawn_app().await;
    let url = app.settings.database.url.clone();
    let xid = move || {
        let url = url.clone();
        pg_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query_one("SELECT txid_current()", &[])
                .unwrap()
                .get::<_, i64>(0)
        })
    };
    // Transaction ids are the cluster's: other tests running at once take some too (CI runs
    // four at a time), so the best of five rounds counts (probes that took ids would take 50
    // in every round).
    let mut fewest = i64::MAX;
    for _ in 0..5 {
        let before = xid();
        for _ in 0..50 {
            assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);
        }
        fewest = fewest.min(xid() - before);
    }
    // Other work of the server (its sweeps, its audit) and of the other tests may take some;
    // 50 probes took 50.
    assert!(fewest < 25, "{fewest} transaction ids for 50 probes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_debug_level_the_logs_hold_no_recipient_address() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = test_settings(dir.path(), &smtp).database.url;
    let conf = dir.path().join("debug.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n[crypto]\nmaster_key_file = \"{}\"\n\
             [admin]\ntoken = \"{ADMIN}\"\n[log]\nlevel = \"debug\"\n\
             [smtp]\nallow_private_hosts = true\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n",
            dir.path().join("master.key").display(),
            smtp.port,
            smtp.ca_path.display()
        ),
    )
    .unwrap();
    let mut cmd = crate::binary::otpmint(dir.path());
    cmd.arg("--config").arg(&conf).arg("serve");
    let running = crate::binary::serve(cmd).unwrap();
    let base = format!("http://127.0.0.1:{}", running.port);
    let client = reqwest::Client::new();
    let v: Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(
            &json!({"name": "Acme", "smtp": {"host": "127.0.0.1", "port": smtp.port,
            "username": SMTP_USER, "password": SMTP_PASS, "from": "Acme <no-reply@acme.example>"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sk = v["secret_key"].as_str().unwrap().to_string();
    let address = "ada.lovelace@example.com";
    let v: Value = client
        .post(format!("{base}/v1/otp"))
        .bearer_auth(&sk)
        .json(&json!({"email": address}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let code = smtp.wait_for(address, 1).await.code();
    let r = client
        .post(format!("{base}/v1/otp/verify"))
        .bearer_auth(&sk)
        .json(&json!({"shareable_key": key, "otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log: Vec<String> = running.lines.try_iter().collect();
    assert!(log.len() > 5, "the log was read: {log:?}");
    for line in &log {
        for secret in [address, code.as_str(), key.as_str(), sk.as_str(), SMTP_PASS] {
            assert!(!line.contains(secret), "{line}");
        }
    }
}
