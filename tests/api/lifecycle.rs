//! The real process around its outbox (API.md §11.4–11.5, §19.2): killed while a sync or an
//! async message is in flight, and stopped with SIGTERM while messages are queued — on
//! SQLite, and again on PostgreSQL in that run of the suite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::binary::{otpmint, serve, Running};
use crate::helpers::*;
use crate::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};

/// A configuration for `otpmint` processes on this suite's kind of database; returns it and
/// the database URL.
fn config(dir: &Path, smtp: &SmtpServer, extra: &str) -> (PathBuf, String) {
    let url = test_settings(dir, smtp).database.url;
    let path = dir.join("otpmint.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nshutdown_grace_seconds = 5\n[database]\nurl = \"{url}\"\n\
             [crypto]\nmaster_key_file = \"{}\"\n[admin]\ntoken = \"{ADMIN}\"\n\
             [hashing]\nmax_concurrent = 2\n\
             [limits]\nresend_cooldown_seconds = 0\nrecipient_max_sends = 0\ntenant_max_sends_per_hour = 0\nrecipient_max_failures = 0\n\
             [smtp]\nallow_private_hosts = true\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\ntimeout_seconds = 5\n{extra}",
            dir.join("master.key").display(),
            smtp.port,
            smtp.ca_path.display()
        ),
    )
    .unwrap();
    (path, url)
}

fn start(dir: &Path, config: &Path) -> Running {
    let mut cmd = otpmint(dir);
    cmd.arg("--config").arg(config).arg("serve");
    serve(cmd).expect("otpmint starts")
}

/// [`start`], with a shutdown grace of 1 s (the grace runs out while a test's send is held)
/// and the environment `env` adds.
fn start_with_a_short_grace(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Running {
    let mut cmd = otpmint(dir);
    cmd.envs(env.iter().copied());
    cmd.env("OTPMINT__SERVER__SHUTDOWN_GRACE_SECONDS", "1")
        .arg("--config")
        .arg(config)
        .arg("serve");
    serve(cmd).expect("otpmint starts")
}

/// SIGTERM to the process, and wait (15 s at most) for it to end; how it ended.
async fn stop_with_sigterm(run: &mut Running) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(run.child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run one statement, or a query whose first column of its first row is an integer.
pub(crate) fn sql(url: &str, q: &'static str) -> i64 {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        return if q.starts_with("SELECT") {
            c.query_row(q, [], |r| r.get(0)).unwrap()
        } else {
            c.execute(q, []).unwrap() as i64
        };
    }
    let url = url.to_string();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        if q.starts_with("SELECT") {
            c.query_one(q, &[]).unwrap().get(0)
        } else {
            c.execute(q, &[]).unwrap() as i64
        }
    })
}

/// The database as a release before migration `version` left it: the records of that
/// migration and every later one gone, and the schema the later ones changed undone, so that
/// the next start migrates them again (an upgrade). Returns how many records went.
pub(crate) fn before_migration(url: &str, version: i64) -> i64 {
    let history = if crate::helpers::on_postgres() {
        "otpmint_schema_history"
    } else {
        "refinery_schema_history"
    };
    // What each later migration changed in the schema, undone (the others change rows only).
    const UNDO: &[(i64, &[&str])] = &[
        (22, &["ALTER TABLE challenges DROP COLUMN attempts_open"]),
        (
            25,
            &[
                "ALTER TABLE idempotency_keys DROP COLUMN staged",
                "ALTER TABLE idempotency_keys DROP COLUMN staged_code",
            ],
        ),
        (
            26,
            &[
                "DROP INDEX sends_at",
                "DROP INDEX sms_sends_at",
                "DROP INDEX test_inbox_received",
                "DROP INDEX webhook_deliveries_at",
                "DROP INDEX webhook_events_settled",
            ],
        ),
    ];
    for (v, statements) in UNDO {
        if *v >= version {
            for s in *statements {
                sql(url, s);
            }
        }
    }
    let forget = format!("DELETE FROM {history} WHERE version >= {version}");
    sql(url, Box::leak(forget.into_boxed_str()))
}

