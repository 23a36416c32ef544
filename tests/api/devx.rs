//! For the tenant's developers (API.md §13): test recipients and test tenants whose mints
//! reach no relay (the real SMTP test server must receive nothing), resend under one key,
//! going live and back, and what a message that never left counts as. (Statistics:
//! devx_stats.rs; fixed codes' failure budget: devx_budget.rs.)

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use otpmint::testkit::smtp::Mode;

pub(crate) const DAY: i64 = 86_400;

/// RFC 3339 of the app's clock plus `secs`.
pub(crate) fn at(app: &TestApp, secs: i64) -> String {
    otpmint::clock::rfc3339(otpmint::clock::Clock::now(app.clock.as_ref()) + secs * 1000)
}

pub(crate) async fn put_list(app: &TestApp, sk: &str, list: Value) -> (StatusCode, Value) {
    body(
        app.put(
            "/v1/tenant/test-recipients",
            sk,
            json!({ "recipients": list }),
        )
        .await,
    )
    .await
}

pub(crate) async fn mint_json(app: &TestApp, sk: &str, email: &str) -> (StatusCode, Value) {
    body(app.post("/v1/otp", sk, json!({ "email": email })).await).await
}

pub(crate) async fn inbox(app: &TestApp, sk: &str, to: &str) -> Vec<Value> {
    let (s, v) = body(app.get(&format!("/v1/tenant/test-inbox?to={to}"), sk).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["messages"].as_array().unwrap().clone()
}

/// A test tenant made by the admin: (id, secret key).
async fn test_tenant(app: &TestApp) -> (String, String) {
    let (s, v) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "CI", "test": true}))
            .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::CREATED, &json!(true)), "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    )
}

/// The first run of 6 digits in a text.
pub(crate) fn code_in(text: &str) -> String {
    text.as_bytes()
        .windows(6)
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .unwrap_or_else(|| panic!("no code in {text}"))
}

