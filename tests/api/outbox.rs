//! Delivery at a relay's speed (API.md §10): per-tenant session bound, async mints from the
//! durable outbox with retries, failure, restart, and each code's delivery status.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::Mode;

/// Create a tenant with extra top-level fields (delivery) and smtp fields.
pub(crate) async fn tenant_with(
    app: &TestApp,
    extra: Value,
    smtp_extra: Value,
) -> (String, String) {
    let mut smtp = app.smtp_json();
    if let Value::Object(m) = smtp_extra {
        for (k, v) in m {
            smtp[k] = v;
        }
    }
    let mut body = json!({"name": "Acme", "smtp": smtp});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let r = app.post("/v1/tenants", ADMIN, body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    )
}

pub(crate) async fn mint_async(app: &TestApp, sk: &str, email: &str) -> String {
    let r = app
        .post("/v1/otp", sk, json!({"email": email, "delivery": "async"}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "queued");
    v["shareable_key"].as_str().unwrap().to_string()
}

/// A sync mint that answers 502 `delivery_failed` with this `reason`.
/// A sync mint that answers 502 with `reason`; the answer, for what else it says.
pub(crate) async fn mint_fails_with(app: &TestApp, sk: &str, email: &str, reason: &str) -> Value {
    let (s, v) = body(app.post("/v1/otp", sk, json!({ "email": email })).await).await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::BAD_GATEWAY, &json!(reason)),
        "{v}"
    );
    v
}

