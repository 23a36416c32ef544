//! Signed webhooks (API.md §9) delivered to a real HTTP(S) endpoint on loopback.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;
use crate::smtp::Mode;
use otpmint::testkit::http::{HttpReceiver, Request};

const ALL: [&str; 5] = [
    "otp.sent",
    "otp.delivery_failed",
    "otp.verified",
    "otp.attempts_exhausted",
    "otp.cancelled",
];

/// An app whose webhook client trusts the receiver's CA and may reach loopback.
async fn app_for(rx: &HttpReceiver) -> TestApp {
    let ca = rx.ca_path.clone();
    spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.allow_plaintext = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.webhooks.timeout_seconds = 2;
    })
    .await
}

async fn register(app: &TestApp, sk: &str, url: &str, events: &[&str]) -> Value {
    let r = app
        .put(
            "/v1/tenant/webhook",
            sk,
            json!({"url": url, "events": events}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// The Standard Webhooks check a receiver makes.
fn verify_signature(secret: &str, req: &Request) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = req.header("webhook-id").unwrap();
    let ts = req.header("webhook-timestamp").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&req.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig = req.header("webhook-signature").unwrap();
    assert!(
        sig.split(' ').any(|s| s == format!("v1,{expected}")),
        "bad signature {sig}"
    );
    let now = chrono::Utc::now().timestamp();
    let ts: i64 = ts.parse().unwrap();
    assert!((now - ts).abs() < 300, "timestamp {ts} is not now");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.method, "POST");
}

async fn deliveries(app: &TestApp, sk: &str) -> Vec<Value> {
    let v: Value = app
        .get("/v1/tenant/webhook/deliveries", sk)
        .await
        .json()
        .await
        .unwrap();
    v["deliveries"].as_array().unwrap().clone()
}

/// Wait until the deliveries list has `n` entries.
async fn wait_deliveries(app: &TestApp, sk: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let d = deliveries(app, sk).await;
        if d.len() >= n {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} webhook deliveries recorded: {:?}",
        deliveries(app, sk).await
    );
}