pub(crate) async fn stats(app: &TestApp, path: &str, bearer: &str) -> Value {
    let (s, v) = body(app.get(path, bearer).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn a_test_recipient_signs_in_with_its_fixed_code_and_nothing_reaches_the_relay() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (s, v) = put_list(
        &app,
        &sk,
        json!([
            {"match": "Review@Acme.example", "code": "424242", "expires_at": at(&app, DAY)},
            {"match": "*@test.acme.example", "expires_at": at(&app, DAY)},
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["recipients"][0]["match"], "review@acme.example");
    assert_eq!(v["recipients"][0]["fixed_code"], true);
    assert!(
        !v.to_string().contains("424242"),
        "a fixed code is never shown: {v}"
    );

    let (s, m) = mint_json(&app, &sk, "review@acme.example").await;
    assert_eq!((s, &m["test"]), (StatusCode::CREATED, &json!(true)), "{m}");
    assert_eq!(m["delivery"], "test", "a test mint is never `sent`: {m}");
    let key = m["shareable_key"].as_str().unwrap();
    // The inbox has the message, without the fixed code.
    let msgs = inbox(&app, &sk, "review@acme.example").await;
    assert_eq!(msgs.len(), 1);
    let text = msgs[0]["text"].as_str().unwrap();
    assert!(
        text.contains("******") && !text.contains("424242"),
        "{text}"
    );
    assert_eq!(msgs[0]["to"], "review@acme.example");
    // Attempt limits as usual, then the fixed code verifies.
    let (s, v) = app.verify(&sk, key, "000000").await;
    assert_eq!(
        (s, v["attempts_remaining"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(4))
    );
    assert_eq!(app.verify(&sk, key, "424242").await.0, StatusCode::OK);

    // A wildcard entry: a fresh random code, in the inbox only.
    let (s, m) = mint_json(&app, &sk, "qa-1@test.acme.example").await;
    assert_eq!((s, &m["test"]), (StatusCode::CREATED, &json!(true)));
    let msgs = inbox(&app, &sk, "qa-1@test.acme.example").await;
    assert_eq!(msgs.len(), 1);
    let code = code_in(msgs[0]["text"].as_str().unwrap());
    let key = m["shareable_key"].as_str().unwrap();
    let status = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    assert_eq!(status["test"], true);
    assert_eq!(app.verify(&sk, key, &code).await.0, StatusCode::OK);

    // Anyone else is a normal mint through the relay, without `test`.
    let (_, other_code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(other_code.len(), 6);
    let (_, m) = mint_json(&app, &sk, "bob@example.com").await;
    assert!(m.get("test").is_none(), "{m}");
    app.smtp.wait_for("bob@example.com", 1).await;
    // Nothing addressed to a test recipient reached the relay.
    let to: Vec<String> = app
        .smtp
        .messages()
        .iter()
        .flat_map(|m| m.to.clone())
        .collect();
    assert!(
        to.iter().all(|t| !t.contains("acme.example")),
        "a test recipient's message reached the relay: {to:?}"
    );
    // Every change is audited; the inbox filter and the whole inbox.
    let audit = stats(&app, "/v1/tenant/audit", &sk).await;
    let events: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"test_recipients.put"), "{events:?}");
    let all = body(app.get("/v1/tenant/test-inbox", &sk).await).await.1;
    assert_eq!(all["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_test_recipients_are_refused_whole_and_expired_ones_are_inert() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let good =
        json!({"match": "review@acme.example", "code": "424242", "expires_at": at(&app, 60)});
    assert_eq!(put_list(&app, &sk, json!([good])).await.0, StatusCode::OK);
    for (bad, field) in [
        (
            json!({"match": "*@acme.example", "code": "424242", "expires_at": at(&app, DAY)}),
            "recipients[1].code",
        ),
        (
            json!({"match": "x@acme.example", "code": "4242", "expires_at": at(&app, DAY)}),
            "recipients[1].code",
        ),
        (
            json!({"match": "x@acme.example", "expires_at": at(&app, 91 * DAY)}),
            "recipients[1].expires_at",
        ),
        (
            json!({"match": "x@acme.example", "expires_at": at(&app, -1)}),
            "recipients[1].expires_at",
        ),
        (
            json!({"match": "*", "expires_at": at(&app, DAY)}),
            "recipients[1].match",
        ),
        (
            json!({"match": "not an address", "expires_at": at(&app, DAY)}),
            "recipients[1].match",
        ),
        (
            json!({"match": "review@acme.example", "expires_at": at(&app, DAY)}),
            "recipients[1].match",
        ),
        // Wildcards that could catch real people (API.md §17.8): another domain than the
        // sender's, a prefix that is not a sub-address, a range of real mobile numbers.
        (
            json!({"match": "*@gmail.com", "expires_at": at(&app, DAY)}),
            "real people",
        ),
        (
            json!({"match": "qa-*@gmail.com", "expires_at": at(&app, DAY)}),
            "real people",
        ),
        (
            json!({"match": "+4915*", "expires_at": at(&app, DAY)}),
            "real people",
        ),
    ] {
        let (s, v) = put_list(&app, &sk, json!([good, bad])).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v.to_string().contains(field), "{field} not named: {v}");
    }
    let (s, _) = put_list(&app, &sk, json!([{"match": "x@acme.example"}])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "expires_at is required");
    // The sender's domain and its subdomains, reserved names, sub-addresses of one mailbox
    // and fictional number ranges are fine.
    let fine: Vec<Value> = [
        "*@acme.example",
        "*@qa.acme.example",
        "*@ci.test",
        "qa+*@gmail.com",
        "+1555*",
    ]
    .iter()
    .map(|m| json!({"match": m, "expires_at": at(&app, DAY)}))
    .collect();
    let (s, v) = put_list(&app, &sk, json!(fine)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(put_list(&app, &sk, json!([good])).await.0, StatusCode::OK);
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"match": format!("u{i}@acme.example"), "expires_at": at(&app, DAY)}))
        .collect();
    assert_eq!(
        put_list(&app, &sk, json!(many)).await.0,
        StatusCode::BAD_REQUEST
    );
    // Nothing changed: the first list stands.
    let v = body(app.get("/v1/tenant/test-recipients", &sk).await)
        .await
        .1;
    assert_eq!(v["recipients"].as_array().unwrap().len(), 1);
    assert_eq!(v["recipients"][0]["expired"], false);

    // Once the entry expires it is inert: the mint goes to the relay.
    app.clock.advance_secs(61);
    let v = body(app.get("/v1/tenant/test-recipients", &sk).await)
        .await
        .1;
    assert_eq!(v["recipients"][0]["expired"], true);
    let (_, code) = app.mint(&sk, "review@acme.example").await;
    assert_ne!(code, "424242");

    // A sender on a public suffix (co.uk, github.io) or on a mailbox provider owns no
    // domain: the names under it are other people's (found by a black-box audit).
    for (from, pattern) in [
        ("qa@co.uk", "*@bbc.co.uk"),
        ("qa@co.uk", "*@co.uk"),
        ("qa@github.io", "*@victim.github.io"),
        ("qa@outlook.de", "*@outlook.de"),
    ] {
        let r = app
            .patch("/v1/tenant", &sk, json!({"smtp": {"from": from}}))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{from}");
        let entry = json!([{"match": pattern, "expires_at": at(&app, DAY)}]);
        let (s, v) = put_list(&app, &sk, entry).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{from}: {pattern}: {v}");
        assert!(v.to_string().contains("real people"), "{v}");
    }
    // A name registered under one is its owner's.
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"smtp": {"from": "qa@acme.co.uk"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let entry = json!([{"match": "*@ci.acme.co.uk", "expires_at": at(&app, DAY)}]);
    assert_eq!(put_list(&app, &sk, entry).await.0, StatusCode::OK);
}

/// A wildcard's scope (the sender's domain, API.md §17.8) holds at every mint, not only when
/// the list is saved: a `*@partner.org` saved while the sender was at partner.org
/// catches nobody once the sender is back at acme.example — partner.org's people get
/// their codes.
#[tokio::test]
async fn a_wildcard_out_of_the_senders_domain_since_saved_catches_nobody() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let from = |f: &'static str| {
        let (app, sk) = (&app, sk.clone());
        async move {
            let r = app
                .patch("/v1/tenant", &sk, json!({"smtp": {"from": f}}))
                .await;
            assert_eq!(r.status(), StatusCode::OK, "{f}");
        }
    };
    from("Acme <qa@partner.org>").await;
    let list = json!([{"match": "*@partner.org", "expires_at": at(&app, DAY)}]);
    assert_eq!(put_list(&app, &sk, list).await.0, StatusCode::OK);
    // In scope while the sender is at partner.org: caught.
    let (s, m) = mint_json(&app, &sk, "someone@partner.org").await;
    assert_eq!((s, &m["test"]), (StatusCode::CREATED, &json!(true)), "{m}");
    from("Acme <no-reply@acme.example>").await;
    let (s, m) = mint_json(&app, &sk, "real.person@partner.org").await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_ne!(m["test"], true, "{m}");
    app.smtp.wait_for("real.person@partner.org", 1).await;
    assert!(inbox(&app, &sk, "real.person@partner.org").await.is_empty());
}

/// The inbox filtered by a phone number: its `+` encoded (`%2B`) or written as is (which a
/// query decodes as a space) finds the same messages.
#[tokio::test]
async fn the_test_inbox_finds_a_number_with_its_plus_encoded_or_not() {
    let app = spawn_app().await;
    let (_, sk) = test_tenant(&app).await;
    app.allow_sms(&sk, &["US"]).await;
    let (s, m) = body(
        app.post("/v1/otp", &sk, json!({"phone": "+12025550123"}))
            .await,
    )
    .await;
    assert_eq!((s, &m["test"]), (StatusCode::CREATED, &json!(true)), "{m}");
    for to in ["%2B12025550123", "+12025550123"] {
        let msgs = inbox(&app, &sk, to).await;
        assert_eq!(msgs.len(), 1, "{to}");
        assert_eq!(msgs[0]["to"], "+12025550123", "{to}");
    }
    assert!(inbox(&app, &sk, "%2B12025550124").await.is_empty());
}

#[tokio::test]
async fn a_test_tenant_never_emails_anyone_and_its_keys_say_so() {
    let app = spawn_app().await;
    let (id, sk) = test_tenant(&app).await;
    assert!(sk.starts_with("sk_test_"), "{sk}");
    for email in ["a@example.com", "b@example.org"] {
        let (s, m) = mint_json(&app, &sk, email).await;
        assert_eq!((s, &m["test"]), (StatusCode::CREATED, &json!(true)), "{m}");
        let msgs = inbox(&app, &sk, email).await;
        assert_eq!(msgs.len(), 1);
        let code = code_in(msgs[0]["text"].as_str().unwrap());
        assert_eq!(
            app.verify(&sk, m["shareable_key"].as_str().unwrap(), &code)
                .await
                .0,
            StatusCode::OK
        );
    }
    assert!(
        app.smtp.messages().is_empty(),
        "a test tenant emailed someone"
    );
    // The tenant itself cannot leave test mode.
    let (s, _) = body(app.patch("/v1/tenant", &sk, json!({"test": false})).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = body(
        app.post(&format!("/v1/tenants/{id}/rotate-secret"), ADMIN, json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["secret_key"].as_str().unwrap().starts_with("sk_test_"));
    // A tenant without smtp may exist (API.md §15.3): its mints need another transport.
    let (s, x) = body(app.post("/v1/tenants", ADMIN, json!({"name": "X"})).await).await;
    assert_eq!((s, &x["smtp"]), (StatusCode::CREATED, &Value::Null), "{x}");
    let bare = x["secret_key"].as_str().unwrap().to_string();
    let (s, x) = body(
        app.post("/v1/otp", &bare, json!({"email": "a@example.com"}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &x["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("channel_not_configured")
        ),
        "{x}"
    );
    // With a relay given, it leaves test mode and mails through it.
    let sk_new = v["secret_key"].as_str().unwrap().to_string();
    let (s, v) = body(
        app.patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"test": false, "smtp": app.smtp_json()}),
        )
        .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::OK, &json!(false)), "{v}");
    // Its test key stopped (API.md §17.4); the live key shown once mails for real.
    assert_eq!(
        app.get("/v1/tenant", &sk_new).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let live = v["secret_key"].as_str().unwrap().to_string();
    let (_, code) = app.mint(&live, "c@example.com").await;
    assert_eq!(code.len(), 6);
}

/// A test tenant with no way to send may still be made live (API.md §17.4, §15.3): its
/// test key stops, the answer shows its live key once, and its mints answer 422
/// `channel_not_configured` — none goes to the test inbox — until it has a transport.
#[tokio::test]
async fn a_test_tenant_without_a_transport_goes_live_and_says_it_cannot_send() {
    let app = spawn_app().await;
    let (id, sk) = test_tenant(&app).await;
    let (s, v) = body(
        app.patch(&format!("/v1/tenants/{id}"), ADMIN, json!({"test": false}))
            .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::OK, &json!(false)), "{v}");
    let live = v["secret_key"].as_str().unwrap().to_string();
    assert!(
        live.starts_with("sk_") && !live.starts_with("sk_test_"),
        "{live}"
    );
    assert_eq!(
        app.get("/v1/tenant", &sk).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (s, m) = mint_json(&app, &live, "a@example.com").await;
    assert_eq!(
        (s, &m["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("channel_not_configured")
        ),
        "{m}"
    );
    let (s, v) = body(app.get("/v1/tenant/test-inbox", &live).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["messages"], json!([]), "{v}");
}

#[tokio::test]
async fn test_sends_have_their_own_hourly_limit() {
    let app = spawn_app_with(|s| {
        s.limits.test_sends_per_hour = 2;
        s.limits.tenant_max_sends_per_hour = 2;
    })
    .await;
    let (_, sk) = app.tenant().await;
    put_list(
        &app,
        &sk,
        json!([{"match": "*@test.example", "expires_at": at(&app, DAY)}]),
    )
    .await;
    for i in 0..2 {
        let (s, _) = mint_json(&app, &sk, &format!("t{i}@test.example")).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let r = app
        .post("/v1/otp", &sk, json!({"email": "t9@test.example"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    // They counted against no relay quota: two real sends still go.
    app.mint(&sk, "a@example.com").await;
    app.mint(&sk, "b@example.com").await;
    app.clock.advance_secs(3601);
    assert_eq!(
        mint_json(&app, &sk, "t9@test.example").await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_resent_key_verifies_every_code_it_was_sent_until_it_expires() {
    let app = spawn_app_with(|s| s.otp.max_resends = 2).await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 3})).await;
    let (key, first) = app.mint(&sk, "ada@example.com").await;
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["shareable_key"].as_str(), v["resends"].as_u64()),
        (Some(key.as_str()), Some(1))
    );
    assert_eq!(v["delivery"], "sent");
    let second = app.smtp.wait_for("ada@example.com", 2).await.code();
    let status = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    assert_eq!(status["resends"], 1);
    // The attempt budget is the key's, shared by its codes.
    let mut guess = wrong(&first);
    if guess == second {
        guess = wrong(&guess);
    }
    let (s, v) = app.verify(&sk, &key, &guess).await;
    assert_eq!(
        (s, v["attempts_remaining"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(2))
    );
    body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    app.smtp.wait_for("ada@example.com", 3).await;
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("resend_limit_reached"))
    );
    assert!(
        v["detail"].as_str().unwrap().contains("otp.max_resends"),
        "{v}"
    );
    // The late first message still works, once.
    assert_eq!(app.verify(&sk, &key, &first).await.0, StatusCode::OK);
    assert_eq!(app.verify(&sk, &key, &second).await.0, StatusCode::GONE);
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("otp_used"))
    );
    let (s, _) = body(
        app.post(
            "/v1/otp/otp_nosuchkey00000000000000000/resend",
            &sk,
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A resend answers the key's lifetime as its mint did, whatever fraction of a second the
/// mint came at (its expiry is cut to the whole second below).
#[tokio::test]
async fn a_resend_answers_the_lifetime_its_mint_answered() {
    let app = spawn_app_with(|s| s.limits.resend_cooldown_seconds = 0).await;
    let (_, sk) = app.tenant().await;
    // The mint at 700 ms past a second: its expiry is cut by 700 ms.
    let now = otpmint::clock::Clock::now(app.clock.as_ref());
    app.clock
        .advance_millis((1700 - now.rem_euclid(1000)) % 1000);
    let (s, minted) = body(
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{minted}");
    assert_eq!(minted["ttl_seconds"], 600, "{minted}");
    let key = minted["shareable_key"].as_str().unwrap();
    let (s, resent) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{resent}");
    assert_eq!(resent["ttl_seconds"], minted["ttl_seconds"], "{resent}");
    assert_eq!(resent["expires_at"], minted["expires_at"], "{resent}");
}

#[tokio::test]
async fn a_resend_keeps_the_expiry_honours_the_cooldown_and_a_failed_one_breaks_nothing() {
    let app = spawn_app_with(|s| s.limits.resend_cooldown_seconds = 30).await;
    let (_, sk) = app.tenant().await;
    let (key, first) = app.mint(&sk, "ada@example.com").await;
    let minted = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    let r = app
        .post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    app.clock.advance_secs(31);
    // The relay turns the resent message away: 502, and the first code still verifies.
    app.smtp.set_mode(Mode::RejectRecipients);
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("delivery_failed")),
        "{v}"
    );
    app.smtp.set_mode(Mode::Normal);
    let status = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    assert_eq!(status["status"], "pending", "{status}");
    assert_eq!(
        status["expires_at"], minted["expires_at"],
        "the expiry is the key's"
    );
    app.clock.advance_secs(31);
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["expires_at"], minted["expires_at"]);
    assert_eq!(app.verify(&sk, &key, &first).await.0, StatusCode::OK);
    // An expired key is gone.
    let (key, _) = app.mint(&sk, "bob@example.com").await;
    app.clock.advance_secs(601);
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("otp_expired"))
    );
}