pub(crate) async fn status(app: &TestApp, sk: &str, key: &str) -> Value {
    let r = app.get(&format!("/v1/otp/{key}"), sk).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Poll the code's status until `done` holds (15 s at most).
pub(crate) async fn wait_status(
    app: &TestApp,
    sk: &str,
    key: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = status(app, sk, key).await;
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never reached the expected state: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_tenant_object_shows_and_validates_max_connections_and_delivery() {
    let app = spawn_app().await;
    let (id, sk) = tenant_with(
        &app,
        json!({"delivery": "async"}),
        json!({"max_connections": 3}),
    )
    .await;
    let v: Value = app.get("/v1/tenant", &sk).await.json().await.unwrap();
    assert_eq!(v["smtp"]["max_connections"], 3);
    assert_eq!(v["delivery"], "async");
    // Defaults.
    let (_, sk2) = app.tenant().await;
    let v: Value = app.get("/v1/tenant", &sk2).await.json().await.unwrap();
    // The server's default ceiling (`smtp.max_connections_per_tenant`).
    assert_eq!(v["smtp"]["max_connections"], 32);
    assert_eq!(v["delivery"], "sync");
    // Out of range or unknown: 400, nothing changes.
    for body in [
        json!({"smtp": {"max_connections": 0}}),
        json!({"smtp": {"max_connections": 257}}),
        json!({"delivery": "later"}),
    ] {
        let r = app.patch(&format!("/v1/tenants/{id}"), ADMIN, body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "invalid_request");
    }
    let v: Value = app.get("/v1/tenant", &sk).await.json().await.unwrap();
    assert_eq!(v["smtp"]["max_connections"], 3);
    // The tenant may change both itself, without the password.
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"delivery": "sync", "smtp": {"max_connections": 64}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["smtp"]["max_connections"], 64);
    assert_eq!(v["delivery"], "sync");
    let mut smtp = app.smtp_json();
    smtp["max_connections"] = json!(300);
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_relay_never_sees_more_sessions_in_data_than_max_connections() {
    let app = spawn_app_with(|s| s.smtp.pool_size = 8).await;
    let (_, sk) = tenant_with(&app, json!({}), json!({"max_connections": 3})).await;
    app.smtp.set_delay(Duration::from_millis(150));
    let mints = (0..12).map(|i| {
        let app = &app;
        let sk = sk.clone();
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
    let statuses = futures_util::future::join_all(mints).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    // Async mints share the same bound.
    for i in 0..12 {
        mint_async(&app, &sk, &format!("a{i}@example.com")).await;
    }
    for i in 0..12 {
        app.smtp.wait_for(&format!("a{i}@example.com"), 1).await;
    }
    let max = app.smtp.max_concurrent_in_data();
    assert!(max <= 3, "the relay saw {max} sessions in DATA at once");
    assert!(
        max >= 2,
        "sends never overlapped ({max}): the bound was not exercised"
    );
}

#[tokio::test]
async fn an_async_mint_answers_202_before_a_slow_relay_accepts_and_then_verifies() {
    let app = spawn_app().await;
    let (_, sk) = tenant_with(&app, json!({"delivery": "async"}), json!({})).await;
    app.smtp.set_delay(Duration::from_secs(2));
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "queued");
    assert_eq!(v["code_length"], 6);
    let key = v["shareable_key"].as_str().unwrap().to_string();
    // Answered while the relay has accepted nothing yet.
    assert!(app.smtp.messages().is_empty());
    let s = status(&app, &sk, &key).await;
    assert_eq!(s["status"], "pending");
    assert_eq!(s["delivery"]["mode"], "async");
    assert!(
        s["delivery"]["status"] == "queued" || s["delivery"]["status"] == "sending",
        "{s}"
    );
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(s["delivery"]["attempts"], 1);
    assert!(s["delivery"]["sent_at"].is_string());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_transient_refusal_is_retried_with_growing_delays_until_accepted() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.tempfail_next(2);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 1).await;
    assert_eq!(s["delivery"]["status"], "queued");
    assert_eq!(s["delivery"]["reason"], "smtp_rejected");
    assert_eq!(s["status"], "pending");
    // The next try is due about 1 s later (the test's clock moves only when told).
    app.clock.advance_secs(2);
    wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 2).await;
    app.clock.advance_secs(1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status(&app, &sk, &key).await["delivery"]["attempts"],
        2,
        "the third try came before its delay"
    );
    app.clock.advance_secs(5);
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(s["delivery"]["attempts"], 3);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// A relay that answers it is busy (421 at its greeting) is up and sending for others —
/// other instances, the tenant's other sessions — so a queued message it turned away is
/// tried again within 10 s, not after the schedule's 30 s and 2 min while the relay sits
/// idle (API.md §11.1: a relay that allows N sessions gets about N, and every async
/// message is delivered).
#[tokio::test]
async fn a_message_a_busy_relay_turned_away_is_tried_again_within_seconds() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    // No session at all: every greeting is 421.
    app.smtp.set_session_limit(Some(0));
    let key = mint_async(&app, &sk, "ada@example.com").await;
    for (tried, later) in [(1, 2), (2, 6)] {
        wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == tried).await;
        app.clock.advance_secs(later);
    }
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 3).await;
    assert_eq!(s["delivery"]["status"], "queued", "{s}");
    // The schedule's next delay is 30 s; a busy relay's is at most 10 s.
    app.clock.advance_secs(11);
    wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 4).await;
    app.smtp.set_session_limit(None);
    app.clock.advance_secs(11);
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(s["delivery"]["attempts"], 5, "{s}");
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// Retries go on until the code expires (API.md §10): where the schedule's next try (10 min
/// after the fifth) would come after the code's 10 minutes, one last try comes 30 s before
/// they end, and a relay that is back by then still delivers the code.
#[tokio::test]
async fn a_last_try_comes_before_expiry_where_the_schedule_would_pass_it() {
    let app = spawn_app_with(|s| s.otp.ttl_seconds = 600).await;
    let (_, sk) = app.tenant().await;
    app.smtp.tempfail_next(5);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    // Tries at about 0 s, 2 s, 8 s, 39 s and 160 s, each refused.
    for (tried, later) in [(1, 2), (2, 6), (3, 31), (4, 121)] {
        wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == tried).await;
        app.clock.advance_secs(later);
    }
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 5).await;
    assert_eq!(
        (&s["status"], &s["delivery"]["status"]),
        (&json!("pending"), &json!("queued")),
        "{s}"
    );
    // The last try is due at 570 s.
    app.clock.advance_secs(600 - 160 - 30 - 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&app, &sk, &key).await["delivery"]["attempts"], 5);
    app.clock.advance_secs(2);
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(s["delivery"]["attempts"], 6);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_code_and_the_older_one_stays_valid() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (older, code) = app.mint(&sk, "ada@example.com").await;
    app.smtp.set_mode(Mode::RejectRecipients);
    let newer = mint_async(&app, &sk, "ada@example.com").await;
    let s = wait_status(&app, &sk, &newer, |v| v["status"] == "failed").await;
    assert_eq!(s["delivery"]["status"], "failed");
    assert_eq!(s["delivery"]["reason"], "smtp_rejected");
    assert_eq!(s["delivery"]["attempts"], 1);
    let (st, body) = app.verify(&sk, &newer, "123456").await;
    assert_eq!(st, StatusCode::GONE);
    assert_eq!(body["code"], "otp_failed");
    app.smtp.set_mode(Mode::Normal);
    assert_eq!(app.verify(&sk, &older, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_async_delivery_gives_the_quota_back() {
    let app = spawn_app_with(|s| s.limits.recipient_max_sends = 1).await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::RejectRecipients);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    wait_status(&app, &sk, &key, |v| v["status"] == "failed").await;
    app.smtp.set_mode(Mode::Normal);
    // Nothing reached the relay: the one allowed send is still there.
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_queued_message_goes_out_after_a_restart_once_the_relay_is_back() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::Down);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    let s = wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 1).await;
    assert_eq!(s["delivery"]["reason"], "smtp_unreachable");
    // What to check, in words (API.md §18.8).
    let detail = s["delivery"]["detail"].as_str().unwrap();
    assert!(detail.contains("host and port"), "{detail}");
    let app = app.restart().await;
    app.smtp.set_mode(Mode::Normal);
    app.clock.advance_secs(2);
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_sync_code_reports_its_delivery() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "sent");
    // The message is there when 201 arrives.
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
    // The outcome read is never cached (API.md §17.8).
    let r = app
        .get(
            &format!("/v1/otp/{}", v["shareable_key"].as_str().unwrap()),
            &sk,
        )
        .await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let s = status(&app, &sk, v["shareable_key"].as_str().unwrap()).await;
    assert_eq!(s["delivery"]["mode"], "sync");
    assert_eq!(s["delivery"]["status"], "sent");
    assert_eq!(s["delivery"]["attempts"], 1);
    assert!(s["delivery"]["sent_at"].is_string());
    assert!(s["delivery"].get("reason").is_none());
}

