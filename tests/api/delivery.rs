//! Delivery over real SMTP: headers, TLS modes, pooled connections, and every failure reason.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::{Mode, SmtpServer};

#[tokio::test]
async fn messages_carry_the_headers_and_the_code_as_one_run_of_digits() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (_, code) = app.mint(&sk, "ada@example.com").await;
    let m = app.smtp.wait_for("ada@example.com", 1).await;
    for h in ["Date", "Message-ID", "From", "To", "Subject"] {
        assert!(m.header(h).is_some(), "missing {h}: {}", m.data);
    }
    assert!(m.header("Message-ID").unwrap().ends_with("@acme.example>"));
    assert!(m.header("From").unwrap().contains("no-reply@acme.example"));
    assert!(m.data.contains(&code));
    assert!(m.data.contains("10 minutes"), "{}", m.data);
    assert_eq!(m.from, "no-reply@acme.example");
    // A code is transactional mail: no List-Unsubscribe, which marks mail as bulk (API.md
    // §16.5).
    assert!(m.header("List-Unsubscribe").is_none(), "{}", m.data);
    assert!(!m.data.to_ascii_lowercase().contains("list-unsubscribe"));
}

/// A sender whose quoted display name holds a comma (`"Acme, Inc."`) is one mailbox: it is
/// taken, and the message's From keeps the name whole; unquoted, the comma makes a list and
/// is refused (API.md §1).
#[tokio::test]
async fn a_sender_named_with_a_comma_in_quotes_is_taken_and_sent_whole() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"smtp": {"from": "Acme, Inc. <no-reply@acme.example>"}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"smtp": {"from": "\"Acme, Inc.\" <no-reply@acme.example>"}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["smtp"]["from"], "\"Acme, Inc.\" <no-reply@acme.example>");
    app.mint(&sk, "ada@example.com").await;
    let m = app.smtp.wait_for("ada@example.com", 1).await;
    // One mailbox whose name goes as the quoted string it is, not as an encoded word it does
    // not need (spam filters count that against a message).
    assert_eq!(
        m.header("From").as_deref(),
        Some("\"Acme, Inc.\" <no-reply@acme.example>")
    );
    assert_eq!(m.from, "no-reply@acme.example");
}

/// An app whose relay speaks TLS from the first byte (port 465's way), and a tenant on it
/// with the TLS mode `tls`.
async fn implicit_relay_tenant(tls: &str) -> (TestApp, String) {
    let smtp = SmtpServer::start_with(true).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &smtp);
    let app = start(
        settings,
        smtp,
        dir,
        std::sync::Arc::new(otpmint::clock::ManualClock::starting_now()),
    )
    .await;
    let mut smtp_json = app.smtp_json();
    smtp_json["tls"] = json!(tls);
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "x", "smtp": smtp_json}),
        )
        .await;
    let sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    (app, sk)
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let (app, sk) = implicit_relay_tenant("implicit").await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// The same relay reached with STARTTLS: the answer says which setting fixes it
/// (API.md §18.8).
#[tokio::test]
async fn a_tls_mode_mismatch_names_the_tls_setting() {
    let (app, sk) = implicit_relay_tenant("starttls").await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["reason"] == "smtp_tls" || v["reason"] == "smtp_timeout",
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("tls = \"implicit\""),
        "{v}"
    );
    assert!(app.smtp.messages().is_empty());
}

/// STARTTLS is required, never opportunistic: a relay that does not offer it fails the
/// delivery as `smtp_tls` before any credential or message is sent (API.md §4), and the
/// answer says that is what is wrong (`starttls_unsupported`), as `check_relay`'s does.
#[tokio::test]
async fn a_relay_without_starttls_gets_neither_credentials_nor_the_message() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::NoStarttls);
    // Not smtp_auth: no AUTH was tried in the clear (the relay would have refused it).
    let says_why = |v: &Value, code: &str| {
        assert_eq!(
            (&v["code"], &v["reason"], &v["detail_code"]),
            (
                &json!(code),
                &json!("smtp_tls"),
                &json!("starttls_unsupported")
            ),
            "{v}"
        );
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains("does not offer STARTTLS"), "{v}");
    };
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    says_why(&r.json().await.unwrap(), "delivery_failed");
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Checked", "smtp": app.smtp_json(), "check_relay": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    says_why(&r.json().await.unwrap(), "relay_check_failed");
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test]
async fn connections_are_pooled_and_reused() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    for i in 0..12 {
        app.mint(&sk, &format!("user{i}@example.com")).await;
    }
    let opened = app.smtp.connections();
    assert!(
        opened >= 1 && opened <= app.settings.smtp.pool_size,
        "opened {opened}"
    );
}

