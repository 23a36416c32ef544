//! Delivery that holds (API.md §11), in process: a relay that limits its sessions, tenants
//! that flood while another sends one code, an outcome the database cannot take, and webhook
//! endpoints that are gone, slow down, or never answer.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::SmtpServer;
use otpmint::testkit::http::HttpReceiver;

/// A tenant on `relay` (an SMTP server the app trusts) with these `smtp` fields and tenant
/// fields added.
async fn tenant_on(app: &TestApp, relay: &SmtpServer, smtp: Value, extra: Value) -> String {
    let mut s = app.smtp_json();
    s["port"] = json!(relay.port);
    for (k, v) in smtp.as_object().unwrap() {
        s[k] = v.clone();
    }
    let mut body = json!({"name": "Acme", "smtp": s});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.post("/v1/tenants", ADMIN, body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    v["secret_key"].as_str().unwrap().to_string()
}

/// An app that may also send to `relays` (their ports allowed, their CAs trusted).
async fn app_with_relays(relays: &[&SmtpServer]) -> TestApp {
    app_with_relays_and(relays, |_| {}).await
}

/// As [`app_with_relays`], with more settings changed.
async fn app_with_relays_and(
    relays: &[&SmtpServer],
    more: impl FnOnce(&mut otpmint::config::Settings) + Send + 'static,
) -> TestApp {
    let extra: Vec<(u16, std::path::PathBuf)> =
        relays.iter().map(|r| (r.port, r.ca_path.clone())).collect();
    spawn_app_with(move |s| {
        for (port, ca) in extra {
            s.smtp.allowed_ports.push(port);
            s.smtp.extra_root_certificates.push(ca);
        }
        more(s);
    })
    .await
}

async fn mint_async(app: &TestApp, sk: &str, email: &str) -> String {
    let r = app
        .post("/v1/otp", sk, json!({"email": email, "delivery": "async"}))
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    v["shareable_key"].as_str().unwrap().to_string()
}

/// One value of the metrics exposition.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", "").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn a_relay_that_takes_three_sessions_gets_about_three_and_every_message_is_delivered() {
    let app = spawn_app().await;
    app.smtp.set_session_limit(Some(3));
    app.smtp.set_delay(Duration::from_millis(100));
    let (_, sk) = app.tenant().await;
    // 60 async messages. The relay keeps its first messages unanswered until a session has
    // been turned away, so the window (which starts at 4, above the relay's 3) probes past
    // the limit however slowly a loaded machine mints; then it halves and works its way
    // back up to the relay's limit.
    app.smtp.hold();
    let mints = (0..60).map(|i| {
        let (app, sk) = (&app, sk.clone());
        async move { mint_async(app, &sk, &format!("a{i}@example.com")).await }
    });
    let released = async {
        // Released in time for the held sessions (the tests' SMTP timeout is 5 s).
        let deadline = Instant::now() + Duration::from_secs(3);
        while app.smtp.turned_away() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.smtp.release();
    };
    let (keys, ()) = tokio::join!(futures_util::future::join_all(mints), released);
    for i in 0..60 {
        app.smtp.wait_for(&format!("a{i}@example.com"), 1).await;
    }
    // And 20 sync mints at once: none fails because a session was turned away.
    let mints = (0..20).map(|i| {
        let (app, sk) = (&app, sk.clone());
        async move {
            app.post(
                "/v1/otp",
                &sk,
                json!({"email": format!("s{i}@example.com")}),
            )
            .await
            .status()
        }
    });
    for status in futures_util::future::join_all(mints).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..60 {
        assert_eq!(
            app.smtp.count_to(&format!("a{i}@example.com")),
            1,
            "sent once"
        );
    }
    assert!(
        app.smtp.turned_away() > 0,
        "the window probed past the limit"
    );
    assert_eq!(
        app.smtp.max_concurrent_in_data(),
        3,
        "the relay's three sessions were used"
    );
    // The window settled near the relay's limit: between 2 and 4 sessions.
    assert_eq!(
        metric(&app, "otpmint_smtp_relay_windows{le=\"1\"}").await,
        0.0
    );
    assert_eq!(
        metric(&app, "otpmint_smtp_relay_windows{le=\"4\"}").await,
        1.0
    );
    // The relay's answers are recorded (asynchronously, after the relay took each message).
    for key in &keys {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v: Value = app
                .get(&format!("/v1/otp/{key}"), &sk)
                .await
                .json()
                .await
                .unwrap();
            if v["delivery"]["status"] == "sent" {
                break;
            }
            assert!(Instant::now() < deadline, "never recorded as sent: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_send_waits_within_its_deadline_while_the_relays_sessions_are_taken() {
    // The relay serves one session at once, and another tenant (or instance) holds it.
    let relay = SmtpServer::start().await;
    relay.set_session_limit(Some(1));
    relay.set_hang_up_after_message(true);
    // Time enough on a loaded machine for the quick tries, the pauses and the send.
    let app = app_with_relays_and(&[&relay], |s| s.smtp.timeout_seconds = 20).await;
    let holder = tenant_on(&app, &relay, json!({}), json!({})).await;
    let waiter = tenant_on(&app, &relay, json!({}), json!({})).await;
    relay.hold();
    let first = app.post("/v1/otp", &holder, json!({"email": "ada@example.com"}));
    let done = std::sync::atomic::AtomicBool::new(false);
    let second = async {
        while relay.open_sessions() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let asked = Instant::now();
        let r = app
            .post("/v1/otp", &waiter, json!({"email": "bob@example.com"}))
            .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let status = r.status();
        (status, (asked.elapsed(), r.text().await.unwrap()))
    };
    let release = async {
        // Once the waiting send has been turned away more often than its window's quick
        // tries (or has answered), the holder's message goes and its session ends.
        while relay.turned_away() < 5 && !done.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.release();
    };
    let (first, (second, took), ()) = tokio::join!(first, second, release);
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(
        second,
        StatusCode::CREATED,
        "a sync send finds the relay's session taken, waits and sends: {took:?}"
    );
    assert_eq!(relay.count_to("bob@example.com"), 1);
}

#[tokio::test]
async fn one_tenants_backlog_never_delays_another_tenants_message() {
    let slow = SmtpServer::start().await;
    slow.set_delay(Duration::from_millis(1500));
    let app = app_with_relays(&[&slow]).await;
    let flooders = [
        tenant_on(&app, &slow, json!({"max_connections": 1}), json!({})).await,
        tenant_on(&app, &slow, json!({"max_connections": 1}), json!({})).await,
    ];
    let (_, quiet) = app.tenant().await;
    for (t, sk) in flooders.iter().enumerate() {
        let mints = (0..60).map(|i| {
            let (app, sk) = (&app, sk.clone());
            async move { mint_async(app, &sk, &format!("f{t}-{i}@example.com")).await }
        });
        futures_util::future::join_all(mints).await;
    }
    let start = Instant::now();
    mint_async(&app, &quiet, "quiet@example.com").await;
    app.smtp.wait_for("quiet@example.com", 1).await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the quiet tenant's message took {took:?}"
    );
    // (Their backlog was still there: at about 1.3 messages a second, most of their 120
    // wait behind the relay however long minting them took on a loaded machine.)
    assert!(
        slow.messages().len() < 100,
        "the flooders are still queued behind their relay"
    );
}

#[tokio::test]
async fn an_outcome_the_database_cannot_take_keeps_its_message_from_being_sent_again() {
    if skip_on_postgres(
        "holds SQLite's write lock (tests/api_postgres/scale.rs cuts the server away instead)",
    ) {
        return;
    }
    let app = spawn_app().await;
    app.smtp.set_delay(Duration::from_millis(800));
    let (_, sk) = app.tenant().await;
    let key = mint_async(&app, &sk, "ada@example.com").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.smtp.in_data() == 0 {
        assert!(Instant::now() < deadline, "the message never reached DATA");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its send is recorded as begun after DATA's go-ahead, just before the body leaves.
    crate::lifecycle::wait_sql(
        &app.settings.database.url,
        "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL AND unstarted = FALSE",
        1,
        "the send was never recorded as begun",
    )
    .await;
    // The database goes away while the relay takes the message.
    let lock = HeldLock::sqlite_write(&app.db_path());
    app.smtp.wait_for("ada@example.com", 1).await;
    // The outage lasts longer than the lease (2 × 5 s + 30 s in these tests).
    app.clock.advance_secs(120);
    tokio::time::sleep(Duration::from_secs(7)).await;
    // The outcome waits in memory, and the metrics say so.
    records_waiting(&app, 1).await;
    lock.release();
    // The outcome is recorded once the database is back, and the message never goes again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = app
            .get(&format!("/v1/otp/{key}"), &sk)
            .await
            .json()
            .await
            .unwrap();
        if v["delivery"]["status"] == "sent" {
            break;
        }
        assert!(Instant::now() < deadline, "never recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.smtp.count_to("ada@example.com"), 1, "sent once");
    records_waiting(&app, 0).await;
}

/// Wait until `/metrics` shows `n` facts waiting for the database (the registry is the
/// process's, and another test's scrape may have set the gauge from its own app a moment
/// before: each scrape sets it from its app first).
async fn records_waiting(app: &TestApp, n: usize) {
    let want = format!("otpmint_records_waiting {n}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = app.get("/metrics", "").await.text().await.unwrap();
        if text.lines().any(|l| l == want) {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An app whose webhook client trusts `rx` and may reach loopback.
async fn hook_app(rx: &[&HttpReceiver]) -> TestApp {
    let cas: Vec<_> = rx.iter().map(|r| r.ca_path.clone()).collect();
    spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = cas;
        s.webhooks.timeout_seconds = 2;
    })
    .await
}

async fn subscribe(app: &TestApp, sk: &str, url: &str) -> Value {
    let r = app
        .put(
            "/v1/tenant/webhook",
            sk,
            json!({"url": url, "events": ["otp.sent"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn an_endpoint_that_answers_410_is_disabled_until_the_tenant_puts_it_again() {
    let rx = HttpReceiver::start(true).await;
    rx.answer_always(410);
    let app = hook_app(&[&rx]).await;
    let (_, sk) = app.tenant().await;
    let v = subscribe(&app, &sk, &rx.url("/hook")).await;
    assert_eq!(v["disabled_at"], Value::Null);
    app.mint(&sk, "ada@example.com").await;
    rx.wait_for(1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let v: Value = app
            .get("/v1/tenant/webhook", &sk)
            .await
            .json()
            .await
            .unwrap();
        if v["disabled_at"].is_string() {
            break v;
        }
        assert!(Instant::now() < deadline, "never disabled: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        shown["disabled_reason"].as_str().unwrap().contains("410"),
        "{shown}"
    );
    let d: Value = app
        .get("/v1/tenant/webhook/deliveries", &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["deliveries"][0]["status_code"], 410, "{d}");
    // Disabled: nothing more is sent, and a test event says why it cannot be queued.
    app.mint(&sk, "bob@example.com").await;
    let (s, v) = body(app.post("/v1/tenant/webhook/test", &sk, json!({})).await).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("conflict")),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests().len(), 1);
    // Stored again: enabled, and events flow.
    rx.answer_always(200);
    let v = subscribe(&app, &sk, &rx.url("/hook")).await;
    assert_eq!(v["disabled_at"], Value::Null, "{v}");
    app.mint(&sk, "cy@example.com").await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].json()["data"]["email"], "cy@example.com");
}

#[tokio::test]
async fn a_retry_after_of_the_endpoint_delays_the_next_attempt_as_asked() {
    let rx = HttpReceiver::start(true).await;
    rx.answer_next(&[429]);
    rx.set_retry_after(Some("120"));
    let app = hook_app(&[&rx]).await;
    let (_, sk) = app.tenant().await;
    subscribe(&app, &sk, &rx.url("/hook")).await;
    app.mint(&sk, "ada@example.com").await;
    rx.wait_for(1).await;
    // The schedule alone would try again after 5 s; the endpoint asked for 120.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.clock.advance_secs(60);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests().len(), 1, "tried again before Retry-After");
    app.clock.advance_secs(61);
    let got = rx.wait_for(2).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
}

#[tokio::test]
async fn endpoints_that_never_answer_do_not_delay_another_tenants_events() {
    let silent = HttpReceiver::start(true).await;
    silent.set_delay(Duration::from_secs(30));
    let fine = HttpReceiver::start(true).await;
    let app = hook_app(&[&silent, &fine]).await;
    for _ in 0..2 {
        let (_, sk) = app.tenant().await;
        subscribe(&app, &sk, &silent.url("/hook")).await;
        let tests = (0..100).map(|_| {
            let (app, sk) = (&app, sk.clone());
            async move {
                app.post("/v1/tenant/webhook/test", &sk, json!({}))
                    .await
                    .status()
            }
        });
        for s in futures_util::future::join_all(tests).await {
            assert_eq!(s, StatusCode::ACCEPTED);
        }
    }
    let (_, quiet) = app.tenant().await;
    subscribe(&app, &quiet, &fine.url("/hook")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    app.post("/v1/tenant/webhook/test", &quiet, json!({})).await;
    fine.wait_for(1).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Meanwhile both silent endpoints kept their share of requests busy.
    assert!(silent.requests().len() >= 8, "{}", silent.requests().len());
}

#[tokio::test]
async fn a_sync_outcome_waiting_through_an_outage_is_recorded_sent_not_unknown() {
    if skip_on_postgres("holds SQLite's write lock") {
        return;
    }
    let app = spawn_app().await;
    app.smtp.set_delay(Duration::from_millis(800));
    let (_, sk) = app.tenant().await;
    let (app_ref, sk2) = (&app, sk.clone());
    let mint = async move {
        app_ref
            .post("/v1/otp", &sk2, json!({"email": "ada@example.com"}))
            .await
    };
    let lock_after_data = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.smtp.in_data() == 0 {
            assert!(Instant::now() < deadline, "the message never reached DATA");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        HeldLock::sqlite_write(&app.db_path())
    };
    let (r, lock) = tokio::join!(mint, lock_after_data);
    // The relay took it: 201, though its outcome could not be recorded yet.
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    // The sync row's lease runs out during the outage; the sweeps meanwhile leave it alone.
    app.clock.advance_secs(120);
    tokio::time::sleep(Duration::from_secs(6)).await;
    lock.release();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = app
            .get(&format!("/v1/otp/{key}"), &sk)
            .await
            .json()
            .await
            .unwrap();
        assert_ne!(v["delivery"]["status"], "unknown", "{v}");
        if v["delivery"]["status"] == "sent" {
            break;
        }
        assert!(Instant::now() < deadline, "never recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
}

/// A 410 disables the webhook only if the URL that answered is still the stored one (API.md
/// §17.7): the tenant moved to a new URL while the old one was answering, and the new URL
/// and its events are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_from_an_old_url_leaves_the_new_one_enabled() {
    let old = HttpReceiver::start(true).await;
    old.answer_always(410);
    old.set_delay(Duration::from_millis(1500));
    let new = HttpReceiver::start(true).await;
    let app = hook_app(&[&old, &new]).await;
    let (_, sk) = app.tenant().await;
    subscribe(&app, &sk, &old.url("/hook")).await;
    app.mint(&sk, "ada@example.com").await;
    old.wait_for(1).await;
    // While the old endpoint takes its time to answer 410, the tenant stores a new URL.
    subscribe(&app, &sk, &new.url("/hook")).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let v: Value = app
        .get("/v1/tenant/webhook", &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&v["disabled_at"], &v["url"]),
        (&Value::Null, &json!(new.url("/hook"))),
        "{v}"
    );
    app.mint(&sk, "bob@example.com").await;
    let got = new.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["email"], "bob@example.com");
}

/// A verify whose finish the database could not take answers 503 ("nothing changed"), and
/// its attempt is given back once the database is back — also when the first try to give it
/// back failed as well, the database still away. The same code then verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_answered_503_is_given_back_once_the_database_is_back() {
    if skip_on_postgres("holds SQLite's write lock") {
        return;
    }
    let app = spawn_app_with(|s| {
        s.database.timeout_seconds = 1;
        // A hash slow enough for the test to take the lock while the guess is compared.
        s.hashing.iterations = 40;
    })
    .await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let db = app.settings.database.url.clone();
    const USED: &str = "SELECT COALESCE(SUM(attempts), 0) FROM challenges";
    let guess = app.verify(&sk, &key, &code);
    let hold = async {
        crate::lifecycle::wait_sql(&db, USED, 1, "the attempt was never reserved").await;
        HeldLock::sqlite_write(&app.db_path())
    };
    let ((status, v), lock) = tokio::join!(guess, hold);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        crate::lifecycle::sql(&db, USED),
        1,
        "given back while held?"
    );
    lock.release();
    crate::lifecycle::wait_sql(&db, USED, 0, "the attempt was never given back").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}