#[tokio::test]
async fn the_request_overrides_the_tenant_mode_and_compat_is_always_sync() {
    let app = spawn_app().await;
    let (_, sk) = tenant_with(&app, json!({"delivery": "async"}), json!({})).await;
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "delivery": "sync"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "delivery": "soon"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // An OtpMint client of an async tenant still gets its key once the message left.
    let compat_key = "compat-secret-key-0123456789";
    let r = app
        .post(
            "/reg_secretkey",
            ADMIN,
            json!({"secretKey": compat_key, "smtp_host": "127.0.0.1", "smtp_port": app.smtp.port,
                   "smtp_mail": crate::smtp::SMTP_USER, "smtp_password": crate::smtp::SMTP_PASS}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .patch("/v1/tenant", compat_key, json!({"delivery": "async"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post(
            "/otp",
            "",
            json!({"mail": "bob@example.com", "secretKey": compat_key}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.smtp.count_to("bob@example.com"), 1);
}

#[tokio::test]
async fn an_exhausted_code_is_not_rewritten_as_superseded() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 2})).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    for _ in 0..2 {
        app.verify(&sk, &key, &wrong(&code)).await;
    }
    app.mint(&sk, "ada@example.com").await;
    let (st, body) = app.verify(&sk, &key, &code).await;
    assert_eq!(st, StatusCode::GONE);
    assert_eq!(body["code"], "attempts_exhausted");
    assert_eq!(status(&app, &sk, &key).await["status"], "exhausted");
}

#[tokio::test]
async fn a_queued_message_is_sealed_at_rest() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::Down);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 1).await;
    // The message (it holds the code) waits in the outbox, sealed with the data key.
    let bytes = app.stored_bytes();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"ada@example.com"), "not what the database holds");
    assert!(
        !has(b"verification code"),
        "a queued message is readable at rest"
    );
}

