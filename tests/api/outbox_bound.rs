//! One bound for all outbound work (API.md §19.3, §11.2): `delivery.max_sessions` holds the
//! sessions of all tenants together, queued messages beyond it are sent, not left unknown,
//! and wait without spending attempts, relay checks wait for it like sends, and its places
//! are shared fairly: a slow tenant cannot keep another out.

use crate::helpers::*;
use crate::outbox::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// `delivery.max_sessions` bounds outbound work over all tenants together: three tenants
/// whose relays each allow four sessions never have more than two messages in DATA at once,
/// and every message still goes (sync within its deadline, async from the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bound_holds_outbound_sessions_of_all_tenants_together() {
    let app = spawn_app_with(|s| s.delivery.max_sessions = 2).await;
    app.smtp.set_delay(Duration::from_millis(300));
    let mut tenants = Vec::new();
    for _ in 0..3 {
        tenants.push(
            tenant_with(&app, json!({}), json!({"max_connections": 4}))
                .await
                .1,
        );
    }
    let mints = tenants.iter().enumerate().flat_map(|(t, sk)| {
        let app = &app;
        (0..4).map(move |i| async move {
            let delivery = if i % 2 == 0 { "sync" } else { "async" };
            let r = app
                .post(
                    "/v1/otp",
                    sk,
                    json!({"email": format!("p{t}-{i}@example.com"), "delivery": delivery}),
                )
                .await;
            r.status()
        })
    });
    for s in futures_util::future::join_all(mints).await {
        assert!(s == StatusCode::CREATED || s == StatusCode::ACCEPTED, "{s}");
    }
    for t in 0..3 {
        for i in 0..4 {
            app.smtp.wait_for(&format!("p{t}-{i}@example.com"), 1).await;
        }
    }
    assert_eq!(
        app.smtp.max_concurrent_in_data(),
        2,
        "the bound was reached and held"
    );
}

/// The wait for a place in `delivery.max_sessions` is the queue's, not the send's (API.md
/// §19.3): more queued messages than the bound lets go in one relay time all go, each with
/// its transport's whole time once it has its session — none starts DATA with a moment left
/// and ends `unknown` though the relay took it. Each is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_beyond_the_bound_are_sent_not_left_unknown() {
    let app = spawn_app_with(|s| {
        s.delivery.max_sessions = 2;
        s.smtp.timeout_seconds = 2;
    })
    .await;
    // 12 messages of 0.7 s on 2 sessions: over 4 s of work, twice the relay's time.
    app.smtp.set_delay(Duration::from_millis(700));
    let mut keys = Vec::new();
    for t in 0..2 {
        let (_, sk) = tenant_with(&app, json!({}), json!({"max_connections": 6})).await;
        for i in 0..6 {
            let to = format!("q{t}-{i}@example.com");
            keys.push((sk.clone(), mint_async(&app, &sk, &to).await, to));
        }
    }
    for (sk, key, to) in &keys {
        let st = wait_status(&app, sk, key, |v| {
            v["delivery"]["status"] != "queued" && v["delivery"]["status"] != "sending"
        })
        .await;
        assert_eq!(st["delivery"]["status"], "sent", "{to}: {st}");
        assert_eq!(app.smtp.count_to(to), 1, "{to}");
    }
    assert!(app.smtp.max_concurrent_in_data() <= 2);
}

/// Beyond `delivery.max_sessions` a queued message waits and stays queued (API.md §19.3):
/// while another tenant's slow send holds the process's one session, a background message
/// waits out its transport's time again and again without an attempt counted (its due time,
/// its place in the queue, unchanged), and goes on its first attempt once the session is
/// free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_waiting_for_the_bound_stays_queued_without_spending_attempts() {
    let (app, _rx) = one_session_held(Duration::from_secs(5)).await;
    let (_, sk) = app.tenant().await;
    let key = mint_async(&app, &sk, "ada@example.com").await;
    // Its one-second wait passes while the session is held: given back, nothing counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(&app, &sk, &key).await;
    assert_eq!(st["delivery"]["attempts"], 0, "{st}");
    assert_ne!(st["delivery"]["status"], "failed", "{st}");
    assert!(app.smtp.messages().is_empty());
    // It keeps its place: claimed again at once, it waits again while the session is held,
    // and goes once it is free.
    app.smtp.wait_for("ada@example.com", 1).await;
    let st = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(
        (&st["delivery"]["status"], &st["delivery"]["attempts"]),
        (&json!("sent"), &json!(1)),
        "{st}"
    );
}