/// A key minted for `qa@test.example`, a test recipient: its resends go to the test inbox.
async fn test_key(app: &TestApp, sk: &str) -> String {
    put_list(
        app,
        sk,
        json!([{"match": "*@test.example", "expires_at": at(app, DAY)}]),
    )
    .await;
    let (_, m) = mint_json(app, sk, "qa@test.example").await;
    m["shareable_key"].as_str().unwrap_or_default().to_string()
}

/// Resends of one key at once: each answers the count as its own change wrote it (1, 2,
/// 3 — never one number twice), the limit holds, and GET agrees with the last (API.md
/// §13.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resends_each_answer_their_own_count() {
    let app = spawn_app_with(|s| s.limits.resend_cooldown_seconds = 0).await;
    let (_, sk) = app.tenant().await;
    let key = &test_key(&app, &sk).await;
    let path = format!("/v1/otp/{key}/resend");
    let resend = || async { body(app.post(&path, &sk, json!({})).await).await };
    let answers = futures_util::future::join_all((0..4).map(|_| resend())).await;
    let mut counts: Vec<u64> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, v)| v["resends"].as_u64().unwrap_or(0))
        .collect();
    counts.sort_unstable();
    let expected: Vec<u64> = (1..=counts.len() as u64).collect();
    assert_eq!(counts, expected, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, v)| *s == StatusCode::CREATED || v["code"] == "resend_limit_reached"),
        "{answers:?}"
    );
    let (_, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_eq!(v["resends"].as_u64(), counts.last().copied(), "{v}");
}