#[tokio::test]
async fn every_event_type_arrives_signed_over_https() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 2})).await;
    let r = app
        .put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": rx.url("/hooks/otp"), "events": ALL}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&secret[6..])
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert_eq!(v["events"], json!(ALL));
    // Shown once: not by GET.
    let got: Value = app
        .get("/v1/tenant/webhook", &sk)
        .await
        .json()
        .await
        .unwrap();
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["url"], rx.url("/hooks/otp"));

    // sent + verified
    let (key1, code1) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key1, &code1).await.0, StatusCode::OK);
    // sent + cancelled
    let (key2, _) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(
        app.delete(&format!("/v1/otp/{key2}"), &sk).await.status(),
        StatusCode::NO_CONTENT
    );
    // sent + attempts exhausted (max_attempts 2)
    let (key3, code3) = app.mint(&sk, "cy@example.com").await;
    app.verify(&sk, &key3, &wrong(&code3)).await;
    let (s, v) = app.verify(&sk, &key3, &wrong(&code3)).await;
    assert_eq!(
        (s, v["attempts_remaining"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(0))
    );
    // delivery failed
    app.smtp.set_mode(Mode::RejectRecipients);
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "dee@example.com", "locale": "de"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    // and the test event
    let r = app.post("/v1/tenant/webhook/test", &sk, json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let test_id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();

    let recorded = wait_deliveries(&app, &sk, 8).await;
    let reqs = rx.wait_for(8).await;
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for req in &reqs {
        verify_signature(&secret, req);
        assert_eq!(req.path, "/hooks/otp");
        assert!(ids.insert(req.header("webhook-id").unwrap().to_string()));
        let body = req.json();
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        seen.push((
            body["type"].as_str().unwrap().to_string(),
            body["data"].clone(),
        ));
    }
    let find = |kind: &str, key: &str| {
        seen.iter()
            .find(|(k, d)| k == kind && d["shareable_key"] == key)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {kind} for {key}: {seen:?}"))
    };
    let d = find("otp.sent", &key1);
    assert_eq!(
        (
            d["email"].as_str(),
            d["purpose"].as_str(),
            d["locale"].as_str()
        ),
        (Some("ada@example.com"), Some("default"), Some("en"))
    );
    find("otp.verified", &key1);
    find("otp.sent", &key2);
    let d = find("otp.cancelled", &key2);
    // Like every event of the key, it names the locale its message was written in.
    assert_eq!(
        (d["email"].as_str(), d["locale"].as_str()),
        (Some("bob@example.com"), Some("en")),
        "{d}"
    );
    find("otp.sent", &key3);
    assert_eq!(
        find("otp.attempts_exhausted", &key3)["email"],
        "cy@example.com"
    );
    let failed = seen
        .iter()
        .find(|(k, _)| k == "otp.delivery_failed")
        .map(|(_, d)| d.clone())
        .unwrap();
    assert_eq!(
        (
            failed["email"].as_str(),
            failed["reason"].as_str(),
            failed["locale"].as_str()
        ),
        (Some("dee@example.com"), Some("smtp_rejected"), Some("de"))
    );
    assert!(failed["shareable_key"]
        .as_str()
        .unwrap()
        .starts_with("otp_"));
    assert!(seen.iter().any(|(k, _)| k == "webhook.test"));
    assert!(ids.contains(&test_id));
    assert!(
        recorded
            .iter()
            .all(|x| x["status_code"] == 200 && x["attempt"] == 1),
        "{recorded:?}"
    );
}

#[tokio::test]
async fn only_subscribed_events_are_sent_and_only_to_their_tenant() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, a) = app.tenant().await;
    let (_, b) = app.tenant().await;
    // The events as asked, in their order, a duplicate dropped.
    let v = register(
        &app,
        &a,
        &rx.url("/a"),
        &["otp.verified", "otp.cancelled", "otp.verified"],
    )
    .await;
    assert_eq!(v["events"], json!(["otp.verified", "otp.cancelled"]));
    let got = body(app.get("/v1/tenant/webhook", &a).await).await.1;
    assert_eq!(got["events"], json!(["otp.verified", "otp.cancelled"]));
    let (key, code) = app.mint(&a, "ada@example.com").await;
    app.mint(&b, "bob@example.com").await;
    assert_eq!(app.verify(&a, &key, &code).await.0, StatusCode::OK);
    let reqs = rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reqs_after = rx.requests();
    assert_eq!(reqs_after.len(), 1, "{reqs_after:?}");
    assert_eq!(reqs[0].json()["type"], "otp.verified");
    assert_eq!(reqs[0].json()["data"]["shareable_key"], key);
    assert_eq!(deliveries(&app, &b).await.len(), 0);
    assert_eq!(
        app.get("/v1/tenant/webhook", &b).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_the_same_id_on_schedule() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    let secret = register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    rx.answer_next(&[500, 302, 503]);
    app.mint(&sk, "ada@example.com").await;
    wait_deliveries(&app, &sk, 1).await;
    // Not again before its time (about 5 s).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.requests().len(), 1);
    for (n, wait) in [(1, 5), (2, 30), (3, 120)] {
        // Each attempt is recorded (and its retry scheduled) before time moves on.
        wait_deliveries(&app, &sk, n).await;
        app.clock.advance_secs(wait);
    }
    let reqs = rx.wait_for(4).await;
    let id = reqs[0].header("webhook-id").unwrap();
    for r in &reqs {
        assert_eq!(r.header("webhook-id"), Some(id));
        assert_eq!(r.body, reqs[0].body, "the same event each time");
        verify_signature(&secret, r);
    }
    let d = wait_deliveries(&app, &sk, 4).await;
    let codes: Vec<Value> = d.iter().map(|x| x["status_code"].clone()).collect();
    assert_eq!(codes, [json!(200), json!(503), json!(302), json!(500)]);
    let attempts: Vec<Value> = d.iter().map(|x| x["attempt"].clone()).collect();
    assert_eq!(attempts, [json!(4), json!(3), json!(2), json!(1)]);
    assert!(d
        .iter()
        .all(|x| x["event_id"] == id && x["type"] == "otp.sent"));
    // A redirect was not followed (its Location would have been another request here or a
    // connection refused; neither happened).
    assert_eq!(rx.requests().len(), 4);
}

