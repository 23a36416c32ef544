//! Providers per channel (API.md §15.2-§15.3): each provider's API faked on loopback over
//! HTTPS (a CA made at test time), checking the request as the provider documents it; a
//! code sent through each, read from what the fake took, and verified; failover from a
//! refused relay; answers mapped to reasons and the provider's own codes; settings shown
//! without secrets; one primary per channel.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::Mode;
use otpmint::testkit::http::HttpReceiver;
use otpmint::testkit::providers::FakeProvider;

pub(crate) const KINDS: [&str; 7] = [
    "postmark", "resend", "sendgrid", "mailgun", "ses", "twilio", "vonage",
];

/// An app whose providers' base URLs point at these fakes (the operator's override) and
/// whose outbound HTTP trusts their CAs and may reach loopback.
pub(crate) async fn app_with(fakes: &[&FakeProvider], extra: &[&HttpReceiver]) -> TestApp {
    let urls: Vec<(String, String)> = fakes
        .iter()
        .map(|f| (f.kind.to_string(), f.base_url()))
        .collect();
    let cas: Vec<_> = fakes
        .iter()
        .map(|f| f.rx.ca_path.clone())
        .chain(extra.iter().map(|r| r.ca_path.clone()))
        .collect();
    spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = cas;
        s.delivery.http_timeout_seconds = 3;
        s.delivery.provider_base_urls = urls.into_iter().collect();
    })
    .await
}

