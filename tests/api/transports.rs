//! A second relay per tenant (API.md §12.1): failover at once on a transient failure that
//! sent nothing, never on a permanent refusal; a circuit breaker that skips a failing relay
//! and probes it again; the delivery record names the transport that accepted.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};
use otpmint::testkit::smtp::Mode;

/// The app (its own relay as `smtp`) and a second relay it may use, trusted and allowed.
async fn app_with_fallback(
    tweak: impl FnOnce(&mut otpmint::config::Settings),
) -> (TestApp, SmtpServer) {
    let fallback = SmtpServer::start().await;
    let (port, ca) = (fallback.port, fallback.ca_path.clone());
    let app = spawn_app_with(move |s| {
        s.smtp.allowed_ports.push(port);
        s.smtp.extra_root_certificates.push(ca);
        tweak(s);
    })
    .await;
    (app, fallback)
}

fn relay_json(relay: &SmtpServer, from: &str) -> Value {
    json!({
        "host": "127.0.0.1",
        "port": relay.port,
        "username": SMTP_USER,
        "password": SMTP_PASS,
        "from": from,
        "tls": "starttls",
    })
}

/// A tenant with `smtp` on the app's relay and `smtp_fallback` on `fallback`.
async fn tenant_with_fallback(app: &TestApp, fallback: &SmtpServer) -> (String, String) {
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({
                "name": "Acme",
                "smtp": app.smtp_json(),
                "smtp_fallback": relay_json(fallback, "Acme <backup@acme.example>"),
            }),
        )
        .await;
    let (s, v) = body(r).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    )
}