#[tokio::test]
async fn an_event_is_given_up_after_the_last_retry() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await;
    rx.answer_next(&[500; 10]);
    app.mint(&sk, "ada@example.com").await;
    for (n, wait) in [5, 30, 120, 600, 3600, 21600].into_iter().enumerate() {
        wait_deliveries(&app, &sk, n + 1).await;
        app.clock.advance_secs(wait);
    }
    wait_deliveries(&app, &sk, 7).await;
    app.clock.advance_secs(86_400);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(rx.requests().len(), 7, "seven attempts, then failed");
    assert_eq!(wait_deliveries(&app, &sk, 7).await.len(), 7);
}

#[tokio::test]
async fn delivery_resumes_after_a_restart() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await;
    rx.answer_next(&[500]);
    app.mint(&sk, "ada@example.com").await;
    let first = rx.wait_for(1).await[0].clone();
    wait_deliveries(&app, &sk, 1).await;
    let app = app.restart().await;
    app.clock.advance_secs(6);
    let reqs = rx.wait_for(2).await;
    assert_eq!(reqs[1].header("webhook-id"), first.header("webhook-id"));
    assert_eq!(reqs[1].body, first.body);
    let d = wait_deliveries(&app, &sk, 2).await;
    assert_eq!(d[0]["status_code"], 200);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_is_retried() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await;
    rx.set_delay(Duration::from_secs(4));
    app.mint(&sk, "ada@example.com").await;
    let d = wait_deliveries(&app, &sk, 1).await;
    assert_eq!(d[0]["error"], "timeout");
    assert!(d[0]["status_code"].is_null());
}