/// A relay check opens a session like a send does, so it counts in `delivery.max_sessions`
/// too (API.md §19.3): while a slow send holds the process's one session it waits out the
/// relay's time, then answers 503 `overloaded` and saves nothing; once the session is free
/// it checks and saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_check_waits_for_the_bound_like_a_send() {
    let (app, _rx) = one_session_held(Duration::from_secs(4)).await;
    let (id, _) = app.tenant().await;
    let check = json!({"name": "Checked", "check_relay": true, "smtp": app.smtp_json()});
    let r = app
        .patch(&format!("/v1/tenants/{id}"), ADMIN, check.clone())
        .await;
    let (s, v) = body(r).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("overloaded")),
        "{v}"
    );
    let (_, t) = body(app.get(&format!("/v1/tenants/{id}"), ADMIN).await).await;
    assert_eq!(t["name"], json!("Acme"), "nothing saved: {t}");
    // The slow send done, the check gets its session.
    for _ in 0..300 {
        let r = app
            .patch(&format!("/v1/tenants/{id}"), ADMIN, check.clone())
            .await;
        if r.status() == StatusCode::OK {
            let (_, t) = body(app.get(&format!("/v1/tenants/{id}"), ADMIN).await).await;
            assert_eq!(t["name"], json!("Checked"), "{t}");
            return;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the check never got the session back");
}
/// The bound's places are shared fairly between tenants (API.md §11.2, §19.3): a tenant
/// whose transport is slow, with more sends under way than the bound has places, does not
/// keep another tenant's sync mint out — a place that comes free goes to the waiting tenant
/// holding the fewest (found by the noisy-neighbour audit: a first-come queue gave each
/// place back to the slow tenant's next send, and the other tenant's sync mints failed
/// `no_session_free`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tenant_cannot_keep_another_out_of_the_bound() {
    let rx = otpmint::testkit::http::HttpReceiver::start(true).await;
    rx.set_delay(Duration::from_secs(4));
    let ca = rx.ca_path.clone();
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 20;
        s.delivery.max_sessions = 2;
        s.smtp.timeout_seconds = 8;
    })
    .await;
    let (_, slow) = app.tenant().await;
    crate::http_transport::put_http(&app, &slow, &rx, "primary").await;
    for i in 0..6 {
        mint_async(&app, &slow, &format!("slow{i}@example.com")).await;
    }
    // The slow tenant holds both places, and more of its sends wait for one.
    for _ in 0..500 {
        if rx.requests().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rx.requests().len(), 2, "the slow tenant holds the bound");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, other) = app.tenant().await;
    let (s, v) = body(
        app.post("/v1/otp", &other, json!({"email": "bea@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(app.smtp.count_to("bea@example.com"), 1);
    // The slow tenant's sends all go in the end.
    for _ in 0..1000 {
        if rx.requests().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rx.requests().len(), 6);
}

/// An app with `delivery.max_sessions = 1` (and a relay time of 1 s), whose one session a
/// slow HTTP endpoint (answering after `slow`) holds for another tenant's queued message.
async fn one_session_held(slow: Duration) -> (TestApp, otpmint::testkit::http::HttpReceiver) {
    let rx = otpmint::testkit::http::HttpReceiver::start(true).await;
    rx.set_delay(slow);
    let ca = rx.ca_path.clone();
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 20;
        s.delivery.max_sessions = 1;
        s.smtp.timeout_seconds = 1;
    })
    .await;
    let (_, other) = app.tenant().await;
    crate::http_transport::put_http(&app, &other, &rx, "primary").await;
    mint_async(&app, &other, "slow@example.com").await;
    for _ in 0..500 {
        if !rx.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rx.requests().len(),
        1,
        "the slow send holds the one session"
    );
    (app, rx)
}