/// A relay that keeps the message at the final `.` and never answers: the sync mint answers
/// 201 `unknown` with the key, the code verifies, and nothing sends it again (API.md §19.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_relay_took_without_answering_is_unknown_valid_and_never_resent() {
    let app = spawn_app_with(|s| s.smtp.timeout_seconds = 2).await;
    app.smtp.set_mode(Mode::KeepAndStall);
    let (_, sk) = app.tenant().await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "unknown", "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let s = status(&app, &sk, &key).await;
    assert_eq!(
        (s["status"].as_str(), s["delivery"]["status"].as_str()),
        (Some("pending"), Some("unknown")),
        "{s}"
    );

    // Async: recorded unknown after one attempt; past every retry of the schedule, still
    // one copy at the relay.
    let queued = mint_async(&app, &sk, "bob@example.com").await;
    let s = wait_status(&app, &sk, &queued, |v| v["delivery"]["status"] == "unknown").await;
    assert_eq!(s["delivery"]["attempts"], 1, "{s}");
    for _ in 0..6 {
        app.clock.advance_secs(60);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
    assert_eq!(app.smtp.count_to("bob@example.com"), 1, "never sent again");
    let s = status(&app, &sk, &queued).await;
    assert_eq!(
        (
            s["delivery"]["status"].as_str(),
            s["delivery"]["attempts"].as_i64()
        ),
        (Some("unknown"), Some(1))
    );

    // Both codes are valid: the person may have them.
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let code = app.smtp.wait_for("bob@example.com", 1).await.code();
    assert_eq!(app.verify(&sk, &queued, &code).await.0, StatusCode::OK);

    // A resend is the way to send again, and it is answered the same way.
    app.smtp.set_mode(Mode::Normal);
    let (other, _) = app.mint(&sk, "cy@example.com").await;
    app.smtp.set_mode(Mode::KeepAndStall);
    let r = app
        .post(&format!("/v1/otp/{other}/resend"), &sk, json!({}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "unknown", "{v}");
    assert_eq!(app.smtp.count_to("cy@example.com"), 2);
}

/// A relay that keeps the message at the final `.` and closes the connection without a
/// word: as with no answer, the send is `unknown` (the person may have it), never sent
/// again, and the code verifies. Its reason says the relay was lost, not that it refused
/// the message, and its detail says the message may have arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_relay_took_before_dropping_the_connection_is_unknown_not_refused() {
    let app = spawn_app().await;
    app.smtp.set_mode(Mode::KeepAndDrop);
    let (_, sk) = app.tenant().await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], "unknown", "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();

    let queued = mint_async(&app, &sk, "bob@example.com").await;
    wait_status(&app, &sk, &queued, |v| v["delivery"]["status"] == "unknown").await;
    for _ in 0..3 {
        app.clock.advance_secs(60);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (who, key) in [("ada@example.com", &key), ("bob@example.com", &queued)] {
        let s = status(&app, &sk, key).await;
        let d = &s["delivery"];
        assert_eq!(
            (d["status"].as_str(), d["attempts"].as_i64()),
            (Some("unknown"), Some(1)),
            "{s}"
        );
        assert_eq!(d["reason"], "smtp_unreachable", "{s}");
        let detail = d["detail"].as_str().unwrap();
        assert!(
            detail.contains("may have arrived") && !detail.contains("refused"),
            "{detail}"
        );
        assert_eq!(app.smtp.count_to(who), 1, "never sent again");
        let code = app.smtp.wait_for(who, 1).await.code();
        assert_eq!(app.verify(&sk, key, &code).await.0, StatusCode::OK);
    }
}

/// Claim the one due message as `owner`, as if at `now`, with a lease of an hour; its key.
async fn claim_for_an_hour(app: &TestApp, owner: &str, now: i64) -> Vec<u8> {
    use otpmint::storage::{ClaimRequest, Fairness, Lease};
    let req = ClaimRequest {
        now,
        lease: Lease {
            owner: owner.to_string(),
            for_ms: 3_600_000,
        },
        fair: Fairness {
            limit: 10,
            caps: Default::default(),
            default_cap: 4,
            skip: Default::default(),
            running: Default::default(),
            after: None,
        },
        other_caps: Default::default(),
    };
    let claimed = app
        .services
        .core
        .db(move |s| s.claim_outbox(&req))
        .await
        .unwrap();
    assert_eq!(claimed.jobs.len(), 1, "the test's claim took the message");
    claimed.jobs[0].key_digest.clone()
}