/// Mint (sync) and answer the status, the key and the transport named by its record.
async fn mint_sync(app: &TestApp, sk: &str, email: &str) -> (StatusCode, String, Value) {
    let (s, v) = body(app.post("/v1/otp", sk, json!({ "email": email })).await).await;
    let key = v["shareable_key"].as_str().unwrap_or_default().to_string();
    if key.is_empty() {
        return (s, key, v);
    }
    let st = body(app.get(&format!("/v1/otp/{key}"), sk).await).await.1;
    (s, key, st["delivery"]["transport"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_relay_takes_the_message_when_the_relay_is_down_hangs_or_answers_421() {
    // (The breaker stays out of this test: many failures in a row.)
    let (app, fallback) = app_with_fallback(|s| s.delivery.breaker_failures = 1000).await;
    let (_, sk) = tenant_with_fallback(&app, &fallback).await;

    // Both up: the relay takes it.
    let (s, key, transport) = mint_sync(&app, &sk, "ada@example.com").await;
    assert_eq!((s, transport), (StatusCode::CREATED, json!("smtp")));
    let msg = app.smtp.wait_for("ada@example.com", 1).await;
    assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);

    // A relay that takes the transaction and stalls before the message (at RCPT) sent
    // nothing either: the fallback takes it.
    for (i, mode) in ["down", "hangs", "421", "stalls at RCPT"]
        .into_iter()
        .enumerate()
    {
        app.smtp.set_session_limit(None);
        match mode {
            "down" => app.smtp.set_mode(Mode::Down),
            "hangs" => app.smtp.set_mode(Mode::Tarpit),
            "stalls at RCPT" => app.smtp.set_mode(Mode::StallAtRcpt),
            _ => {
                app.smtp.set_mode(Mode::Normal);
                app.smtp.set_session_limit(Some(0));
            }
        }
        let to = format!("p{i}@example.com");
        let (s, key, transport) = mint_sync(&app, &sk, &to).await;
        assert_eq!(
            (s, transport),
            (StatusCode::CREATED, json!("smtp_fallback")),
            "{mode}"
        );
        let msg = fallback.wait_for(&to, 1).await;
        assert_eq!(
            msg.header("From").as_deref(),
            Some("Acme <backup@acme.example>"),
            "{mode}: the fallback relay's sender"
        );
        assert_eq!(app.smtp.count_to(&to), 0, "{mode}");
        assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);
    }

    // Async: the same attempt fails over, from the outbox.
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "async@example.com", "delivery": "async"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = fallback.wait_for("async@example.com", 1).await;
    assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);
    let st = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    assert_eq!(st["delivery"]["transport"], "smtp_fallback", "{st}");

    // A permanent refusal (550) is the recipient's, not the relay's: no failover.
    app.smtp.set_session_limit(None);
    app.smtp.set_mode(Mode::RejectRecipients);
    let before = fallback.messages().len();
    let (s, _, v) = mint_sync(&app, &sk, "nobody@example.com").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(
        fallback.messages().len(),
        before,
        "nothing went to the fallback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_keeps_failing_is_skipped_then_probed_with_one_message() {
    let (app, fallback) = app_with_fallback(|s| {
        s.delivery.breaker_failures = 2;
        s.delivery.breaker_seconds = 30;
    })
    .await;
    let (_, sk) = tenant_with_fallback(&app, &fallback).await;
    app.smtp.set_mode(Mode::Down);
    for i in 0..2 {
        let (s, _, t) = mint_sync(&app, &sk, &format!("a{i}@example.com")).await;
        assert_eq!((s, t), (StatusCode::CREATED, json!("smtp_fallback")));
    }
    // Two failures in a row: the relay is skipped (not even connected to), up or not.
    app.smtp.set_mode(Mode::Normal);
    let seen = app.smtp.connections();
    for i in 0..3 {
        let (s, _, t) = mint_sync(&app, &sk, &format!("b{i}@example.com")).await;
        assert_eq!((s, t), (StatusCode::CREATED, json!("smtp_fallback")));
    }
    assert_eq!(
        app.smtp.connections(),
        seen,
        "an open breaker skips its relay"
    );
    // Its time is up: one message probes it; a failed probe opens it again at once.
    app.smtp.set_mode(Mode::Down);
    app.clock.advance_secs(31);
    let (s, _, t) = mint_sync(&app, &sk, "probe1@example.com").await;
    assert_eq!((s, t), (StatusCode::CREATED, json!("smtp_fallback")));
    assert!(app.smtp.connections() > seen, "the probe tried the relay");
    app.smtp.set_mode(Mode::Normal);
    let seen = app.smtp.connections();
    let (_, _, t) = mint_sync(&app, &sk, "c@example.com").await;
    assert_eq!(t, json!("smtp_fallback"));
    assert_eq!(
        app.smtp.connections(),
        seen,
        "open again after a failed probe"
    );
    // The next probe passes: the relay takes messages again.
    app.clock.advance_secs(31);
    for i in 0..3 {
        let to = format!("d{i}@example.com");
        let (s, key, t) = mint_sync(&app, &sk, &to).await;
        assert_eq!((s, t), (StatusCode::CREATED, json!("smtp")), "{to}");
        let msg = app.smtp.wait_for(&to, 1).await;
        assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);
    }

    // With no other relay to go to, an open breaker does not fail messages sooner: a
    // tenant without a fallback keeps trying its relay.
    let (_, solo) = app.tenant().await;
    app.smtp.set_mode(Mode::Down);
    for i in 0..3 {
        let (s, _, _) = mint_sync(&app, &solo, &format!("e{i}@example.com")).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
    }
    app.smtp.set_mode(Mode::Normal);
    let (s, _, t) = mint_sync(&app, &solo, "f@example.com").await;
    assert_eq!((s, t), (StatusCode::CREATED, json!("smtp")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_relay_is_set_changed_and_removed_like_the_relay() {
    let (app, fallback) = app_with_fallback(|_| {}).await;
    let (id, sk) = app.tenant().await;
    let admin_path = format!("/v1/tenants/{id}");
    let got = body(app.get(&admin_path, ADMIN).await).await.1;
    assert_eq!(got["smtp_fallback"], Value::Null, "{got}");

    // Setting one needs every field but a login (a relay without AUTH, as at creation);
    // each bad one is named, and nothing changes.
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"smtp_fallback": {"host": "127.0.0.1", "port": fallback.port}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let text = v.to_string();
    assert!(text.contains("smtp_fallback.from"), "{v}");
    assert!(!text.contains("smtp_fallback.username"), "{v}");
    assert!(!text.contains("smtp_fallback.password"), "{v}");
    let mut bad = relay_json(&fallback, "not a mailbox");
    bad["tls"] = json!("sometimes");
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({ "smtp_fallback": bad }))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("smtp_fallback.tls"), "{v}");
    // The host policy applies as to the relay: a port not allowed is refused.
    let mut closed = relay_json(&fallback, "b@acme.example");
    closed["port"] = json!(25);
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({ "smtp_fallback": closed }))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let got = body(app.get(&admin_path, ADMIN).await).await.1;
    assert_eq!(got["smtp_fallback"], Value::Null, "{got}");

    // The tenant sets it; it shows without its password.
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"smtp_fallback": relay_json(&fallback, "b@acme.example")}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let fb = &v["smtp_fallback"];
    assert_eq!(
        (&fb["port"], &fb["from"]),
        (&json!(fallback.port), &json!("b@acme.example"))
    );
    assert!(
        fb.get("password").is_none() && !v.to_string().contains(SMTP_PASS),
        "{v}"
    );
    // Moving it needs its password again; changing the sender does not.
    let (s, v) = body(
        app.patch(
            &admin_path,
            ADMIN,
            json!({"smtp_fallback": {"username": "someone-else"}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("smtp_fallback.password"), "{v}");
    let (s, v) = body(
        app.patch(
            &admin_path,
            ADMIN,
            json!({"smtp_fallback": {"from": "Backup <c@acme.example>"}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["smtp_fallback"]["from"]),
        (StatusCode::OK, &json!("Backup <c@acme.example>")),
        "{v}"
    );

    // A data-key rotation re-encrypts its password too, and it still sends.
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 re-encrypted"), "{out}");
    app.smtp.set_mode(Mode::Down);
    let (s, key, t) = mint_sync(&app, &sk, "ada@example.com").await;
    assert_eq!((s, t), (StatusCode::CREATED, json!("smtp_fallback")));
    let msg = fallback.wait_for("ada@example.com", 1).await;
    assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);

    // `null` removes it: then the relay's failure is the mint's.
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({ "smtp_fallback": null }))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["smtp_fallback"]),
        (StatusCode::OK, &Value::Null),
        "{v}"
    );
    let (s, _, _) = mint_sync(&app, &sk, "bob@example.com").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(fallback.count_to("bob@example.com"), 0);
}