/// A burst opens as many sessions as the relay's window allows; once it is over, those
/// beyond `smtp.pool_size` are closed within moments (API.md §10: `pool_size` are kept idle),
/// not left open until their idle time runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_a_burst_opened_beyond_the_pool_are_closed_soon_after_it() {
    let app = spawn_app_with(|s| {
        s.smtp.initial_connections = 8;
        s.smtp.pool_size = 2;
    })
    .await;
    let (_, sk) = app.tenant().await;
    // A relay that takes a while per message, so the burst's sends overlap.
    app.smtp.set_delay(Duration::from_millis(300));
    let to: Vec<String> = (0..24).map(|i| format!("burst{i}@example.com")).collect();
    futures_util::future::join_all(to.iter().map(|t| app.mint(&sk, t))).await;
    let after = app.smtp.open_sessions();
    assert!(after > 2, "the burst left {after} sessions open");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while app.smtp.open_sessions() > 2 {
        assert!(
            std::time::Instant::now() < until,
            "{} sessions still open 10 s after the burst (pool_size 2)",
            app.smtp.open_sessions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_used_moments_ago_is_reused_without_a_noop_probe() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    for i in 0..5 {
        app.mint(&sk, &format!("user{i}@example.com")).await;
    }
    assert_eq!(app.smtp.connections(), 1);
    // Four round trips per message on a warm connection (MAIL, RCPT, DATA, body), not five.
    assert_eq!(app.smtp.noops(), 0);
}

#[tokio::test]
async fn a_reused_connection_found_dead_before_data_is_retried_once_on_a_fresh_one() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_hang_up_after_message(true);
    for i in 0..3 {
        // Each mint finds the pooled connection closed by the relay: MAIL FROM fails, the
        // message goes on a fresh connection, and the mint succeeds.
        let (key, code) = app.mint(&sk, &format!("user{i}@example.com")).await;
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    }
    assert_eq!(app.smtp.connections(), 3);
    assert_eq!(app.smtp.messages().len(), 3, "nothing sent twice");
}

#[tokio::test]
async fn an_untrusted_certificate_fails_as_smtp_tls() {
    let app = spawn_app().await;
    let stranger = SmtpServer::start().await; // its CA is not trusted by the app
    let mut smtp = app.smtp_json();
    smtp["port"] = json!(stranger.port);
    let app2 = {
        let mut s = app.settings.clone();
        s.smtp.allowed_ports.push(stranger.port);
        let dir = tempfile::tempdir().unwrap();
        s.database.url = format!("sqlite://{}", dir.path().join("o.db").display());
        s.crypto.master_key_file = dir.path().join("k").display().to_string();
        start(s, SmtpServer::start().await, dir, app.clock.clone()).await
    };
    let r = app2
        .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
        .await;
    let sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app2
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "delivery_failed");
    assert_eq!(v["reason"], "smtp_tls");
    // The detail says what to check (API.md §18.8).
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("smtp.extra_root_certificates"),
        "{v}"
    );
    assert!(stranger.messages().is_empty());
}

async fn failing_mint(app: &TestApp, sk: &str) -> Value {
    let r = app
        .post("/v1/otp", sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_rejected_recipient_fails_as_smtp_rejected_and_the_earlier_code_stays_valid() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.smtp.set_mode(Mode::RejectRecipients);
    let v = failing_mint(&app, &sk).await;
    assert_eq!(v["reason"], "smtp_rejected");
    assert!(
        !v.to_string().contains("no such user"),
        "SMTP replies are not echoed"
    );
    app.smtp.set_mode(Mode::Normal);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// A relay's refusal in Latin-1 (not UTF-8) is a refusal all the same: 502 smtp_rejected,
/// not a relay that could not be reached (found by the hostile-upstream audit: the reply was
/// taken for a garbled one, and the code went out through the fallback relay).
#[tokio::test]
async fn a_refusal_whose_text_is_not_utf8_fails_as_smtp_rejected() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::RejectRecipientsInLatin1);
    let v = failing_mint(&app, &sk).await;
    assert_eq!(v["reason"], "smtp_rejected", "{v}");
    assert!(
        !v.to_string().contains("Benutzer"),
        "SMTP replies are not echoed"
    );
}

#[tokio::test]
async fn a_closed_port_fails_as_smtp_unreachable() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|s| s.smtp.allowed_ports.push(free)).await;
    let (id, sk) = app.tenant().await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"port": free, "tls": "starttls", "password": "x"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = failing_mint(&app, &sk).await;
    assert_eq!(v["reason"], "smtp_unreachable");
}

#[tokio::test]
async fn a_tarpit_fails_as_smtp_timeout_within_the_configured_bound() {
    let app = spawn_app_with(|s| s.smtp.timeout_seconds = 1).await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::Tarpit);
    let start = std::time::Instant::now();
    let v = failing_mint(&app, &sk).await;
    assert_eq!(v["reason"], "smtp_timeout");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

/// A relay that takes the transaction and never answers RCPT times out before anything of
/// the message was sent: 502, and the send is given back to the quotas (API.md §10: "the
/// send is given back to the quotas when nothing can have reached the relay") — the next
/// mint is not held by the cooldown.
#[tokio::test]
async fn a_relay_that_stalls_before_the_message_fails_with_its_send_given_back() {
    let app = spawn_app_with(|s| {
        s.smtp.timeout_seconds = 1;
        s.limits.resend_cooldown_seconds = 600;
    })
    .await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::StallAtRcpt);
    let v = failing_mint(&app, &sk).await;
    assert_eq!(v["reason"], "smtp_timeout", "{v}");
    app.smtp.set_mode(Mode::Normal);
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_code_can_never_verify() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    app.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"smtp": {"password": "wrong"}}),
    )
    .await;
    let v = failing_mint(&app, &sk).await;
    assert_eq!(v["reason"], "smtp_auth");
    assert!(v.get("shareable_key").is_none());
    assert!(app.smtp.messages().is_empty());
}

/// A recipient whose local part is not ASCII needs SMTPUTF8; a relay without it refused
/// nothing, and the answer says what to do rather than blaming the relay and the sender
/// (found by a black-box audit).
#[tokio::test]
async fn a_non_ascii_local_part_through_a_relay_without_smtputf8_is_told_as_such() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let v = crate::outbox::mint_fails_with(&app, &sk, "ädä@example.com", "smtp_rejected").await;
    assert_eq!(v["detail_code"], "smtputf8_unsupported", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("SMTPUTF8") && !detail.contains("send as the from address"),
        "{detail}"
    );
}