/// A claim whose answer is lost after its commit (a timeout, a cut connection) leaves a
/// message leased to this process with nothing sending it. The next sweep gives it back
/// and it goes, rather than waiting out its lease to be recorded unknown, never sent.
#[tokio::test]
async fn a_message_claimed_by_an_answer_that_was_lost_is_given_back_and_sent() {
    use otpmint::clock::Clock;
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.tempfail_next(1);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 1).await;
    // Its retry is due about a second later on the app's clock. A claim made as this
    // process's sender, as if at that time, with a lease of an hour; its answer is dropped.
    let owner = app.services.delivery.lease_owner().to_string();
    claim_for_an_hour(&app, &owner, app.clock.now() + 3_000).await;
    app.clock.advance_secs(5);
    // The sweep (every 5 s) gives it back; the sender then sends it.
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let st = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(st["delivery"]["attempts"], 2, "{st}");
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// Stray leases are told from a process's own by what it sends or holds once the store has
/// read the leased rows, in the same transaction — not by a list read before (found by a
/// black-box soak: an async mint's row, held and stored between that earlier read and the
/// give-back, was given back while its send went on, and mailed twice). A row held by then
/// keeps its lease; one that is not is given back, and sent.
#[tokio::test]
async fn stray_leases_are_told_by_what_is_held_once_the_leased_rows_are_read() {
    use otpmint::clock::Clock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.tempfail_next(1);
    let key = mint_async(&app, &sk, "ada@example.com").await;
    wait_status(&app, &sk, &key, |v| v["delivery"]["attempts"] == 1).await;
    // Leased, as at its retry, to a process of the test's own (the app's sweep gives back
    // only its own process's strays), for an hour.
    let now = app.clock.now() + 3_000;
    let owner = "inst_test_stray";
    let digest = claim_for_an_hour(&app, owner, now).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let (a, d) = (Arc::clone(&asked), digest.clone());
    let released = app
        .services
        .core
        .db(move |s| {
            s.release_leases(
                owner,
                Arc::new(move || {
                    a.fetch_add(1, Ordering::SeqCst);
                    vec![d.clone()]
                }),
                now,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        (released, asked.load(Ordering::SeqCst)),
        (0, 1),
        "held when the rows were read: kept"
    );
    let released = app
        .services
        .core
        .db(move |s| s.release_leases(owner, Arc::new(Vec::new), now))
        .await
        .unwrap();
    assert_eq!(released, 1, "held nowhere: given back");
    app.clock.advance_secs(5);
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let st = wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(st["delivery"]["attempts"], 2, "{st}");
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
}

/// A write a request gave up on (it answered 503) that the database still commits after
/// all is undone; the request's own answer never acts on it (API.md §7: a mint whose code
/// cannot be stored answers 503 and sends nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_503_that_commits_after_all_is_undone() {
    use otpmint::domain::keys::TenantId;
    use otpmint::domain::suppression::{Suppression, SuppressionReason};
    use otpmint::service::ServiceError;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Calls are answered within twice database.timeout_seconds: 2 s.
    let app = spawn_app_with(|s| s.database.timeout_seconds = 1).await;
    let (id, sk) = app.tenant().await;
    let tenant = TenantId::parse(&id).unwrap();
    let entry = Suppression {
        recipient: "late@example.com".into(),
        reason: SuppressionReason::Manual,
        source: "api".into(),
        created_at: 0,
    };
    let undone = Arc::new(AtomicBool::new(false));
    let (t, u) = (tenant.clone(), Arc::clone(&undone));
    let answer = app
        .services
        .core
        .write_or_undo(
            move |s| {
                // The database answers after the bound: the write begun, then committed.
                std::thread::sleep(Duration::from_secs(3));
                s.suppress(&tenant, &entry)
            },
            move |_| {
                Some(move |s: &dyn otpmint::storage::Store| {
                    u.store(true, Ordering::SeqCst);
                    s.unsuppress(&t, &["late@example.com".to_string()])
                        .map(drop)
                })
            },
        )
        .await;
    assert!(
        matches!(answer, Err(ServiceError::Unavailable(_))),
        "{answer:?}"
    );
    for _ in 0..300 {
        if undone.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(undone.load(Ordering::SeqCst), "the late commit was undone");
    let (s, v) = body(app.get("/v1/tenant/suppressions", &sk).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("late@example.com"), "{v}");
}

/// The relay holds every message at DATA; ada's queued message takes a session and is held
/// there (with `delivery.max_sessions = 1`, the process's only one).
async fn ada_holds_the_session(app: &TestApp, ada: &str) {
    app.smtp.hold();
    mint_async(app, ada, "ada@example.com").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.smtp.in_data() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "ada's never reached DATA"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// API.md §19.2: a message waiting for a session whose lease ran out is given back by this
/// process's own sweep. While that first send still waits, this process never claims the
/// message again (a second send under the same owner would pass every check of the first):
/// it is sent once, when the session frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_given_back_while_its_send_waits_is_not_claimed_again_here() {
    let app = spawn_app_with(|s| {
        s.delivery.max_sessions = 1;
        s.smtp.timeout_seconds = 60;
    })
    .await;
    let url = app.settings.database.url.clone();
    let sql = |q: &'static str| crate::lifecycle::sql(&url, q);
    let (_, ada) = app.tenant().await;
    let (_, bob) = app.tenant().await;
    // Ada's message holds the process's only session; bob's is claimed and waits for it.
    ada_holds_the_session(&app, &ada).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let key = mint_async(&app, &bob, "bob@example.com").await;
    while sql("SELECT COUNT(*) FROM outbox WHERE unstarted = TRUE") != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's was never claimed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its lease runs out; the next sweep (every 5 s) gives it back, and it stays free.
    sql("UPDATE outbox SET lease_until = 0 WHERE unstarted = TRUE");
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    while sql("SELECT COUNT(*) FROM outbox WHERE leased_by IS NULL") != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's lease was never given back, or was claimed again at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sql("SELECT COUNT(*) FROM outbox WHERE leased_by IS NULL"),
        1,
        "claimed again while its first send waited"
    );
    app.smtp.release();
    let v = wait_status(&app, &bob, &key, |v| v["delivery"]["status"] == "sent").await;
    assert_eq!(v["delivery"]["attempts"], 1, "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.smtp.count_to("bob@example.com"), 1, "sent once");
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
}

/// A sync mint that waited for the process's one place (`delivery.max_sessions`) until its
/// deadline was nearly gone does not begin its send with a moment left, to end `unknown`:
/// like a place not found in time, it answers 502 `delivery_failed` (reason `smtp_timeout`,
/// `detail_code` `no_session_free`) and sends nothing
/// (docs/configuration.md). The code is not live; a mint after it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_mint_whose_wait_for_a_place_ate_its_time_sends_nothing() {
    let app = spawn_app_with(|s| {
        s.delivery.max_sessions = 1;
        s.smtp.timeout_seconds = 8;
    })
    .await;
    let (_, ada) = app.tenant().await;
    let (_, bob) = app.tenant().await;
    ada_holds_the_session(&app, &ada).await;
    // Bob's sync mint waits for the place; it frees with well under a quarter of bob's
    // 8 s left.
    let mint = app.post("/v1/otp", &bob, json!({"email": "bob@example.com"}));
    let free = async {
        tokio::time::sleep(Duration::from_millis(7300)).await;
        app.smtp.release();
    };
    let (r, ()) = tokio::join!(mint, free);
    let (s, v) = body(r).await;
    assert_eq!(
        (s, &v["code"], &v["reason"], &v["detail_code"]),
        (
            StatusCode::BAD_GATEWAY,
            &json!("delivery_failed"),
            &json!("smtp_timeout"),
            &json!("no_session_free")
        ),
        "{v}"
    );
    app.smtp.wait_for("ada@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.smtp.count_to("bob@example.com"), 0, "nothing sent");
    // With the place free, the next mint goes.
    let r = app
        .post("/v1/otp", &bob, json!({"email": "bob@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.smtp.wait_for("bob@example.com", 1).await;
}
