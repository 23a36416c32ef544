//! The transports of API.md §12 with two instances on one PostgreSQL database: every queued
//! message goes through the durable outbox, once, whichever instance sends it.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::{Mode, SmtpServer, SMTP_PASS, SMTP_USER};

/// Another server on A's database, master key and clock (its own pool and caches).
async fn instance_like(a: &TestApp) -> TestApp {
    start(
        a.settings.clone(),
        SmtpServer::start().await,
        tempfile::tempdir().unwrap(),
        a.clock.clone(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_through_the_endpoint_and_the_fallback_relay_go_once_over_two_instances() {
    let rx = otpmint::testkit::http::HttpReceiver::start(false).await;
    let fallback = SmtpServer::start().await;
    let (port, ca) = (fallback.port, fallback.ca_path.clone());
    let a = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.allow_plaintext = true;
        s.smtp.allowed_ports.push(port);
        s.smtp.extra_root_certificates.push(ca);
    })
    .await;
    let b = instance_like(&a).await;

    // One tenant sends through its endpoint (emails and text messages) …
    let (_, http_sk) = a.tenant().await;
    a.allow_sms(&http_sk, &["DE"]).await;
    let r = a
        .put(
            "/v1/tenant/transport/http",
            &http_sk,
            json!({"url": rx.url("/send"), "use": "primary"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // … another through its fallback relay, its relay being down.
    let r = a
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Backup", "smtp": a.smtp_json(), "smtp_fallback": {
                "host": "127.0.0.1", "port": fallback.port, "username": SMTP_USER,
                "password": SMTP_PASS, "from": "b@acme.example"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let fb_sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    a.smtp.set_mode(Mode::Down);

    let mut keys = Vec::new();
    for i in 0..30 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (sk, to) = match i % 3 {
            0 => (&http_sk, json!({"email": format!("h{i}@example.com")})),
            1 => (&http_sk, json!({"phone": format!("+4915100000{i:03}")})),
            _ => (&fb_sk, json!({"email": format!("f{i}@example.com")})),
        };
        let mut body = to;
        body["delivery"] = json!("async");
        let r = app.post("/v1/otp", sk, body).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let v: Value = r.json().await.unwrap();
        keys.push((sk.clone(), v["shareable_key"].as_str().unwrap().to_string()));
    }
    let reqs = rx.wait_for(20).await;
    let mails = fallback.wait_for("f29@example.com", 1).await;
    drop(mails);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rx.requests().len(),
        20,
        "a message went twice to the endpoint"
    );
    let ids: HashSet<String> = reqs
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 20);
    let sms = reqs.iter().filter(|r| r.json()["channel"] == "sms").count();
    assert_eq!(sms, 10);
    assert_eq!(
        fallback.messages().len(),
        10,
        "a message went twice to the fallback relay"
    );
    assert_eq!(a.smtp.messages().len() + b.smtp.messages().len(), 0);
    // Every code verifies on either instance; each names its transport.
    for (i, (sk, key)) in keys.iter().enumerate() {
        let app = if i % 2 == 0 { &b } else { &a };
        let st: Value = app
            .get(&format!("/v1/otp/{key}"), sk)
            .await
            .json()
            .await
            .unwrap();
        let want = if i % 3 == 2 { "smtp_fallback" } else { "http" };
        assert_eq!(st["delivery"]["transport"], want, "{st}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_through_providers_go_once_over_two_instances() {
    use otpmint::testkit::providers::FakeProvider;
    let email = FakeProvider::start("postmark").await;
    let sms = FakeProvider::start("twilio").await;
    let a = crate::providers::app_with(&[&email, &sms], &[]).await;
    let b = instance_like(&a).await;
    // A tenant without a relay: a provider per channel.
    let r = a.post("/v1/tenants", ADMIN, json!({"name": "P"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    a.allow_sms(&sk, &["DE"]).await;
    for f in [&email, &sms] {
        let r = a
            .put(
                &format!("/v1/tenant/providers/{}", f.channel()),
                &sk,
                f.settings("primary"),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let mut keys = Vec::new();
    for i in 0..24 {
        let app = if i % 2 == 0 { &a } else { &b };
        let mut body = if i % 3 == 0 {
            json!({"phone": format!("+4915100001{i:03}")})
        } else {
            json!({"email": format!("p{i}@example.com")})
        };
        body["delivery"] = json!("async");
        let r = app.post("/v1/otp", &sk, body.clone()).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let v: Value = r.json().await.unwrap();
        keys.push((body, v["shareable_key"].as_str().unwrap().to_string()));
    }
    email.wait_taken(16).await;
    sms.wait_taken(8).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(email.taken().len(), 16, "a message went twice");
    assert_eq!(sms.taken().len(), 8, "a text message went twice");
    // Every code verifies once, on the other instance than the one that minted it.
    let taken: Vec<_> = email.taken().into_iter().chain(sms.taken()).collect();
    for (i, (body, key)) in keys.iter().enumerate() {
        let app = if i % 2 == 0 { &b } else { &a };
        let to = body
            .get("email")
            .or(body.get("phone"))
            .and_then(Value::as_str)
            .unwrap();
        let msg = taken.iter().find(|t| t.to == to).unwrap();
        assert_eq!(app.verify(&sk, key, &msg.code()).await.0, StatusCode::OK);
    }
}