#[tokio::test]
async fn private_and_plaintext_endpoints_are_refused() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    for (url, code) in [
        ("https://127.0.0.1:8443/h", "webhook_host_not_allowed"),
        ("https://[::1]/h", "webhook_host_not_allowed"),
        // An IPv6 form embedding an IPv4 address is the address policy's to refuse.
        ("https://[::ffff:127.0.0.1]/h", "webhook_host_not_allowed"),
        ("https://[64:ff9b::10.0.0.1]/h", "webhook_host_not_allowed"),
        ("https://10.1.2.3/h", "webhook_host_not_allowed"),
        (
            "https://169.254.169.254/latest/meta-data",
            "webhook_host_not_allowed",
        ),
        ("https://localhost/h", "webhook_host_not_allowed"),
        // Other spellings of a private address are refused as a host too, not as a form.
        ("https://0x7f000001/h", "webhook_host_not_allowed"),
        ("https://2130706433/h", "webhook_host_not_allowed"),
        ("https://127.1/h", "webhook_host_not_allowed"),
        ("https://0177.0.0.1/h", "webhook_host_not_allowed"),
        ("https://127.0.0.1./h", "webhook_host_not_allowed"),
        (
            "http://hooks.example.com/h",
            "webhook_plaintext_not_allowed",
        ),
    ] {
        let r = app
            .put(
                "/v1/tenant/webhook",
                &sk,
                json!({"url": url, "events": ["otp.sent"]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let v = r.json::<Value>().await.unwrap();
        assert_eq!(v["code"], code, "{url}");
        assert_eq!(v["errors"][0]["field"], "url", "{v}");
        // The setting that would allow it is named (API.md §18.8).
        let setting = match code {
            "webhook_plaintext_not_allowed" => "webhooks.allow_plaintext",
            _ => "webhooks.allow_private_hosts",
        };
        assert!(
            v["detail"].as_str().unwrap().contains(setting),
            "{url}: {v}"
        );
    }
    for body in [
        json!({"url": "ftp://hooks.example.com/h", "events": ["otp.sent"]}),
        json!({"url": "https://user:pw@hooks.example.com/h", "events": ["otp.sent"]}),
        json!({"url": "not a url", "events": ["otp.sent"]}),
        // A public IPv4 address in another form than dotted decimal is not an endpoint's
        // form (a private one is refused as a host, above, whatever its spelling).
        json!({"url": "https://0x08080808/h", "events": ["otp.sent"]}),
        // A name that is none is a fault of form, not a refused host.
        json!({"url": "https://a,b.example/h", "events": ["otp.sent"]}),
        json!({"url": "https://-x.example/h", "events": ["otp.sent"]}),
        json!({"url": "https://a..b.example/h", "events": ["otp.sent"]}),
        json!({"url": "https://hooks.example.com/h#frag", "events": ["otp.sent"]}),
        json!({"url": "https://hooks.example.com/h", "events": []}),
        json!({"url": "https://hooks.example.com/h", "events": ["otp.minted"]}),
        json!({"url": "https://hooks.example.com/h"}),
    ] {
        let r = app.put("/v1/tenant/webhook", &sk, body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        app.get("/v1/tenant/webhook", &sk).await.status(),
        StatusCode::NOT_FOUND,
        "a refusal stored nothing"
    );
}

/// A TLS failure is recorded as `tls`, not as a connection that could not be made: a
/// certificate the client does not trust, and an `https://` URL whose port speaks plain
/// HTTP (both were `connect`: found by the webhook audit). A closed port stays `connect`.
#[tokio::test]
async fn a_tls_failure_is_told_apart_from_a_connection_failure() {
    let plain = HttpReceiver::start(false).await;
    let untrusted = HttpReceiver::start(true).await;
    // The app trusts the plain receiver's CA, not the TLS receiver's.
    let app = app_for(&plain).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A plain HTTP server answers the TLS hello it cannot read with a 400, as most do.
    let http_only = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_port = http_only.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = http_only.accept().await {
            let mut hello = [0u8; 512];
            let _ = tcp.read(&mut hello).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    for (url, cause) in [
        (untrusted.url("/h"), "tls"),
        (format!("https://127.0.0.1:{http_port}/h"), "tls"),
        (format!("http://127.0.0.1:{closed}/h"), "connect"),
    ] {
        let (_, sk) = app.tenant().await;
        register(&app, &sk, &url, &["otp.sent"]).await;
        app.mint(&sk, "ada@example.com").await;
        let d = wait_deliveries(&app, &sk, 1).await;
        assert_eq!(d[0]["error"], cause, "{url}: {d:?}");
        assert!(d[0]["status_code"].is_null(), "{url}: {d:?}");
    }
    assert!(plain.requests().is_empty() && untrusted.requests().is_empty());
}

#[tokio::test]
async fn the_address_policy_applies_again_at_send_time() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await;
    // The operator turns private endpoints off after registration.
    let mut s = (*app.services.core.settings.load_full()).clone();
    s.webhooks.allow_private_hosts = false;
    app.services.core.settings.store(std::sync::Arc::new(s));
    app.mint(&sk, "ada@example.com").await;
    let d = wait_deliveries(&app, &sk, 1).await;
    assert_eq!(d[0]["error"], "host_not_allowed");
    assert_eq!(rx.requests().len(), 0, "the endpoint was contacted");
}

#[tokio::test]
async fn rotation_replacement_and_deletion() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    let first = register(&app, &sk, &rx.url("/one"), &["otp.sent"]).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // Replacing keeps the secret and does not show it.
    let v = register(&app, &sk, &rx.url("/two"), &["otp.sent", "otp.verified"]).await;
    assert!(v.get("secret").is_none(), "{v}");
    app.mint(&sk, "ada@example.com").await;
    let r = &rx.wait_for(1).await[0];
    assert_eq!(r.path, "/two");
    verify_signature(&first, r);
    // Rotation: a new secret, shown once, signs from now on.
    let r = app
        .post("/v1/tenant/webhook/rotate-secret", &sk, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let second = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    app.mint(&sk, "bob@example.com").await;
    verify_signature(&second, &rx.wait_for(2).await[1]);
    // Deleted: nothing more is sent.
    assert_eq!(
        app.delete("/v1/tenant/webhook", &sk).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete("/v1/tenant/webhook", &sk).await.status(),
        StatusCode::NOT_FOUND
    );
    app.mint(&sk, "cy@example.com").await;
    assert_eq!(
        app.post("/v1/tenant/webhook/test", &sk, json!({}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.requests().len(), 2);
}

#[tokio::test]
async fn the_secret_is_sealed_at_rest() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    let secret = register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&secret[6..])
        .unwrap();
    let (key, _) = app.mint(&sk, "ada@example.com").await;
    rx.wait_for(1).await;
    let bytes = app.stored_bytes();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(rx.url("/h").as_bytes()), "not what the database holds");
    assert!(
        !has(&raw) && !has(secret.as_bytes()),
        "the secret is readable at rest"
    );
    assert!(
        !has(key.as_bytes()),
        "an event's shareable key is readable at rest"
    );
}

#[tokio::test]
async fn a_queued_message_whose_code_expires_unsent_raises_delivery_failed() {
    let rx = HttpReceiver::start(false).await;
    let app = app_for(&rx).await;
    let (id, sk) = app.tenant_with(json!({"ttl_seconds": 60})).await;
    register(
        &app,
        &sk,
        &rx.url("/h"),
        &["otp.sent", "otp.delivery_failed"],
    )
    .await;
    // The relay is down: the async message waits for its retries.
    app.smtp.set_mode(Mode::Down);
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "delivery": "async", "purpose": "login"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    // Its first attempt failed and a retry is due later...
    for _ in 0..200 {
        let v: Value = app
            .get(&format!("/v1/otp/{key}"), &sk)
            .await
            .json()
            .await
            .unwrap();
        if v["delivery"]["attempts"] == 1 && v["delivery"]["status"] == "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...then the tenant is disabled (its messages wait), and the code expires meanwhile.
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.clock.advance_secs(61);
    app.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"enabled": true}),
    )
    .await;
    // The sweep (every few seconds) settles it as failed and raises the event.
    let reqs = rx.wait_for(1).await;
    let body = reqs[0].json();
    assert_eq!(body["type"], "otp.delivery_failed");
    assert_eq!(body["data"]["shareable_key"], key.as_str());
    assert_eq!(body["data"]["reason"], "expired");
    assert_eq!(body["data"]["purpose"], "login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_key_rotation_reseals_the_secret_and_signing_goes_on() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (id, sk) = app.tenant().await;
    let secret = register(&app, &sk, &rx.url("/h"), &["otp.sent"]).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let tid = otpmint::domain::keys::TenantId::parse(&id).unwrap();
    let sealed_under = || {
        let (svc, tid) = (app.services.clone(), tid.clone());
        async move {
            let w = svc
                .core
                .db(move |s| s.webhook(&tid))
                .await
                .unwrap()
                .unwrap();
            otpmint::crypto::cipher::blob_version(&w.secret).unwrap().0
        }
    };
    assert_eq!(sealed_under().await, 1);
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data key version 2 active (new)")
            && out.contains("webhook secrets: 1 re-encrypted"),
        "{out}"
    );
    assert_eq!(sealed_under().await, 2);
    // The running server, started with data key 1 only, opens the re-sealed secret at once
    // and signs with the secret the tenant was shown (a test event: no SMTP send first,
    // whose own password would also make it reload its keyring).
    let r = app.post("/v1/tenant/webhook/test", &sk, json!({})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let reqs = rx.wait_for(1).await;
    verify_signature(&secret, &reqs[0]);
    let d = wait_deliveries(&app, &sk, 1).await;
    assert_eq!(d[0]["status_code"], 200, "{d:?}");
}

/// The right code and a wrong guess at once, with two attempts: the key verifies, so no
/// `otp.attempts_exhausted` is sent for it, whichever guess took the last attempt and
/// whichever finished first (API.md §9: an event says what happened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_verifies_is_never_reported_exhausted() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 2})).await;
    let events = json!(["otp.verified", "otp.attempts_exhausted"]);
    let r = app
        .put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": rx.url("/hooks/otp"), "events": events}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let (key, code) = app.mint(&sk, &format!("r{round}@example.com")).await;
        let guess = wrong(&code);
        let (right, wrong_guess) =
            tokio::join!(app.verify(&sk, &key, &code), app.verify(&sk, &key, &guess),);
        assert_eq!(right.0, StatusCode::OK, "{right:?}");
        assert_ne!(wrong_guess.0, StatusCode::OK, "{wrong_guess:?}");
    }
    let recorded = wait_deliveries(&app, &sk, ROUNDS).await;
    // Any exhausted event was raised before its verify answered: it is listed by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recorded = [recorded, deliveries(&app, &sk).await].concat();
    assert!(
        recorded.iter().all(|d| d["type"] == "otp.verified"),
        "{recorded:?}"
    );
}
