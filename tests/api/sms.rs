//! Text messages (API.md §12.3): a phone number instead of an address, delivered only through
//! the tenant's HTTP transport, with `sms` templates per locale.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::http_transport::{app_for, code_in, put_http, signed_with, status_of};
use otpmint::testkit::http::HttpReceiver;

const PHONE: &str = "+4915112345678";

async fn mint_phone(app: &TestApp, sk: &str, body_: Value) -> (StatusCode, Value) {
    body(app.post("/v1/otp", sk, body_).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_goes_to_a_phone_number_as_a_text_message_and_verifies() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE", "US"]).await;

    // No HTTP transport: the channel is not configured.
    let (s, v) = mint_phone(&app, &sk, json!({ "phone": PHONE })).await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("channel_not_configured")
        ),
        "{v}"
    );
    // Even as the fallback of SMTP, the endpoint is the one way for text messages.
    let secret = put_http(&app, &sk, &rx, "fallback").await;

    // Exactly one of email and phone; a number in E.164 form.
    for (bad, field) in [
        (json!({}), "email"),
        (json!({"email": "ada@example.com", "phone": PHONE}), "phone"),
        (json!({"phone": "015112345678"}), "phone"),
        (json!({"phone": "+49 151 12345678"}), "phone"),
        (json!({"phone": "+1234567"}), "phone"),
    ] {
        let (s, v) = mint_phone(&app, &sk, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v.to_string().contains(field), "{bad}: {v}");
    }
    assert!(rx.requests().is_empty());

    for (i, locale) in ["en", "de", "ja"].into_iter().enumerate() {
        let (s, v) = mint_phone(
            &app,
            &sk,
            json!({"phone": PHONE, "locale": locale, "purpose": "login"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let req = rx.wait_for(i + 1).await.pop().unwrap();
        assert!(signed_with(&secret, &req));
        let m = req.json();
        assert_eq!(
            (&m["channel"], &m["to"], &m["locale"]),
            (&json!("sms"), &json!(PHONE), &json!(locale)),
            "{m}"
        );
        assert!(
            m.get("subject").is_none() && m.get("html").is_none() && m.get("from").is_none(),
            "{m}"
        );
        let text = m["text"].as_str().unwrap();
        let code = code_in(text);
        assert!(text.starts_with(&code), "the code first: {text}");
        assert!(
            text.contains("Acme") && text.chars().count() <= 320,
            "{text}"
        );
        let st = status_of(&app, &sk, &key).await;
        assert_eq!(st["delivery"]["transport"], "http", "{st}");
        let (s, v) = app.verify(&sk, &key, &code).await;
        assert_eq!(s, StatusCode::OK, "{locale}");
        assert_eq!((&v["phone"], v.get("email")), (&json!(PHONE), None), "{v}");
    }
    assert!(app.smtp.messages().is_empty(), "no email was sent");

    // A resend under the same key is a text message too.
    let (_, v) = mint_phone(&app, &sk, json!({ "phone": PHONE })).await;
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let got = rx.wait_for(5).await;
    assert_eq!(got[4].json()["channel"], "sms");
    let code = code_in(got[4].json()["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);

    // The audit shows the number masked; the statistics count it under its channel.
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    let text = v.to_string();
    assert!(
        text.contains("+49*******678") && !text.contains(PHONE),
        "{v}"
    );
    let v = body(app.get("/v1/tenant/stats?group_by=channel", &sk).await)
        .await
        .1;
    let sms = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "sms")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(sms["minted"], 4, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_messages_follow_the_recipient_limits_and_the_tenants_sms_template() {
    let rx = HttpReceiver::start(true).await;
    let app = {
        let ca = rx.ca_path.clone();
        spawn_app_with(move |s| {
            s.webhooks.allow_private_hosts = true;
            s.webhooks.extra_root_certificates = vec![ca];
            s.limits.resend_cooldown_seconds = 30;
        })
        .await
    };
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE", "US"]).await;
    put_http(&app, &sk, &rx, "primary").await;

    // The tenant's own text message for a locale; a bad one is refused and changes nothing.
    for (sms, field) in [
        ("no code here", "sms"),
        (
            "{{ code }}{% for i in range(50) %} {{ app_name }}{% endfor %}",
            "sms",
        ),
    ] {
        let (s, v) = body(
            app.put(
                "/v1/tenant/templates/en",
                &sk,
                json!({"subject": "Code", "text": "{{ code }}", "sms": sms}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, &v["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("template_invalid")),
            "{v}"
        );
        assert!(v.to_string().contains(field), "{v}");
    }
    let (s, v) = body(
        app.put(
            "/v1/tenant/templates/en",
            &sk,
            json!({"subject": "Code", "text": "{{ code }}", "sms": "{{ code }}: your {{ app_name }} login"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["sms"]),
        (
            StatusCode::OK,
            &json!("{{ code }}: your {{ app_name }} login")
        ),
        "{v}"
    );
    let (s, v) = body(
        app.post("/v1/tenant/templates/preview", &sk, json!({"locale": "en"}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["sms"]),
        (StatusCode::OK, &json!("123456: your Acme login")),
        "{v}"
    );

    let (s, v) = mint_phone(&app, &sk, json!({ "phone": PHONE })).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let m = rx.wait_for(1).await.pop().unwrap().json();
    let text = m["text"].as_str().unwrap();
    assert!(text.ends_with(": your Acme login"), "{text}");

    // The cooldown counts per number, as per address.
    let (s, v) = mint_phone(&app, &sk, json!({ "phone": PHONE })).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("rate_limited")),
        "{v}"
    );
    let (s, _) = mint_phone(&app, &sk, json!({"phone": "+14155550123"})).await;
    assert_eq!(s, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rx.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_of_a_text_message_name_the_phone_number() {
    let rx = HttpReceiver::start(true).await;
    let hooks = HttpReceiver::start(true).await;
    let app = {
        let cas = vec![rx.ca_path.clone(), hooks.ca_path.clone()];
        spawn_app_with(move |s| {
            s.webhooks.allow_private_hosts = true;
            s.webhooks.extra_root_certificates = cas;
        })
        .await
    };
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE", "US"]).await;
    put_http(&app, &sk, &rx, "primary").await;
    let r = app
        .put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": hooks.url("/hooks"), "events": ["otp.sent", "otp.verified"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = mint_phone(&app, &sk, json!({ "phone": PHONE })).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let code = code_in(rx.wait_for(1).await[0].json()["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    for event in hooks.wait_for(2).await {
        let data = &event.json()["data"];
        assert_eq!(data["phone"], PHONE, "{data}");
        assert!(data.get("email").is_none(), "{data}");
    }
}