async fn put_provider(app: &TestApp, sk: &str, fake: &FakeProvider, use_as: &str) -> Value {
    let (s, v) = body(
        app.put(
            &format!("/v1/tenant/providers/{}", fake.channel()),
            sk,
            fake.settings(use_as),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}: {v}", fake.kind);
    v
}

/// A recipient of the fake's channel.
fn recipient(fake: &FakeProvider, i: usize) -> Value {
    if fake.channel() == "sms" {
        json!({"phone": format!("+4915112345{i:03}")})
    } else {
        json!({"email": format!("user{i}@example.com")})
    }
}

async fn status_of(app: &TestApp, sk: &str, key: &str) -> Value {
    body(app.get(&format!("/v1/otp/{key}"), sk).await).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_sent_through_each_provider_verifies_sync_and_async() {
    let mut fakes = Vec::new();
    for k in KINDS {
        fakes.push(FakeProvider::start(k).await);
    }
    let refs: Vec<&FakeProvider> = fakes.iter().collect();
    let app = app_with(&refs, &[]).await;
    for fake in &fakes {
        // A tenant with no relay at all: the provider is its transport for the channel.
        let (s, t) = body(
            app.post("/v1/tenants", ADMIN, json!({"name": fake.kind}))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let sk = t["secret_key"].as_str().unwrap().to_string();
        app.allow_sms(&sk, &["DE"]).await;
        put_provider(&app, &sk, fake, "primary").await;
        for (i, mode) in ["sync", "async"].into_iter().enumerate() {
            let mut req = recipient(fake, i);
            req["delivery"] = json!(mode);
            if mode == "async" {
                // German text ("für", "Gültig"): GSM, so Vonage takes it as `type=text`.
                req["locale"] = json!("de");
            }
            let (s, v) = body(app.post("/v1/otp", &sk, req.clone()).await).await;
            let want = if mode == "sync" {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            assert_eq!(s, want, "{} {mode}: {v}", fake.kind);
            let key = v["shareable_key"].as_str().unwrap().to_string();
            let taken = fake.wait_taken(i + 1).await;
            let msg = &taken[i];
            let to = req
                .get("email")
                .or(req.get("phone"))
                .and_then(Value::as_str)
                .unwrap();
            assert_eq!(msg.to, to, "{}", fake.kind);
            if fake.channel() == "email" {
                assert!(msg.subject.is_some(), "{}", fake.kind);
                assert!(msg.from.contains("no-reply@acme.example"), "{}", fake.kind);
                // Auto-responders are told not to answer, as over SMTP (API.md §8).
                assert_eq!(
                    msg.auto_submitted.as_deref(),
                    Some("auto-generated"),
                    "{}",
                    fake.kind
                );
            }
            // The record names the provider and keeps its message id.
            let mut st = status_of(&app, &sk, &key).await;
            for _ in 0..100 {
                if st["delivery"]["status"] == "sent" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                st = status_of(&app, &sk, &key).await;
            }
            assert_eq!(
                st["delivery"]["transport"],
                json!(format!("provider:{}", fake.kind)),
                "{st}"
            );
            let id = st["delivery"]["provider_message_id"].as_str().unwrap();
            assert!(id.contains(&msg.id), "{}: {id} vs {}", fake.kind, msg.id);
            let (s, v) = app.verify(&sk, &key, &msg.code()).await;
            assert_eq!(s, StatusCode::OK, "{} {mode}: {v}", fake.kind);
        }
        if fake.channel() == "email" {
            // An internationalised sender's domain goes out in its ASCII form, as over SMTP.
            let mut settings = fake.settings("primary");
            settings["from"] = json!("Äcme Straße <no-reply@bücher.example>");
            let r = app
                .put(
                    &format!("/v1/tenant/providers/{}", fake.channel()),
                    &sk,
                    settings,
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK, "{}", fake.kind);
            let (s, v) = body(app.post("/v1/otp", &sk, recipient(fake, 7)).await).await;
            assert_eq!(s, StatusCode::CREATED, "{}: {v}", fake.kind);
            let taken = fake.wait_taken(3).await;
            assert!(
                taken[2].from.contains("no-reply@xn--bcher-kva.example"),
                "{}: {}",
                fake.kind,
                taken[2].from
            );
        }
        assert!(
            fake.problems().is_empty(),
            "{}: {:?}",
            fake.kind,
            fake.problems()
        );
    }
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_settings_are_checked_shown_without_secrets_and_removed() {
    let fakes = [
        FakeProvider::start("ses").await,
        FakeProvider::start("twilio").await,
    ];
    let app = app_with(&fakes.iter().collect::<Vec<_>>(), &[]).await;
    let (id, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    let path = "/v1/tenant/providers/email";
    assert_eq!(app.get(path, &sk).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/v1/tenant/providers/fax", &sk).await.status(),
        StatusCode::NOT_FOUND
    );
    let ses = &fakes[0];
    for (bad, field) in [
        (json!({"kind": "twilio"}), "kind"),
        (json!({"kind": "carrier-pigeon"}), "kind"),
        (
            {
                let mut v = ses.settings("primary");
                v["region"] = json!("Mars");
                v
            },
            "region",
        ),
        // A key pasted with typographic quotes could never go out in a request.
        (
            {
                let mut v = ses.settings("primary");
                v["secret_access_key"] = json!("\u{201c}wJalrXUtnFEMI\u{201d}");
                v
            },
            "secret_access_key",
        ),
        (
            {
                let mut v = ses.settings("primary");
                v.as_object_mut().unwrap().remove("secret_access_key");
                v
            },
            "secret_access_key",
        ),
        (
            {
                let mut v = ses.settings("primary");
                v["api_key"] = json!("x");
                v
            },
            "api_key",
        ),
        // Mailgun's region is no guess (API.md §15.2): an eu account sent through the us
        // host fails.
        (
            json!({"kind": "mailgun", "use": "primary", "api_key": "key-0123456789abcdef",
                   "domain": "mg.acme.example", "from": "no-reply@acme.example"}),
            "region",
        ),
        (
            {
                let mut v = ses.settings("sometimes");
                v["use"] = json!("sometimes");
                v
            },
            "use",
        ),
    ] {
        let (s, v) = body(app.put(path, &sk, bad.clone()).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(
            v["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {v}"
        );
    }
    // A tenant can never point a provider elsewhere.
    let mut elsewhere = ses.settings("primary");
    elsewhere["base_url"] = json!("https://127.0.0.1:1");
    assert_eq!(
        app.put(path, &sk, elsewhere).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Stored: shown without secrets, by the tenant and by the admin.
    let v = put_provider(&app, &sk, ses, "fallback").await;
    let (_, got) = body(app.get(path, &sk).await).await;
    let (_, by_admin) = body(
        app.get(&format!("/v1/tenants/{id}/providers/email"), ADMIN)
            .await,
    )
    .await;
    for shown in [&v, &got, &by_admin] {
        assert_eq!(shown["kind"], "ses", "{shown}");
        assert_eq!(shown["use"], "fallback", "{shown}");
        assert_eq!(shown["region"], "eu-west-1", "{shown}");
        assert!(shown.get("secret_access_key").is_none(), "{shown}");
        assert!(
            !shown
                .to_string()
                .contains(otpmint::testkit::providers::SES_SECRET),
            "{shown}"
        );
    }
    // Sealed at rest, and not in any answer of the tenant either.
    assert!(!contains(
        &app.stored_bytes(),
        otpmint::testkit::providers::SES_SECRET.as_bytes()
    ));
    let (_, tenant) = body(app.get("/v1/tenant", &sk).await).await;
    assert!(!tenant
        .to_string()
        .contains(otpmint::testkit::providers::SES_SECRET));
    // The admin sets the SMS provider; the tenant removes the email one.
    let twilio = &fakes[1];
    let (s, v) = body(
        app.put(
            &format!("/v1/tenants/{id}/providers/sms"),
            ADMIN,
            twilio.settings("primary"),
        )
        .await,
    )
    .await;
    assert_eq!((s, &v["kind"]), (StatusCode::OK, &json!("twilio")), "{v}");
    assert_eq!(app.delete(path, &sk).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(path, &sk).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(path, &sk).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/v1/tenant/providers/sms", &sk).await.status(),
        StatusCode::OK
    );
    // Another tenant's key sees nothing of it.
    let (_, other) = app.tenant().await;
    assert_eq!(
        app.get("/v1/tenant/providers/sms", &other).await.status(),
        StatusCode::NOT_FOUND
    );
    // Saving sent nothing.
    assert!(ses.rx.requests().is_empty() && twilio.rx.requests().is_empty());
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_has_one_primary_transport() {
    let rx = HttpReceiver::start(true).await;
    let fake = FakeProvider::start("postmark").await;
    let sms = FakeProvider::start("vonage").await;
    let app = app_with(&[&fake, &sms], &[&rx]).await;
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    let (s, _) = body(
        app.put(
            "/v1/tenant/transport/http",
            &sk,
            json!({"url": rx.url("/send"), "use": "primary"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for f in [&fake, &sms] {
        let (s, v) = body(
            app.put(
                &format!("/v1/tenant/providers/{}", f.channel()),
                &sk,
                f.settings("primary"),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, &v["code"]),
            (StatusCode::CONFLICT, &json!("transport_conflict")),
            "{v}"
        );
    }
    // As a fallback it is fine; then the endpoint cannot become primary again while the
    // provider is primary.
    put_provider(&app, &sk, &fake, "fallback").await;
    app.delete("/v1/tenant/transport/http", &sk).await;
    put_provider(&app, &sk, &fake, "primary").await;
    let (s, v) = body(
        app.put(
            "/v1/tenant/transport/http",
            &sk,
            json!({"url": rx.url("/send"), "use": "primary"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("transport_conflict")),
        "{v}"
    );
    // The provider is primary: the relay is not used for email.
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    fake.wait_taken(1).await;
    assert!(app.smtp.messages().is_empty());
    // Made primary at the same moment, one of the two wins, never both.
    for round in 0..10 {
        app.delete("/v1/tenant/transport/http", &sk).await;
        put_provider(&app, &sk, &fake, "fallback").await;
        let http = json!({"url": rx.url("/send"), "use": "primary"});
        let (a, b) = tokio::join!(
            app.put("/v1/tenant/transport/http", &sk, http),
            app.put("/v1/tenant/providers/email", &sk, fake.settings("primary")),
        );
        let won = [a.status(), b.status()]
            .iter()
            .filter(|s| **s == StatusCode::OK)
            .count();
        assert_eq!(won, 1, "round {round}: {} {}", a.status(), b.status());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_relay_fails_over_to_the_email_provider_in_the_same_request() {
    let fake = FakeProvider::start("resend").await;
    let app = app_with(&[&fake], &[]).await;
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    put_provider(&app, &sk, &fake, "fallback").await;
    // The relay works: it takes the message, the provider stays idle.
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert!(fake.taken().is_empty());
    // The relay is down: the provider takes it within the same request.
    app.smtp.set_mode(Mode::Down);
    for mode in ["sync", "async"] {
        let before = fake.taken().len();
        let (s, v) = body(
            app.post(
                "/v1/otp",
                &sk,
                json!({"email": "bob@example.com", "delivery": mode}),
            )
            .await,
        )
        .await;
        assert!(s.is_success(), "{mode}: {v}");
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let taken = fake.wait_taken(before + 1).await;
        let mut st = status_of(&app, &sk, &key).await;
        for _ in 0..100 {
            if st["delivery"]["status"] == "sent" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            st = status_of(&app, &sk, &key).await;
        }
        assert_eq!(st["delivery"]["transport"], "provider:resend", "{st}");
        let (s, _) = app.verify(&sk, &key, &taken[before].code()).await;
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_answers_become_reasons_with_the_providers_own_codes() {
    let postmark = FakeProvider::start("postmark").await;
    let twilio = FakeProvider::start("twilio").await;
    let vonage = FakeProvider::start("vonage").await;
    let ses = FakeProvider::start("ses").await;
    let app = app_with(&[&postmark, &twilio, &vonage, &ses], &[]).await;
    let new_tenant = || async {
        let (s, t) = body(app.post("/v1/tenants", ADMIN, json!({"name": "P"})).await).await;
        assert_eq!(s, StatusCode::CREATED);
        t["secret_key"].as_str().unwrap().to_string()
    };
    let mint = |sk: String, req: Value| {
        let app = &app;
        async move { body(app.post("/v1/otp", &sk, req).await).await }
    };
    let cases: [(&FakeProvider, u16, &str, &str); 6] = [
        (&postmark, 401, "provider_auth", "10"),
        (&postmark, 422, "provider_rejected", "300"),
        (&twilio, 400, "provider_rejected", "21211"),
        (&vonage, 401, "provider_auth", "4"),
        (&vonage, 400, "provider_rejected", "3"),
        (&ses, 400, "provider_rejected", "MessageRejected"),
    ];
    for (i, (fake, status, reason, code)) in cases.into_iter().enumerate() {
        let sk = new_tenant().await;
        app.allow_sms(&sk, &["DE"]).await;
        put_provider(&app, &sk, fake, "primary").await;
        // Sync: 502 with the reason and the provider's own code, no provider text.
        fake.fail_next(&[status]);
        let (s, v) = mint(sk.clone(), recipient(fake, i)).await;
        assert_eq!(
            (s, &v["reason"], &v["detail_code"]),
            (StatusCode::BAD_GATEWAY, &json!(reason), &json!(code)),
            "{} {status}: {v}",
            fake.kind
        );
        assert!(!v.to_string().contains("refused"), "no provider text: {v}");
        // Async: the record keeps the provider's own code (never its body).
        fake.fail_next(&[status]);
        let mut req = recipient(fake, i + 10);
        req["delivery"] = json!("async");
        let (s, v) = mint(sk.clone(), req).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let mut st = status_of(&app, &sk, &key).await;
        for _ in 0..200 {
            if st["delivery"]["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            st = status_of(&app, &sk, &key).await;
        }
        assert_eq!(
            (
                &st["status"],
                &st["delivery"]["reason"],
                &st["delivery"]["detail_code"]
            ),
            (&json!("failed"), &json!(reason), &json!(code)),
            "{} {status}: {st}",
            fake.kind
        );
    }
    // 429 and 5xx are transient: an async message is tried again (Retry-After: 1 s) and
    // delivered.
    let sk = new_tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    put_provider(&app, &sk, &postmark, "primary").await;
    let before = postmark.taken().len();
    postmark.fail_next(&[429, 503]);
    let (s, v) = mint(
        sk.clone(),
        json!({"email": "later@example.com", "delivery": "async"}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    // The retries come when due: the clock is the app's own.
    for _ in 0..200 {
        if postmark.taken().len() > before {
            break;
        }
        app.clock.advance_secs(6);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = postmark.wait_taken(before + 1).await;
    assert_eq!(
        app.verify(&sk, &key, &taken[before].code()).await.0,
        StatusCode::OK
    );
    let st = status_of(&app, &sk, &key).await;
    assert!(st["delivery"]["attempts"].as_u64().unwrap() >= 3, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_route_sends_one_message_through_the_provider() {
    let fake = FakeProvider::start("sendgrid").await;
    let sms = FakeProvider::start("twilio").await;
    let app = app_with(&[&fake, &sms], &[]).await;
    let (id, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    let path = "/v1/tenant/providers/email/test";
    assert_eq!(
        app.post(path, &sk, json!({"to": "ada@example.com"}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    put_provider(&app, &sk, &fake, "fallback").await;
    let (s, v) = body(app.post(path, &sk, json!({"to": "not an address"})).await).await;
    assert_eq!(
        (s, &v["errors"][0]["field"]),
        (StatusCode::BAD_REQUEST, &json!("to")),
        "the field is named as the body names it: {v}"
    );
    let (s, v) = body(app.post(path, &sk, json!({"to": "ada@example.com"})).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let taken = fake.wait_taken(1).await;
    assert_eq!(v["provider_message_id"], json!(taken[0].id));
    assert_eq!(taken[0].to, "ada@example.com");
    fake.fail_next(&[401]);
    let (s, v) = body(app.post(path, &sk, json!({"to": "ada@example.com"})).await).await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::BAD_GATEWAY, &json!("provider_auth")),
        "{v}"
    );
    // The admin may test a tenant's SMS provider.
    let (s, _) = body(
        app.put(
            &format!("/v1/tenants/{id}/providers/sms"),
            ADMIN,
            sms.settings("primary"),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = body(
        app.post(
            &format!("/v1/tenants/{id}/providers/sms/test"),
            ADMIN,
            json!({"to": "+4915112345678"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(sms.wait_taken(1).await[0].to, "+4915112345678");
    assert!(app.smtp.messages().is_empty());
}

/// The test route is no way around the SMS fraud guard (found by the SMS audit: it texted
/// premium-rate and unlisted numbers, any number of times, unaudited): a test text is
/// screened as a mint's (countries, number type, the suppression list), counts against the
/// velocity limits (the range's, here) unless it never left, goes to the number's one
/// spelling, and is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_route_texts_only_what_the_sms_guard_lets_a_mint_text() {
    let sms = FakeProvider::start("twilio").await;
    let app = app_with(&[&sms], &[]).await;
    let (_, sk) = app.tenant().await;
    put_provider(&app, &sk, &sms, "primary").await;
    let path = "/v1/tenant/providers/sms/test";
    let test = |to: &str| {
        let (app, sk, to) = (&app, &sk, to.to_string());
        async move { body(app.post(path, sk, json!({ "to": to })).await).await }
    };
    // No country allowed yet: nothing is texted.
    let (s, v) = test("+4915112345678").await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("sms_country_not_allowed")
        ),
        "{v}"
    );
    app.allow_sms(&sk, &["DE"]).await;
    for (to, code) in [
        // German premium rate.
        ("+4990012345678", "phone_number_not_allowed"),
        // Invalid (too short for Germany).
        ("+491511234", "phone_number_not_allowed"),
        ("+33612345678", "sms_country_not_allowed"),
    ] {
        let (s, v) = test(to).await;
        assert_eq!(
            (s, &v["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!(code)),
            "{to}: {v}"
        );
    }
    assert!(sms.rx.requests().is_empty());
    let r = app
        .post(
            "/v1/tenant/suppressions",
            &sk,
            json!({"recipient": "+4915112345690"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, v) = test("+4915112345690").await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("recipient_suppressed")
        ),
        "{v}"
    );
    // One range takes `limits.sms_range_per_hour` (10) texts an hour, tests included; one
    // the provider refused never left and holds no place.
    sms.fail_next(&[401]);
    let (s, v) = test("+4915112345650").await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::BAD_GATEWAY, &json!("provider_auth")),
        "{v}"
    );
    for i in 0..10 {
        let (s, v) = test(&format!("+490151123456{i:02}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let taken = sms.wait_taken(10).await;
    assert!(
        taken.iter().all(|t| t.to.starts_with("+49151123456")),
        "E.164"
    );
    let (s, v) = test("+4915112345699").await;
    crate::sms_guard::assert_sms_velocity(s, &v, "sms_range_per_hour");
    // A mint to that range is held by the same count.
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"phone": "+4915112345698"}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("sms_velocity")),
        "{v}"
    );
    assert_eq!(sms.rx.requests().len(), 11);
    let (_, audit) = body(app.get("/v1/tenant/audit", &sk).await).await;
    let events: Vec<_> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "provider.test")
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.len(), 17, "{audit}");
    assert_eq!(events.iter().filter(|o| *o == "sent").count(), 10);
    for refused in [
        "sms_country_not_allowed",
        "phone_number_not_allowed",
        "sms_velocity",
        "recipient_suppressed",
        "delivery_failed:provider_auth",
    ] {
        assert!(events.iter().any(|o| o == refused), "{refused}: {events:?}");
    }
    assert!(!audit.to_string().contains("12345678\""), "masked: {audit}");
}

/// A resend whose message the provider refused shows that message's delivery: failed, with
/// no time sent and no provider id — not the earlier, accepted message's (SMS audit) — and
/// the earlier code still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resend_shows_its_own_delivery_not_the_earlier_messages() {
    let sms = FakeProvider::start("twilio").await;
    let app = app_with(&[&sms], &[]).await;
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    put_provider(&app, &sk, &sms, "primary").await;
    let (s, v) = body(app.post("/v1/otp", &sk, recipient(&sms, 1)).await).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let first = sms.wait_taken(1).await[0].clone();
    let st = status_of(&app, &sk, &key).await;
    assert_eq!(
        (
            &st["delivery"]["status"],
            &st["delivery"]["provider_message_id"]
        ),
        (&json!("sent"), &json!(first.id)),
        "{st}"
    );
    assert!(st["delivery"]["sent_at"].is_string(), "{st}");
    sms.fail_next(&[400]);
    let r = app
        .post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let st = status_of(&app, &sk, &key).await;
    assert_eq!(
        (&st["delivery"]["status"], &st["delivery"]["reason"]),
        (&json!("failed"), &json!("provider_rejected")),
        "{st}"
    );
    assert!(
        st["delivery"].get("sent_at").is_none_or(Value::is_null)
            && st["delivery"]
                .get("provider_message_id")
                .is_none_or(Value::is_null),
        "{st}"
    );
    assert_eq!(app.verify(&sk, &key, &first.code()).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_secrets_survive_a_data_key_rotation() {
    let fake = FakeProvider::start("mailgun").await;
    let app = app_with(&[&fake], &[]).await;
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    put_provider(&app, &sk, &fake, "primary").await;
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{out}{err}");
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let taken = fake.wait_taken(1).await;
    assert_eq!(
        app.verify(&sk, v["shareable_key"].as_str().unwrap(), &taken[0].code())
            .await
            .0,
        StatusCode::OK
    );
    // The region's host is overridden by the operator, the documented path kept.
    assert_eq!(fake.rx.requests()[0].path, "/v3/mg.acme.example/messages");
}

/// An answer that echoes the request where the message's id belongs (a broken provider or
/// proxy) is no id: nothing of it is kept, so the code it holds is never stored or shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_answer_that_echoes_the_message_is_kept_as_no_id() {
    let twilio = FakeProvider::start("twilio").await;
    let app = app_with(&[&twilio], &[]).await;
    let (s, t) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "Echo"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let sk = t["secret_key"].as_str().unwrap().to_string();
    app.allow_sms(&sk, &["DE"]).await;
    put_provider(&app, &sk, &twilio, "primary").await;
    twilio.echo_next(1);
    let mut keys = Vec::new();
    for i in 0..2 {
        let (s, v) = body(app.post("/v1/otp", &sk, recipient(&twilio, i)).await).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        keys.push(v["shareable_key"].as_str().unwrap().to_string());
    }
    let taken = twilio.wait_taken(2).await;
    let echoed = status_of(&app, &sk, &keys[0]).await;
    assert_eq!(echoed["delivery"]["status"], json!("sent"), "{echoed}");
    assert_eq!(
        echoed["delivery"]["provider_message_id"],
        Value::Null,
        "{echoed}"
    );
    assert!(!echoed.to_string().contains(&taken[0].code()), "{echoed}");
    // A real id is kept as before.
    let kept = status_of(&app, &sk, &keys[1]).await;
    assert_eq!(
        kept["delivery"]["provider_message_id"],
        json!(taken[1].id),
        "{kept}"
    );
    let (s, v) = app.verify(&sk, &keys[0], &taken[0].code()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A provider whose name does not resolve (a resolver that fails, or a name that is gone)
/// reached nobody: the failure is transient and unreachable, never a refusal by the address
/// policy, and a queued code stays queued to be tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_name_does_not_resolve_is_unreachable_and_tried_again() {
    let postmark = FakeProvider::start("postmark").await;
    let ca = postmark.rx.ca_path.clone();
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 3;
        s.delivery.provider_base_urls = [(
            "postmark".to_string(),
            "https://no-such-provider.invalid".to_string(),
        )]
        .into_iter()
        .collect();
    })
    .await;
    let (s, t) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "Gone"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let sk = t["secret_key"].as_str().unwrap().to_string();
    put_provider(&app, &sk, &postmark, "primary").await;
    crate::outbox::mint_fails_with(&app, &sk, "ada@example.com", "provider_unreachable").await;
    let key = crate::outbox::mint_async(&app, &sk, "bob@example.com").await;
    let st = crate::outbox::wait_status(&app, &sk, &key, |v| {
        v["delivery"]["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(
        st["delivery"]["reason"],
        json!("provider_unreachable"),
        "{st}"
    );
    assert_eq!(st["status"], json!("pending"), "{st}");
    assert_ne!(st["delivery"]["status"], json!("failed"), "{st}");
    assert!(postmark.taken().is_empty());
}

/// A provider on a host the outbound policy refuses (loopback, without
/// `webhooks.allow_private_hosts`) is `provider_host_not_allowed`, and the answer names the
/// setting that would allow it (API.md §18.8), not the base URL; nothing reaches the fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_provider_host_names_the_setting_that_would_allow_it() {
    let fake = FakeProvider::start("postmark").await;
    let (kind, url, ca) = (
        fake.kind.to_string(),
        fake.base_url(),
        fake.rx.ca_path.clone(),
    );
    let app = spawn_app_with(move |s| {
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.provider_base_urls = [(kind, url)].into_iter().collect();
    })
    .await;
    let (s, t) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "Acme"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let sk = t["secret_key"].as_str().unwrap().to_string();
    put_provider(&app, &sk, &fake, "primary").await;
    let mint = json!({"email": "ada@example.com"});
    let (s, v) = body(app.post("/v1/otp", &sk, mint).await).await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::BAD_GATEWAY, &json!("provider_host_not_allowed")),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("webhooks.allow_private_hosts"), "{detail}");
    let test = "/v1/tenant/providers/email/test";
    let (s, v) = body(app.post(test, &sk, json!({"to": "ada@example.com"})).await).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("webhooks.allow_private_hosts"),
        "{v}"
    );
    assert!(
        fake.rx.requests().is_empty(),
        "nothing reached the provider"
    );
}

/// One tenant's provider tests (and relay checks) in flight are four at most, so its own
/// slow provider cannot take `delivery.max_sessions` from the others: the ones over that
/// answer 503 `overloaded` at once, while another tenant's test goes through, and the share
/// is given back as they finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_test_messages_in_flight_are_four_at_most() {
    let fake = FakeProvider::start("sendgrid").await;
    let app = app_with(&[&fake], &[]).await;
    let (_, a) = app.tenant().await;
    let (_, b) = app.tenant().await;
    put_provider(&app, &a, &fake, "fallback").await;
    put_provider(&app, &b, &fake, "fallback").await;
    let path = "/v1/tenant/providers/email/test";
    let to = |i: usize| json!({"to": format!("t{i}@example.com")});
    fake.rx.set_delay(Duration::from_secs(2));
    let burst = futures_util::future::join_all((0..6).map(|i| app.post(path, &a, to(i))));
    let other = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.post(path, &b, to(9)).await.status()
    };
    let (answers, other) = tokio::join!(burst, other);
    let mut refused = 0;
    for r in answers {
        match r.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key("retry-after"));
                let (_, v) = body(r).await;
                assert_eq!(v["code"], "overloaded", "{v}");
                refused += 1;
            }
            s => panic!("{s}: {}", body(r).await.1),
        }
    }
    assert_eq!(refused, 2, "four of the six went through");
    assert_eq!(
        other,
        StatusCode::OK,
        "another tenant's test is not refused"
    );
    assert_eq!(fake.taken().len(), 5);
    fake.rx.set_delay(Duration::ZERO);
    let (s, v) = body(app.post(path, &a, to(7)).await).await;
    assert_eq!(s, StatusCode::OK, "the share was given back: {v}");
}
