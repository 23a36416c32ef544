//! Several instances on one PostgreSQL database (API.md §7): every invariant holds across
//! them, tenant changes are in force everywhere at once, instances start together safely,
//! and migrate-store copies an installation there and back. (Two server processes:
//! scale_processes.rs; a database that goes away: outages.rs; its TLS: database_tls.rs.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::SmtpServer;

/// Another server on A's database, master key and clock (its own pool and caches).
pub(crate) async fn instance_like(a: &TestApp) -> TestApp {
    start(
        a.settings.clone(),
        SmtpServer::start().await,
        tempfile::tempdir().unwrap(),
        a.clock.clone(),
    )
    .await
}

pub(crate) async fn verify_on(
    app: &TestApp,
    sk: &str,
    key: &str,
    code: &str,
) -> (StatusCode, Value) {
    app.verify(sk, key, code).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_minted_on_one_instance_verifies_on_another() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let (key, code) = a.mint(&sk, "ada@example.com").await;
    let v: Value = b
        .get(&format!("/v1/otp/{key}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["delivery"]["status"], "sent");
    assert_eq!(verify_on(&b, &sk, &key, &code).await.0, StatusCode::OK);
    let (s, v) = verify_on(&a, &sk, &key, &code).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("otp_used"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_correct_verifies_over_two_instances_succeed_once() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let (key, code) = a.mint(&sk, "ada@example.com").await;
    let futs = (0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        verify_on(app, &sk, &key, &code)
    });
    let results = futures_util::future::join_all(futs).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
    // No wrong guess was made: every other copy is told the code was used, also those that
    // found every attempt taken by the other instance's verifies still comparing.
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != StatusCode::OK)
            .all(|(s, v)| *s == StatusCode::GONE && v["code"] == "otp_used"),
        "{results:?}"
    );
    // One attempt: the copy on the instance that did not take it finds none left while
    // the other still compares, and waits for that outcome.
    let (_, sk) = a.tenant_with(json!({"max_attempts": 1})).await;
    for round in 0..5 {
        let (key, code) = a.mint(&sk, &format!("r{round}@example.com")).await;
        let (x, y) = tokio::join!(
            verify_on(&a, &sk, &key, &code),
            verify_on(&b, &sk, &key, &code)
        );
        let mut codes = [x.1["code"].clone(), y.1["code"].clone()];
        codes.sort_by_key(|c| c.is_null());
        assert_eq!(
            (x.0.min(y.0), x.0.max(y.0), &codes[0]),
            (StatusCode::OK, StatusCode::GONE, &json!("otp_used")),
            "{x:?} {y:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_wrong_guesses_over_two_instances_evaluate_max_attempts() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant_with(json!({"max_attempts": 5})).await;
    let (key, code) = a.mint(&sk, "ada@example.com").await;
    let bad = wrong(&code);
    let futs = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        verify_on(app, &sk, &key, &bad)
    });
    let results = futures_util::future::join_all(futs).await;
    let evaluated = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!(evaluated, 5, "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s != StatusCode::UNPROCESSABLE_ENTITY)
        .all(|(s, v)| *s == StatusCode::GONE && v["code"] == "attempts_exhausted"));
    assert_eq!(verify_on(&b, &sk, &key, &code).await.0, StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_mints_over_two_instances_with_a_quota_of_three_send_three() {
    let a = spawn_app_with(|s| s.limits.recipient_max_sends = 3).await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let futs = (0..30).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
    });
    let results = futures_util::future::join_all(futs).await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.status()).collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, limited), (3, 27), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.smtp.count_to("ada@example.com"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mints_over_two_instances_leave_one_pending_code() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let futs = (0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
    });
    let mut keys = Vec::new();
    for r in futures_util::future::join_all(futs).await {
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        keys.push(v["shareable_key"].as_str().unwrap().to_string());
    }
    let mut pending = 0;
    for k in &keys {
        let v: Value = b
            .get(&format!("/v1/otp/{k}"), &sk)
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "pending" {
            pending += 1;
        } else {
            assert_eq!(v["status"], "superseded", "{v}");
        }
    }
    assert_eq!(pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_changes_on_one_instance_are_in_force_on_the_other_within_a_second() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (id, sk) = a.tenant().await;
    let mint = |app: &TestApp, sk: &str| {
        let (c, url, sk) = (
            app.client.clone(),
            format!("{}/v1/otp", app.addr),
            sk.to_string(),
        );
        async move {
            c.post(url)
                .bearer_auth(sk)
                .json(&json!({"email": "ada@example.com"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(mint(&b, &sk).await, StatusCode::CREATED);

    // disable on A: B refuses within a second; enable again
    let r = a
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mint(&b, &sk).await, StatusCode::UNAUTHORIZED);
    a.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"enabled": true}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mint(&b, &sk).await, StatusCode::CREATED);

    // rotate the secret on A: B takes the new one and refuses the old one
    let r = a
        .post(&format!("/v1/tenants/{id}/rotate-secret"), ADMIN, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let new_sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mint(&b, &sk).await, StatusCode::UNAUTHORIZED);
    assert_eq!(mint(&b, &new_sk).await, StatusCode::CREATED);

    // move SMTP to another server on A: B's next send goes there
    let other = SmtpServer::start().await;
    let b = {
        // B must be allowed to reach the new server's port, like A
        let mut s = b.settings.clone();
        s.smtp.allowed_ports.push(other.port);
        s.smtp.extra_root_certificates.push(other.ca_path.clone());
        b.handle.stop(true).await;
        start(
            s,
            SmtpServer::start().await,
            tempfile::tempdir().unwrap(),
            a.clock.clone(),
        )
        .await
    };
    let a = {
        let mut s = a.settings.clone();
        s.smtp.allowed_ports.push(other.port);
        s.smtp.extra_root_certificates.push(other.ca_path.clone());
        let TestApp {
            smtp,
            dir,
            clock,
            handle,
            ..
        } = a;
        handle.stop(true).await;
        start(s, smtp, dir, clock).await
    };
    let mut smtp = a.smtp_json();
    smtp["port"] = json!(other.port);
    let r = a
        .patch(&format!("/v1/tenants/{id}"), ADMIN, json!({"smtp": smtp}))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = a.smtp.count_to("ada@example.com");
    assert_eq!(mint(&b, &new_sk).await, StatusCode::CREATED);
    other.wait_for("ada@example.com", 1).await;
    assert_eq!(a.smtp.count_to("ada@example.com"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_key_rotation_by_the_cli_reaches_every_running_instance() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let before = b.services.core.keyring.get().active_data_version();
    let (ok, out, err) = a.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    assert!(out.contains("active"), "{out}");
    // both instances pick the new key up without a restart, and keep working
    let mut picked = false;
    for _ in 0..40 {
        if a.services.core.keyring.get().active_data_version() > before
            && b.services.core.keyring.get().active_data_version() > before
        {
            picked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        picked,
        "a running instance still seals under the old data key"
    );
    // (the mail goes to the tenant's relay, which is A's test server)
    let r = b
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let code = a.smtp.wait_for("ada@example.com", 1).await.code();
    assert_eq!(verify_on(&a, &sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_starting_at_once_on_an_empty_database_share_one_keyring() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &smtp);
    // one master key for all three, given in the configuration
    let config = shared_config(dir.path(), &settings.database.url, &smtp, "");
    let start_one = || {
        let config = config.clone();
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut cmd = crate::binary::otpmint(&dir);
            cmd.arg("--config").arg(&config).arg("serve");
            crate::binary::serve(cmd)
        })
    };
    let starting: Vec<_> = (0..3).map(|_| start_one()).collect();
    let running: Vec<_> = starting
        .into_iter()
        .map(|t| t.join().unwrap().expect("each instance starts"))
        .collect();
    let url = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", running[i].port);
    let client = reqwest::Client::new();
    let r = client
        .post(url(0, "/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(
            &json!({"name": "x", "smtp": {"host": "127.0.0.1", "port": smtp.port,
            "username": crate::smtp::SMTP_USER, "password": crate::smtp::SMTP_PASS,
            "from": "a@b.example", "tls": "starttls"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    // minted on the second (its data key opens the SMTP password the first sealed), verified
    // on the third (the same pepper): one keyring for all
    let r = client
        .post(url(1, "/v1/otp"))
        .bearer_auth(&sk)
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let code = smtp.wait_for("ada@example.com", 1).await.code();
    let r = client
        .post(url(2, "/v1/otp/verify"))
        .bearer_auth(&sk)
        .json(&json!({"shareable_key": key, "otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(running);
    let db = settings.database.url.clone();
    let (peppers, data_keys, migrations) = pg_blocking(move || {
        let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
        let mut n = |q: &str| -> i64 { c.query_one(q, &[]).unwrap().get(0) };
        (
            n("SELECT COUNT(*) FROM keyring WHERE kind = 'pepper'"),
            n("SELECT COUNT(*) FROM keyring WHERE kind = 'data'"),
            n("SELECT COUNT(*) FROM otpmint_schema_history"),
        )
    });
    assert_eq!((peppers, data_keys), (1, 1), "exactly one keyring");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(migrations, files as i64, "every migration applied once");
}

/// An installation of many parts (audit events past a part's 1,000 rows, test inbox
/// messages past its 4 MB) reaches PostgreSQL whole, and comes back to SQLite whole: row
/// for row as it was (a copy is handed over part by part, never read into memory whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_copies_an_installation_of_many_parts_to_postgres_and_back_whole() {
    let app = spawn_app_with(|s| {
        s.database.url = format!(
            "sqlite://{}",
            s.crypto.master_key_file.replace("master.key", "otpmint.db")
        );
    })
    .await;
    let (id, _sk) = app.tenant_with(json!({})).await;
    let sqlite_url = app.settings.database.url.clone();
    let file = sqlite_url.trim_start_matches("sqlite://").to_string();
    let config = app.cli_config();
    let TestApp { dir, handle, .. } = app;
    handle.stop(true).await;
    // Rows of now: the stopped app's own purge (its background loop) may still run, and it
    // would take old ones away before the copy.
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
         INSERT INTO audit (tenant_id, at, event, recipient, outcome, client_ip, request_id) \
         SELECT ?1, unixepoch() * 1000 + i, 'otp.mint', 'r' || i, 'ok', '127.0.0.1', \
         hex(randomblob(8)) FROM n",
        [&id],
    )
    .unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9) \
         INSERT INTO test_inbox (tenant_id, key_digest, recipient, message, received_at) \
         SELECT ?1, randomblob(32), 'r' || i, randomblob(1048576), unixepoch() * 1000 + i \
         FROM n",
        [&id],
    )
    .unwrap();
    drop(conn);
    let pg = fresh_pg_database(&postgres_base_url().unwrap());
    let (ok, out, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &sqlite_url, "--to", &pg],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("audit 2500,") && out.contains("test_inbox 9,"),
        "{out}"
    );
    let back = dir.path().join("back.db");
    let back_url = format!("sqlite://{}", back.display());
    let (ok, out, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &pg, "--to", &back_url],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("audit 2500,") && out.contains("test_inbox 9,"),
        "{out}"
    );
    // What came back is what went: nothing in one that is not in the other.
    let conn = rusqlite::Connection::open(&back).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS src", [&file]).unwrap();
    for table in [
        "audit",
        "test_inbox",
        "tenants",
        "tenant_secrets",
        "keyring",
    ] {
        for (a, b) in [("main", "src"), ("src", "main")] {
            let differ: i64 = conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM (SELECT * FROM {a}.{table} EXCEPT SELECT * FROM {b}.{table})"
                    ),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(differ, 0, "{table}: rows of {a} not in {b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_copies_a_sqlite_installation_to_postgres_and_back() {
    let target = fresh_pg_database(&postgres_base_url().unwrap());
    let app = spawn_app_with(|s| {
        s.database.url = format!(
            "sqlite://{}",
            s.crypto.master_key_file.replace("master.key", "otpmint.db")
        );
        s.limits.recipient_max_sends = 10;
    })
    .await;
    assert!(app.settings.database.url.starts_with("sqlite://"));
    let (id, sk) = app.tenant_with(json!({"max_attempts": 3})).await;
    let r = app
        .put(
            "/v1/tenant/templates/de",
            &sk,
            json!({"subject": "Kopiert", "text": "Code {{ code }}", "html": "<b>{{ code }}</b>"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .patch("/v1/tenant", &sk, json!({"default_locale": "de"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (pending, code) = app.mint(&sk, "ada@example.com").await;
    let (s, _) = app.verify(&sk, &pending, &wrong(&code)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (used, used_code) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &used, &used_code).await.0, StatusCode::OK);
    let sqlite_url = app.settings.database.url.clone();
    let config = app.cli_config();
    let TestApp {
        smtp,
        dir,
        clock,
        handle,
        settings,
        ..
    } = app;
    handle.stop(true).await;

    // a mistyped source names the path it looked for and creates nothing (API.md §18.8)
    let missing = dir.path().join("no-such.db");
    let missing_url = format!("sqlite://{}", missing.display());
    let (ok, _, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &missing_url, "--to", &target],
    );
    assert!(!ok && err.contains("no-such.db"), "{err}");
    assert!(!missing.exists(), "the missing source was created");
    // a source that is there but holds no installation (an empty file, an empty PostgreSQL
    // database) is refused as such, and is not given otpmint's schema
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let empty_pg = fresh_pg_database(&postgres_base_url().unwrap());
    for from in [format!("sqlite://{}", empty.display()), empty_pg.clone()] {
        let (ok, _, err) = otpmint_with(
            &config,
            &["migrate-store", "--from", &from, "--to", &target],
        );
        assert!(
            !ok && err.contains("--from") && err.contains("no otpmint installation"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "the empty source was written to"
    );
    let url = empty_pg.clone();
    let tables: i64 = pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .get(0)
    });
    assert_eq!(tables, 0, "the empty PostgreSQL source was given tables");
    // a target prepared with `otpmint migrate` holds the keyring it made: the refusal says so
    let prepared = fresh_pg_database(&postgres_base_url().unwrap());
    let migrated = std::process::Command::new(env!("CARGO_BIN_EXE_otpmint"))
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .env("OTPMINT__DATABASE__URL", &prepared)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let (ok, _, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &sqlite_url, "--to", &prepared],
    );
    assert!(
        !ok && err.contains("already holds a keyring") && err.contains("otpmint migrate"),
        "{err}"
    );
    // a master key file that is not there is named (the copy cannot be checked without it)
    let no_key = dir.path().join("no-key.toml");
    let missing_key = dir.path().join("missing.key");
    std::fs::write(
        &no_key,
        std::fs::read_to_string(&config).unwrap().replace(
            &settings.crypto.master_key_file,
            &missing_key.display().to_string(),
        ),
    )
    .unwrap();
    let (ok, _, err) = otpmint_with(
        &no_key,
        &["migrate-store", "--from", &sqlite_url, "--to", &target],
    );
    assert!(
        !ok && err.contains("missing.key") && err.contains("crypto.master_key_file"),
        "{err}"
    );
    assert!(!missing_key.exists(), "a master key was made");
    // a PostgreSQL URL the client cannot read is named by its flag too
    let (ok, _, err) = otpmint_with(
        &config,
        &[
            "migrate-store",
            "--from",
            &sqlite_url,
            "--to",
            "postgres://root@127.0.0.1:99999/x",
        ],
    );
    assert!(
        !ok && err.contains("--to")
            && err.contains("not a valid postgres:// URL")
            && !err.contains("database.url"),
        "{err}"
    );
    // a URL of no known kind is named by its flag, not as database.url
    for args in [
        [
            "migrate-store",
            "--from",
            "mysql://x/y",
            "--to",
            target.as_str(),
        ],
        [
            "migrate-store",
            "--from",
            sqlite_url.as_str(),
            "--to",
            "mysql://x/y",
        ],
    ] {
        let (ok, _, err) = otpmint_with(&config, &args);
        let flag = if args[2].starts_with("mysql") {
            "--from"
        } else {
            "--to"
        };
        assert!(
            !ok && err.contains(flag)
                && err.contains("must start with")
                && !err.contains("database.url"),
            "{err}"
        );
    }

    // a database an instance has started on holds that instance's keyring: refused, and
    // said so (its data keys are not the copy's)
    let keyed = spawn_app().await;
    let keyed_url = keyed.settings.database.url.clone();
    let (ok, out, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &sqlite_url, "--to", &keyed_url],
    );
    assert!(!ok && err.contains("already holds a keyring"), "{out}{err}");
    let (_, sk_there) = keyed.tenant().await;
    let (k, c) = keyed.mint(&sk_there, "ada@example.com").await;
    assert_eq!(keyed.verify(&sk_there, &k, &c).await.0, StatusCode::OK);
    drop(keyed);

    let (ok, out, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &sqlite_url, "--to", &target],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("keyring 2")
            && out.contains("tenants 1")
            && out.contains("challenges 2")
            && out.contains("templates 1"),
        "{out}"
    );
    // a second run refuses the target that now holds tenants, and changes nothing
    let (ok, _, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &sqlite_url, "--to", &target],
    );
    assert!(!ok && err.contains("already holds tenants"), "{err}");

    // the same master key serves the copy: the pending code keeps its used attempt and
    // verifies; the used one stays used; the audit and the quota came along
    let mut on_pg = settings.clone();
    on_pg.database.url = target.clone();
    let app = start(on_pg, smtp, dir, clock).await;
    let v: Value = app
        .get(&format!("/v1/otp/{pending}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["status"].as_str(), v["attempts_remaining"].as_u64()),
        (Some("pending"), Some(2)),
        "{v}"
    );
    assert_eq!(app.verify(&sk, &pending, &code).await.0, StatusCode::OK);
    let (s, v) = app.verify(&sk, &used, &used_code).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("otp_used"))
    );
    let audit: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    assert!(audit["events"].as_array().unwrap().len() >= 4, "{audit}");
    let t: Value = app
        .get(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["policy"]["max_attempts"], 3);
    assert_eq!(t["default_locale"], "de");
    // new rows number after the copied ones, and new codes work, written with the copied
    // template
    let (k, c) = app.mint(&sk, "cy@example.com").await;
    let m = app.smtp.wait_for("cy@example.com", 1).await;
    assert_eq!(m.subject().unwrap(), "Kopiert");
    assert_eq!(m.html().unwrap(), format!("<b>{c}</b>"));
    assert_eq!(app.verify(&sk, &k, &c).await.0, StatusCode::OK);

    // and back to a new SQLite file
    let back = format!("sqlite://{}", app.dir.path().join("back.db").display());
    let (ok, out, err) = otpmint_with(
        &config,
        &["migrate-store", "--from", &target, "--to", &back],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("tenants 1") && out.contains("challenges 3"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_on_one_instance_is_used_by_the_next_mint_on_another() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let put = |subject: &'static str| {
        let (a, sk) = (&a, sk.clone());
        async move {
            let r = a
                .put(
                    "/v1/tenant/templates/en",
                    &sk,
                    json!({"subject": subject, "text": "{{ code }}"}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    let mint_subject = |n: usize| {
        let (a, b, sk) = (&a, &b, sk.clone());
        async move {
            let r = b
                .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
            a.smtp
                .wait_for("ada@example.com", n)
                .await
                .subject()
                .unwrap()
        }
    };
    put("First").await;
    // B compiles and caches the first version...
    assert_eq!(mint_subject(1).await, "First");
    put("Second").await;
    // ...and sees the change at its next mint, as soon as A answered.
    assert_eq!(mint_subject(2).await, "Second");
    assert_eq!(
        a.delete("/v1/tenant/templates/en", &sk).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(mint_subject(3).await.contains("verification code"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_over_two_instances_sends_one_email() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    a.smtp.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let addr = if i % 2 == 0 {
            a.addr.clone()
        } else {
            b.addr.clone()
        };
        let (client, sk) = (a.client.clone(), sk.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{addr}/v1/otp"))
                .bearer_auth(&sk)
                .header("Idempotency-Key", "across-instances")
                .json(&json!({"email": "ada@example.com"}))
                .send()
                .await
                .unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status(), replayed)
        }));
    }
    let mut first = 0;
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, false) => first += 1,
            (StatusCode::CREATED, true) | (StatusCode::CONFLICT, _) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(first, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.smtp.count_to("ada@example.com"), 1);
    // B replays what A (or B) answered.
    let r = b
        .client
        .post(format!("{}/v1/otp", b.addr))
        .bearer_auth(&sk)
        .header("Idempotency-Key", "across-instances")
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_are_delivered_once_with_two_instances_sending() {
    let rx = otpmint::testkit::http::HttpReceiver::start(false).await;
    let a = spawn_app_with(|s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.allow_plaintext = true;
    })
    .await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    let r = a
        .put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": rx.url("/h"), "events": ["otp.sent"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app
            .post(
                "/v1/otp",
                &sk,
                json!({"email": format!("u{i}@example.com"), "delivery": "async"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let reqs = rx.wait_for(20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reqs_after = rx.requests();
    assert_eq!(reqs_after.len(), 20, "an event was delivered twice");
    let ids: std::collections::HashSet<_> = reqs
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 20);
}

/// A configuration file for `otpmint` processes sharing one database and one master key
/// (given in the file), with `extra` TOML appended.
pub(crate) fn shared_config(
    dir: &std::path::Path,
    database_url: &str,
    smtp: &SmtpServer,
    extra: &str,
) -> std::path::PathBuf {
    let master = otpmint::crypto::keyring::MasterKey::generate().to_base64();
    let config = dir.join("shared.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[database]\nurl = \"{database_url}\"\n[crypto]\nmaster_key = \"{master}\"\n\
             [admin]\ntoken = \"{ADMIN}\"\n[log]\nformat = \"json\"\n\
             [smtp]\nallow_private_hosts = true\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n{extra}",
            smtp.port,
            smtp.ca_path.display()
        ),
    )
    .unwrap();
    config
}