/// Leased messages whose send is recorded as begun (after DATA's go-ahead).
const BEGUN: &str = "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL AND unstarted = FALSE";

/// Wait (15 s at most) until the query's integer is `n`; `what` says what never happened.
pub(crate) async fn wait_sql(url: &str, q: &'static str, n: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while sql(url, q) != n {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_tenant(base: &str, smtp: &SmtpServer, extra: Value) -> String {
    let mut body = json!({"name": "Acme", "smtp": {
        "host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER, "password": SMTP_PASS,
        "from": "Acme <no-reply@acme.example>", "tls": "starttls"}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    v["secret_key"].as_str().unwrap().to_string()
}

/// Mint a code for `to` to be sent in the background (202); its shareable key.
async fn mint_async(base: &str, sk: &str, to: &str) -> String {
    let (s, v) = post(
        base,
        "/v1/otp",
        sk,
        json!({"email": to, "delivery": "async"}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    v["shareable_key"].as_str().unwrap().to_string()
}

/// The code's status once its message is no longer `sending` (10 s at most).
async fn settled(base: &str, sk: &str, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = get(base, &format!("/v1/otp/{key}"), sk).await;
        if v["delivery"]["status"] != "sending" || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(base: &str, path: &str, sk: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(sk)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn post(base: &str, path: &str, sk: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(sk)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_send_killed_in_flight_is_never_sent_again_and_the_older_code_still_verifies() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let first = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(&base, &smtp, json!({})).await;
    let (s, v) = post(&base, "/v1/otp", &sk, json!({"email": "ada@example.com"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let key1 = v["shareable_key"].as_str().unwrap().to_string();
    let code1 = smtp.wait_for("ada@example.com", 1).await.code();
    // Mint #2 to the same address; the process dies while its message is in DATA.
    smtp.set_delay(Duration::from_secs(60));
    let (b, k) = (base.clone(), sk.clone());
    tokio::spawn(async move { post(&b, "/v1/otp", &k, json!({"email": "ada@example.com"})).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.in_data() == 0 {
        assert!(Instant::now() < deadline, "mint #2 never reached DATA");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(first); // SIGKILL
    smtp.set_delay(Duration::ZERO);
    // Its lease would run out after 2 × smtp.timeout_seconds + 30 s: let it run out now.
    sql(&url, "UPDATE outbox SET lease_until = 0");
    let second = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", second.port);
    wait_sql(
        &url,
        "SELECT COUNT(*) FROM challenges WHERE delivery_status = 'unknown'",
        1,
        "the interrupted send was never recorded as unknown",
    )
    .await;
    assert_eq!(sql(&url, "SELECT COUNT(*) FROM outbox"), 0);
    // Code #1 is in the person's inbox and still verifies: #2 superseded nothing.
    let (s, v) = post(
        &base,
        "/v1/otp/verify",
        &sk,
        json!({"shareable_key": key1, "otp": code1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Code #2 stays valid until it expires (the person may have it), and is never sent.
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM challenges WHERE delivery_status = 'unknown' AND status = 'pending' AND delivery_attempts = 1"
        ),
        1,
        "still valid, its one send counted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.count_to("ada@example.com"), 1, "no second message");
}

/// API.md §19.2: an async message its sender had claimed, killed while the relay held it,
/// is recorded `unknown` once its lease runs out — never sent again by another sender (the
/// chaos soak found it sent twice before), and its code stays valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_send_killed_in_flight_is_never_sent_again_and_its_code_stays_valid() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let first = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(&base, &smtp, json!({})).await;
    smtp.set_delay(Duration::from_secs(60));
    let key = mint_async(&base, &sk, "ada@example.com").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.in_data() == 0 {
        assert!(Instant::now() < deadline, "the message never reached DATA");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its send is recorded as begun after DATA's go-ahead, just before the body leaves.
    wait_sql(&url, BEGUN, 1, "the send was never recorded as begun").await;
    drop(first); // SIGKILL, holding the message's lease
    smtp.set_delay(Duration::ZERO);
    sql(&url, "UPDATE outbox SET lease_until = 0");
    let second = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", second.port);
    wait_sql(
        &url,
        "SELECT COUNT(*) FROM challenges WHERE delivery_status = 'unknown' AND status = 'pending'",
        1,
        "the interrupted send was never recorded as unknown",
    )
    .await;
    assert_eq!(sql(&url, "SELECT COUNT(*) FROM outbox"), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(smtp.count_to("ada@example.com") <= 1, "sent again");
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/otp/{key}"))
        .bearer_auth(&sk)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(v["delivery"]["status"], "unknown", "{v}");
    // Its send is counted: the person may have the message.
    assert_eq!(v["delivery"]["attempts"], 1, "{v}");
}

/// A message whose lease ran out while its sender was in DATA (the database was away for a
/// moment) is still `sending` in `GET /v1/otp/{key}` — it showed `queued`, as if nothing
/// had left — and is recorded `sent` once the relay answers, sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_data_whose_lease_ran_out_shows_sending_until_its_outcome_is_recorded() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let run = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", run.port);
    let sk = create_tenant(&base, &smtp, json!({})).await;
    smtp.hold();
    let key = mint_async(&base, &sk, "ada@example.com").await;
    wait_sql(&url, BEGUN, 1, "the send was never recorded as begun").await;
    sql(&url, "UPDATE outbox SET lease_until = 0");
    let (s, v) = get(&base, &format!("/v1/otp/{key}"), &sk).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["delivery"]["status"], "sending", "{v}");
    smtp.release();
    let v = settled(&base, &sk, &key).await;
    assert_eq!(v["delivery"]["status"], "sent", "{v}");
    assert_eq!(smtp.count_to("ada@example.com"), 1, "sent once");
}

/// API.md §19.2, §19.3: an async message its sender had claimed but whose send had not
/// begun (it waited for a place of `delivery.max_sessions`) left nothing when the process
/// was killed: once its lease runs out it goes back to the queue and is sent, once — where
/// the message that was in DATA is recorded `unknown` and never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_message_killed_before_its_send_began_is_sent_after_its_lease_runs_out() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "[delivery]\nmax_sessions = 1\n");
    let first = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", first.port);
    let async_tenant = json!({"delivery": "async"});
    let (ada, bob) = (
        create_tenant(&base, &smtp, async_tenant.clone()).await,
        create_tenant(&base, &smtp, async_tenant).await,
    );
    // Ada's message stays at its final `.`, unanswered, until the relay lets it go.
    smtp.hold();
    let (s, v) = post(&base, "/v1/otp", &ada, json!({"email": "ada@example.com"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.in_data() == 0 {
        assert!(
            Instant::now() < deadline,
            "ada's message never reached DATA"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_sql(&url, BEGUN, 1, "ada's send was never recorded as begun").await;
    // Bob's message is claimed, and waits for the process's only session.
    let (s, v) = post(&base, "/v1/otp", &bob, json!({"email": "bob@example.com"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let leased = "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL";
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql(&url, leased) != 2 {
        assert!(Instant::now() < deadline, "bob's message was never claimed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(first); // SIGKILL, holding both leases
    assert_eq!(smtp.count_to("bob@example.com"), 0);
    // Ada's send had begun; bob's had not.
    assert_eq!(
        sql(&url, "SELECT COUNT(*) FROM outbox WHERE unstarted = TRUE"),
        1
    );
    smtp.release(); // ada's copy from the killed process is taken now
    sql(&url, "UPDATE outbox SET lease_until = 0");
    let second = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", second.port);
    smtp.wait_for("bob@example.com", 1).await;
    wait_sql(
        &url,
        "SELECT COUNT(*) FROM challenges WHERE delivery_status = 'unknown' AND status = 'pending'",
        1,
        "ada's interrupted send was never recorded as unknown",
    )
    .await;
    // The relay has it; its outcome is recorded a moment later.
    let v = settled(&base, &bob, &key).await;
    assert_eq!(v["delivery"]["status"], "sent", "{v}");
    assert_eq!(v["delivery"]["attempts"], 1, "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.count_to("bob@example.com"), 1, "sent once");
    assert!(smtp.count_to("ada@example.com") <= 1, "ada's sent again");
}

/// API.md §10, §19.2: an async message whose relay was still at `RCPT` when the process
/// was killed had sent nothing of itself (its send is recorded as begun only after DATA's
/// go-ahead): once its lease runs out it goes back to the queue and is sent, once — not
/// recorded `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_message_killed_while_its_relay_checks_the_recipient_is_sent_after_its_lease_runs_out(
) {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let first = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(&base, &smtp, json!({"delivery": "async"})).await;
    smtp.set_mode(crate::smtp::Mode::StallAtRcpt);
    let (s, v) = post(&base, "/v1/otp", &sk, json!({"email": "ada@example.com"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    wait_sql(
        &url,
        "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL",
        1,
        "the message was never claimed",
    )
    .await;
    // In its session, at RCPT, which the relay never answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.stalled_at_rcpt() == 0 {
        assert!(Instant::now() < deadline, "the message never reached RCPT");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(first); // SIGKILL, holding the lease
    assert_eq!(
        sql(&url, "SELECT COUNT(*) FROM outbox WHERE unstarted = TRUE"),
        1,
        "its send had not begun"
    );
    smtp.set_mode(crate::smtp::Mode::Normal);
    sql(&url, "UPDATE outbox SET lease_until = 0");
    let second = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", second.port);
    smtp.wait_for("ada@example.com", 1).await;
    let v = settled(&base, &sk, &key).await;
    assert_eq!(v["delivery"]["status"], "sent", "{v}");
    let code = smtp
        .messages()
        .iter()
        .find(|m| m.to == ["ada@example.com"])
        .unwrap()
        .code();
    let (s, _) = post(
        &base,
        "/v1/otp/verify",
        &sk,
        json!({"shareable_key": key, "otp": code}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.count_to("ada@example.com"), 1, "sent once");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_queued_messages_and_a_restart_sends_them_at_once() {
    let smtp = SmtpServer::start().await;
    smtp.set_delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let mut first = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(
        &base,
        &smtp,
        json!({"delivery": "async", "smtp": {
            "host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER, "password": SMTP_PASS,
            "from": "Acme <no-reply@acme.example>", "tls": "starttls", "max_connections": 2}}),
    )
    .await;
    for i in 0..30 {
        let (s, _) = post(
            &base,
            "/v1/otp",
            &sk,
            json!({"email": format!("q{i}@example.com")}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.messages().is_empty() {
        assert!(Instant::now() < deadline, "nothing was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = stop_with_sigterm(&mut first).await;
    assert!(status.success(), "{status}");
    // Sends in flight finished and were recorded; nothing else is held.
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL"
        ),
        0
    );
    let left = sql(&url, "SELECT COUNT(*) FROM outbox");
    assert!(
        left > 0,
        "everything was sent before the stop: nothing to show"
    );
    let started = Instant::now();
    let _second = start(dir.path(), &conf);
    for i in 0..30 {
        smtp.wait_for(&format!("q{i}@example.com"), 1).await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "took {took:?} for {left} messages"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..30 {
        assert_eq!(smtp.count_to(&format!("q{i}@example.com")), 1, "sent once");
    }
}

/// A queued message whose relay failed and that was waiting for its next transport when
/// SIGTERM came gives its lease back like every other (API.md §19.4): nothing this process
/// held stays leased after it stopped.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stopped_while_waiting_for_its_next_transport_gives_its_lease_back() {
    use otpmint::testkit::http::HttpReceiver;
    let smtp = SmtpServer::start().await;
    smtp.set_mode(crate::smtp::Mode::Down);
    let rx = HttpReceiver::start(true).await;
    rx.set_delay(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[webhooks]\nallow_private_hosts = true\nextra_root_certificates = [\"{}\"]\n",
        rx.ca_path.display()
    );
    let (conf, url) = config(dir.path(), &smtp, &extra);
    let mut first = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(
        &base,
        &smtp,
        json!({"delivery": "async", "smtp": {
            "host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER, "password": SMTP_PASS,
            "from": "Acme <no-reply@acme.example>", "tls": "starttls", "max_connections": 1}}),
    )
    .await;
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/tenant/transport/http"))
        .bearer_auth(&sk)
        .json(&json!({"url": rx.url("/send"), "use": "fallback"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for to in ["a@example.com", "b@example.com"] {
        let (s, _) = post(&base, "/v1/otp", &sk, json!({"email": to})).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    // One message is at the endpoint (its one session); the other failed at the relay and
    // waits for that session.
    rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_with_sigterm(&mut first).await;
    assert_eq!(rx.requests().len(), 1, "the waiting message was not sent");
    assert_eq!(
        sql(&url, "SELECT COUNT(*) FROM outbox"),
        1,
        "it is still queued"
    );
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL"
        ),
        0,
        "and no longer leased"
    );
}

/// A sync mint still waiting for a place in `delivery.max_sessions` when SIGTERM's grace runs
/// out was never sent: the shutdown records it `not_sent` and keeps no lease on it (API.md
/// §19.4), where its lease ran out into `unknown` ("may have arrived"). The message this
/// process was still sending when the grace ran out keeps no lease either: it may have
/// arrived, so it is recorded `unknown` at once, and nothing sends it again by itself.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_mint_stopped_before_its_session_is_recorded_not_sent() {
    use otpmint::testkit::http::HttpReceiver;
    let smtp = SmtpServer::start().await;
    let rx = HttpReceiver::start(true).await;
    // Far longer than the grace and the test's own steps, even on a loaded machine.
    rx.set_delay(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[webhooks]\nallow_private_hosts = true\nextra_root_certificates = [\"{}\"]\n\
         [delivery]\nmax_sessions = 1\nhttp_timeout_seconds = 60\n",
        rx.ca_path.display()
    );
    let (conf, url) = config(dir.path(), &smtp, &extra);
    let mut first = start_with_a_short_grace(dir.path(), &conf, &[]);
    let base = format!("http://127.0.0.1:{}", first.port);
    // One tenant's queued message holds the process's one session at a slow endpoint.
    let slow = create_tenant(&base, &smtp, json!({"delivery": "async"})).await;
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/tenant/transport/http"))
        .bearer_auth(&slow)
        .json(&json!({"url": rx.url("/send"), "use": "primary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, _) = post(
        &base,
        "/v1/otp",
        &slow,
        json!({"email": "slow@example.com"}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    rx.wait_for(1).await;
    // Another tenant's sync mint waits for that session; SIGTERM comes meanwhile. Its code
    // lives 1 s: it has expired when the grace runs out, and is recorded not sent all the
    // same (it never left).
    let sk = create_tenant(&base, &smtp, json!({"policy": {"ttl_seconds": 1}})).await;
    let waiting = {
        let (url, sk) = (format!("{base}/v1/otp"), sk.clone());
        // Its client sees the connection close with the server: no answer to read.
        tokio::spawn(async move {
            let r = reqwest::Client::new().post(url).bearer_auth(sk);
            r.header("Idempotency-Key", "never-sent")
                .json(&json!({"email": "ada@example.com"}))
                .send()
                .await
                .ok()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_with_sigterm(&mut first).await;
    let _ = waiting.await;
    assert_eq!(smtp.count_to("ada@example.com"), 0, "nothing was sent");
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM challenges WHERE delivery_status = 'failed' AND delivery_reason = 'not_sent'"
        ),
        1,
        "the mint that never had a session is recorded not sent"
    );
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL"
        ),
        0,
        "no message keeps its lease, not even the one being sent"
    );
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM challenges WHERE email_canonical = 'slow@example.com' AND delivery_status = 'unknown' AND delivery_reason = 'interrupted' AND delivery_attempts = 1"
        ),
        1,
        "the message being sent when the grace ran out is recorded unknown, its send counted"
    );
    assert_eq!(
        sql(&url, "SELECT COUNT(*) FROM outbox"),
        0,
        "and not queued again"
    );
    // Its Idempotency-Key is not held after the stop (API.md §19.4): a repeat is free to
    // mint.
    assert_eq!(
        sql(&url, "SELECT COUNT(*) FROM idempotency_keys"),
        0,
        "the key of a mint that sent nothing is not held after the stop"
    );
}

/// A sync mint under an `Idempotency-Key` whose send SIGTERM's grace cut (API.md §9,
/// §19.2, §19.4): the process keeps no claim on the key; a repeat after the restart gets the
/// stored code's answer at once — 201, `unknown`, replayed — instead of 409 until the claim
/// runs out and then a second code sent to the person.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_mint_cut_by_sigterm_keeps_its_idempotent_answer_and_is_not_sent_again() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let mut first = start_with_a_short_grace(dir.path(), &conf, &[]);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(&base, &smtp, json!({})).await;
    let mint = |base: String, sk: String| async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/otp"))
            .bearer_auth(sk)
            .header("Idempotency-Key", "signup-8812-try")
            .json(&json!({"email": "ada@example.com"}))
            .send()
            .await
    };
    // The relay holds the message in DATA past the grace; the client sees the connection
    // close with the server.
    smtp.set_delay(Duration::from_secs(60));
    let cut = tokio::spawn(mint(base.clone(), sk.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.in_data() == 0 {
        assert!(Instant::now() < deadline, "the mint never reached DATA");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stop_with_sigterm(&mut first).await.success());
    let _ = cut.await;
    smtp.set_delay(Duration::ZERO);
    let second = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", second.port);
    let r = mint(base.clone(), sk.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "unknown", "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    // The answer names the code the cut request stored, recorded as it was (one send).
    let (s, status) = get(&base, &format!("/v1/otp/{key}"), &sk).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["status"], "pending", "{status}");
    assert_eq!(status["delivery"]["status"], "unknown", "{status}");
    assert_eq!(status["delivery"]["attempts"], 1, "{status}");
    assert_eq!(sql(&url, "SELECT COUNT(*) FROM challenges"), 1, "one code");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.count_to("ada@example.com"), 0, "nothing sent again");
}

/// A webhook event still being posted when SIGTERM's grace runs out keeps no lease (API.md
/// §19.4): it stays pending, and a restart (or another instance) posts it again at once —
/// delivery is at least once (§10).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_event_being_posted_when_the_grace_runs_out_gives_its_lease_back() {
    use otpmint::testkit::http::HttpReceiver;
    let smtp = SmtpServer::start().await;
    let hooks = HttpReceiver::start(true).await;
    hooks.set_delay(Duration::from_secs(8));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[webhooks]\nallow_private_hosts = true\nextra_root_certificates = [\"{}\"]\n",
        hooks.ca_path.display()
    );
    let (conf, url) = config(dir.path(), &smtp, &extra);
    let mut first = start_with_a_short_grace(dir.path(), &conf, &[]);
    let base = format!("http://127.0.0.1:{}", first.port);
    let sk = create_tenant(&base, &smtp, json!({})).await;
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/tenant/webhook"))
        .bearer_auth(&sk)
        .json(&json!({"url": hooks.url("/h"), "events": ["otp.sent"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, _) = post(&base, "/v1/otp", &sk, json!({"email": "ada@example.com"})).await;
    assert_eq!(s, StatusCode::CREATED);
    // The event is at the endpoint, which answers only after the grace.
    hooks.wait_for(1).await;
    stop_with_sigterm(&mut first).await;
    let pending = "SELECT COUNT(*) FROM webhook_events WHERE status = 'pending'";
    assert_eq!(sql(&url, pending), 1, "the event is still to deliver");
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM webhook_events WHERE leased_by IS NOT NULL"
        ),
        0,
        "and no longer leased"
    );
    // The attempt under way is counted and listed as interrupted (the endpoint may have
    // the event).
    let interrupted = "SELECT COUNT(*) FROM webhook_deliveries WHERE attempt = 1 \
                       AND error = 'interrupted' AND status_code IS NULL";
    assert_eq!(
        sql(&url, interrupted),
        1,
        "the interrupted attempt is listed"
    );
    assert_eq!(
        sql(
            &url,
            "SELECT COUNT(*) FROM webhook_events WHERE attempts = 1"
        ),
        1
    );
    let due_at_once = "SELECT COUNT(*) FROM webhook_events e JOIN webhook_deliveries d \
                       ON d.event_id = e.id WHERE d.error = 'interrupted' AND e.due_at <= d.at";
    assert_eq!(sql(&url, due_at_once), 1, "the event is due again at once");
    // A restart posts it again at once, not a lease later.
    hooks.set_delay(Duration::ZERO);
    let second = start(dir.path(), &conf);
    hooks.wait_for(2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql(&url, pending) != 0 {
        assert!(Instant::now() < deadline, "the event was delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second_base = format!("http://127.0.0.1:{}", second.port);
    let (status, body) = get(&second_base, "/v1/tenant/webhook/deliveries", &sk).await;
    assert_eq!(status, StatusCode::OK);
    let attempts: Vec<(u64, Value, Value)> = body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["status_code"].clone(),
                d["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![
            (2, json!(200), Value::Null),
            (1, Value::Null, json!("interrupted"))
        ],
        "{body}"
    );
}

/// SIGTERM while the database takes no writes: what the stop has to record (leases given
/// back, cut idempotency keys, the last audit events) is bounded together to the grace and
/// 10 s — not each step its own database timeout, one after another (found by the
/// database-outage audit: 2 × the grace, past the packaged unit's TimeoutStopSec).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_database_takes_no_writes_stops_within_the_grace_and_ten_seconds() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let env = [("OTPMINT__DATABASE__TIMEOUT_SECONDS", "10")];
    let mut run = start_with_a_short_grace(dir.path(), &conf, &env);
    let base = format!("http://127.0.0.1:{}", run.port);
    let sk = create_tenant(&base, &smtp, json!({"delivery": "async"})).await;
    let (s, _) = post(&base, "/v1/otp", &sk, json!({"email": "ada@example.com"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    smtp.wait_for("ada@example.com", 1).await;
    // Another session holds the tables the stop writes to until it is told to let go.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let locker = {
        let url = url.clone();
        std::thread::spawn(move || {
            if let Some(path) = url.strip_prefix("sqlite://") {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch("BEGIN EXCLUSIVE").unwrap();
                held.send(()).unwrap();
                let _ = released.recv();
            } else {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut tx = c.transaction().unwrap();
                tx.batch_execute(
                    "LOCK TABLE outbox, webhook_events, audit IN ACCESS EXCLUSIVE MODE",
                )
                .unwrap();
                held.send(()).unwrap();
                let _ = released.recv();
                drop(tx);
            }
        })
    };
    holding.recv().unwrap();
    let began = Instant::now();
    let status = stop_with_sigterm(&mut run).await;
    let took = began.elapsed();
    release.send(()).unwrap();
    locker.join().unwrap();
    assert!(status.success(), "{status:?}");
    // The grace (1 s) and 10 s, with room for a loaded machine; each step waiting its own
    // 10 s timeout took over 40 s.
    assert!(took < Duration::from_secs(16), "{took:?}");
}

/// A stopping server ends its relays' idle sessions with a QUIT — one a sync mint opened on
/// an HTTP worker as well as the sender's — and, on SQLite, leaves its `-wal` empty (found
/// by the re-audit: every pooled session dropped without QUIT at SIGTERM, and a stopped
/// server's `-wal` holding page images of purged rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_idle_relay_sessions_with_quit_and_empties_the_wal() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (conf, url) = config(dir.path(), &smtp, "");
    let mut run = start(dir.path(), &conf);
    let base = format!("http://127.0.0.1:{}", run.port);
    let sk = create_tenant(&base, &smtp, json!({})).await;
    let (s, v) = post(&base, "/v1/otp", &sk, json!({"email": "sync@example.com"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    mint_async(&base, &sk, "async@example.com").await;
    smtp.wait_for("async@example.com", 1).await;
    assert!(
        smtp.open_sessions() > 0,
        "no session kept for reuse: nothing to show"
    );
    let status = stop_with_sigterm(&mut run).await;
    assert!(status.success(), "{status}");
    let until = Instant::now() + Duration::from_secs(5);
    while smtp.open_sessions() > 0 {
        assert!(Instant::now() < until, "a session outlived the process");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        smtp.quits(),
        smtp.connections(),
        "sessions that ended without a QUIT"
    );
    if let Some(path) = url.strip_prefix("sqlite://") {
        let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the -wal still holds pages");
    }
}