#[tokio::test]
async fn a_test_key_is_resent_to_the_inbox() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let key = &test_key(&app, &sk).await;
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::CREATED, &json!(true)), "{v}");
    let msgs = inbox(&app, &sk, "qa@test.example").await;
    assert_eq!(msgs.len(), 2);
    let (newest, oldest) = (
        code_in(msgs[0]["text"].as_str().unwrap()),
        code_in(msgs[1]["text"].as_str().unwrap()),
    );
    assert!(app.smtp.messages().is_empty());
    assert_eq!(
        app.verify(&sk, key, &oldest).await.0,
        StatusCode::OK,
        "{newest} {oldest}"
    );
}

#[tokio::test]
async fn a_tenant_made_a_test_tenant_sends_nothing_more_until_it_leaves_test_mode() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let (sent_key, first) = app.mint(&sk, "ada@example.com").await;
    // A message queued while the relay is down…
    app.smtp.set_mode(Mode::Down);
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "bob@example.com", "delivery": "async"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let queued: Value = r.json().await.unwrap();
    let queued = queued["shareable_key"].as_str().unwrap().to_string();
    // (Its first attempt ends and is recorded: a send under way when the tenant changes
    // may still finish.)
    first_attempt_recorded(&app, &sk, &queued).await;
    // …then the admin makes the tenant a test tenant, and the relay is back.
    let (s, v) = body(
        app.patch(&format!("/v1/tenants/{id}"), ADMIN, json!({"test": true}))
            .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::OK, &json!(true)), "{v}");
    // Its key starts `sk_test_` (API.md §13.2): a new one, shown once; the live one the
    // backend holds keeps working.
    let test_sk = v["secret_key"].as_str().unwrap().to_string();
    assert!(test_sk.starts_with("sk_test_"), "{v}");
    assert_eq!(
        app.get("/v1/tenant", &test_sk).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.get("/v1/tenant", &sk).await.status(), StatusCode::OK);
    app.smtp.set_mode(Mode::Normal);
    app.clock.advance_secs(60);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        app.smtp.count_to("bob@example.com"),
        0,
        "a test tenant sends nothing"
    );
    // A resend of a key minted before goes to the test inbox, and both codes verify.
    let (s, v) = body(
        app.post(&format!("/v1/otp/{sent_key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::CREATED, &json!(true)), "{v}");
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
    let msgs = inbox(&app, &sk, "ada@example.com").await;
    assert_eq!(msgs.len(), 1);
    let second = code_in(msgs[0]["text"].as_str().unwrap());
    assert_ne!(second, first);
    // Out of test mode (its relay passes the host policy again), the queued message goes.
    let (s, v) = body(
        app.patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"test": false, "smtp": app.smtp_json()}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Live again: its `sk_test_` key stops, and a new live key is shown once (§17.4).
    assert!(v["secret_key"].as_str().unwrap().starts_with("sk_"), "{v}");
    assert!(
        !v["secret_key"].as_str().unwrap().starts_with("sk_test_"),
        "{v}"
    );
    assert_eq!(
        app.get("/v1/tenant", &test_sk).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance_secs(60);
    let msg = app.smtp.wait_for("bob@example.com", 1).await;
    assert_eq!(
        app.verify(&sk, &queued, &msg.code()).await.0,
        StatusCode::OK
    );
    assert_eq!(app.verify(&sk, &sent_key, &first).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_left_counts_failed_and_expired_whichever_pass_comes_first() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    // Two messages wait for a disabled tenant while their codes expire.
    // (The relay is down, so nothing leaves; each first attempt is recorded before the
    // tenant is disabled, so no send is under way either.)
    app.smtp.set_mode(Mode::Down);
    for email in ["a@example.com", "b@example.com"] {
        let r = app
            .post("/v1/otp", &sk, json!({"email": email, "delivery": "async"}))
            .await;
        let v: Value = r.json().await.unwrap();
        let key = v["shareable_key"].as_str().unwrap().to_string();
        first_attempt_recorded(&app, &sk, &key).await;
    }
    let path = format!("/v1/tenants/{id}");
    let patch = |enabled: bool| app.patch(&path, ADMIN, json!({ "enabled": enabled }));
    assert_eq!(patch(false).await.status(), StatusCode::OK);
    app.smtp.set_mode(Mode::Normal);
    let expected_failed = 2;
    app.clock.advance_secs(700);
    // The expiry pass first for both; the sweep (every 5 s) then fails their deliveries.
    assert_eq!(app.services.admin.count_expired().await.unwrap() as i64, 2);
    let totals = || async {
        let v = stats(&app, &format!("/v1/tenants/{id}/stats"), ADMIN).await;
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .fold([0i64; 6], |mut acc, r| {
                for (a, b) in acc.iter_mut().zip(counts(r)) {
                    *a += b;
                }
                acc
            })
    };
    for _ in 0..100 {
        if totals().await[2] == expected_failed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t = totals().await;
    assert_eq!((t[2], t[4]), (expected_failed, 2), "{t:?}");
    // Two more, the other way round: the sweep fails them first, the pass counts them after.
    let mut more = Vec::new();
    assert_eq!(patch(true).await.status(), StatusCode::OK);
    app.smtp.set_mode(Mode::Down);
    for email in ["c@example.com", "d@example.com"] {
        let r = app
            .post("/v1/otp", &sk, json!({"email": email, "delivery": "async"}))
            .await;
        let v: Value = r.json().await.unwrap();
        more.push(v["shareable_key"].as_str().unwrap().to_string());
    }
    app.clock.advance_secs(700);
    for key in &more {
        for _ in 0..100 {
            let v = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
            if v["status"] == "failed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert_eq!(app.services.admin.count_expired().await.unwrap(), 2);
    let t = totals().await;
    assert_eq!((t[2], t[4]), (expected_failed + 2, 4), "{t:?}");
}

/// A test tenant made live (API.md §17.4): its `sk_test_` keys stop in that change (a grace
/// period of an earlier rotation included), and the answer shows a new `sk_` key once.
#[tokio::test]
async fn a_test_tenant_made_live_stops_its_test_keys_and_shows_a_live_key_once() {
    let app = spawn_app().await;
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "CI", "test": true, "smtp": app.smtp_json()}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let first = v["secret_key"].as_str().unwrap().to_string();
    // A rotation with a grace period: both test keys work for now.
    let (_, r) = body(
        app.post(
            &format!("/v1/tenants/{id}/rotate-secret"),
            ADMIN,
            json!({"grace_seconds": 3600}),
        )
        .await,
    )
    .await;
    let second = r["secret_key"].as_str().unwrap().to_string();
    for sk in [&first, &second] {
        assert_eq!(app.get("/v1/tenant", sk).await.status(), StatusCode::OK);
    }
    let (s, v) = body(
        app.patch(&format!("/v1/tenants/{id}"), ADMIN, json!({"test": false}))
            .await,
    )
    .await;
    assert_eq!((s, &v["test"]), (StatusCode::OK, &json!(false)), "{v}");
    let live = v["secret_key"]
        .as_str()
        .expect("a new key, shown once")
        .to_string();
    assert!(
        live.starts_with("sk_") && !live.starts_with("sk_test_"),
        "{live}"
    );
    for sk in [&first, &second] {
        assert_eq!(
            app.get("/v1/tenant", sk).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The live key sends for real.
    let (key, code) = app.mint(&live, "ada@example.com").await;
    assert_eq!(app.verify(&live, &key, &code).await.0, StatusCode::OK);
    // Another change shows no key; neither does GET.
    let (s, v) = body(
        app.patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"test": false, "name": "CI 2"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("secret_key").is_none(), "{v}");
    let (_, v) = body(app.get(&format!("/v1/tenants/{id}"), ADMIN).await).await;
    assert!(v.get("secret_key").is_none(), "{v}");
    assert_eq!(app.get("/v1/tenant", &live).await.status(), StatusCode::OK);
}

/// A date alone in `to` means the end of that day, in `from` its start (API.md §17.8): by
/// hour, `from=D&to=D` covers the whole of day D.
#[tokio::test]
async fn a_date_only_stats_range_covers_whole_days() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    // Past 02:00 UTC, so the mint is not in the day's first hour.
    let now = otpmint::clock::Clock::now(app.clock.as_ref());
    let into_day = now.rem_euclid(86_400_000);
    if into_day < 2 * 3_600_000 {
        app.clock
            .advance_secs((2 * 3_600_000 - into_day) / 1000 + 1);
    }
    app.mint(&sk, "ada@example.com").await;
    let day =
        otpmint::clock::rfc3339(otpmint::clock::Clock::now(app.clock.as_ref()))[..10].to_string();
    let v = stats(
        &app,
        &format!("/v1/tenant/stats?granularity=hour&from={day}&to={day}"),
        &sk,
    )
    .await;
    let minted: i64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["minted"].as_i64().unwrap())
        .sum();
    assert_eq!(minted, 1, "{v}");
    // A date is written as YYYY-MM-DD and nothing else (a one-day range: only the form
    // can be refused).
    for from in ["2026-1-5", "%2B2026-01-05", "%202026-01-05"] {
        let r = app
            .get(&format!("/v1/tenant/stats?from={from}&to=2026-01-06"), &sk)
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{from}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["field"], "from", "{v}");
    }
    let r = app
        .get("/v1/tenant/stats?from=2026-01-05&to=2026-01-06", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The answer's `to` ends `to`'s period: the last day whose end RFC 3339 can write is
    // 9999-12-30 (found by the differential audit: `+10000-01-01T00:00:00Z` was answered).
    let v = stats(&app, "/v1/tenant/stats?from=9999-12-01&to=9999-12-30", &sk).await;
    assert_eq!(v["to"], "9999-12-31T00:00:00Z", "{v}");
    let r = app
        .get("/v1/tenant/stats?from=9999-12-01&to=9999-12-31", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["field"], "to", "{v}");
}

/// One row's numbers.
pub(crate) fn counts(row: &Value) -> [i64; 6] {
    [
        "minted",
        "sent",
        "failed",
        "verified",
        "expired_unverified",
        "test",
    ]
    .map(|k| row[k].as_i64().unwrap_or_else(|| panic!("{k} in {row}")))
}

/// Wait until a queued message's first attempt has ended and been recorded.
pub(crate) async fn first_attempt_recorded(app: &TestApp, sk: &str, key: &str) {
    for _ in 0..200 {
        let v = body(app.get(&format!("/v1/otp/{key}"), sk).await).await.1;
        if v["delivery"]["attempts"].as_i64().unwrap() >= 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the first attempt of {key} was never recorded");
}
