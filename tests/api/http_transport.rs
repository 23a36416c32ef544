//! Delivery through the tenant's own HTTPS endpoint (API.md §12.2): a real HTTPS receiver on
//! loopback with a certificate from a CA made at test time, checking every signature.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;
use crate::smtp::Mode;
use otpmint::testkit::http::{HttpReceiver, Request};

/// An app whose outbound HTTP trusts the receiver's CA and may reach loopback.
pub(crate) async fn app_for(rx: &HttpReceiver) -> TestApp {
    let ca = rx.ca_path.clone();
    spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 3;
    })
    .await
}

/// Store the transport; answers its secret (`whsec_…`).
pub(crate) async fn put_http(app: &TestApp, sk: &str, rx: &HttpReceiver, use_as: &str) -> String {
    let (s, v) = body(
        app.put(
            "/v1/tenant/transport/http",
            sk,
            json!({"url": rx.url("/send"), "use": use_as}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["secret"].as_str().unwrap_or_default().to_string()
}

/// What a receiver checks before it trusts a request: the Standard Webhooks signature over
/// `id.timestamp.body` with the transport's secret.
pub(crate) fn signed_with(secret: &str, req: &Request) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let (Some(id), Some(ts), Some(sig)) = (
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&req.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sig.split(' ').any(|s| s == format!("v1,{expected}"))
}

/// The code in a message's text.
pub(crate) fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap()
        .to_string()
}

pub(crate) async fn status_of(app: &TestApp, sk: &str, key: &str) -> Value {
    body(app.get(&format!("/v1/otp/{key}"), sk).await).await.1
}

/// Wait until `n` attempts of the key's message are recorded.
async fn attempts_recorded(app: &TestApp, sk: &str, key: &str, n: i64) {
    for _ in 0..200 {
        if status_of(app, sk, key).await["delivery"]["attempts"].as_i64() >= Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} attempts of {key} were never recorded");
}

async fn mint(app: &TestApp, sk: &str, to: &str, delivery: &str) -> (StatusCode, Value) {
    body(
        app.post("/v1/otp", sk, json!({"email": to, "delivery": delivery}))
            .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_transport_is_stored_shown_without_its_secret_rotated_and_removed() {
    let rx = HttpReceiver::start(true).await;
    // Loopback is refused by the address policy unless the server allows private hosts.
    let strict = spawn_app().await;
    let (_, sk) = strict.tenant().await;
    let (s, v) = body(
        strict
            .put(
                "/v1/tenant/transport/http",
                &sk,
                json!({"url": rx.url("/send")}),
            )
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("webhook_host_not_allowed")
        ),
        "{v}"
    );
    assert_eq!(v["errors"][0]["field"], "url", "{v}");

    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    let path = "/v1/tenant/transport/http";
    assert_eq!(app.get(path, &sk).await.status(), StatusCode::NOT_FOUND);
    for bad in [
        json!({"url": "ftp://example.com/x"}),
        json!({"url": rx.url("/send"), "use": "sometimes"}),
        json!({"url": rx.url("/send"), "extra": 1}),
    ] {
        let (s, v) = body(app.put(path, &sk, bad.clone()).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let r = app
        .put(path, &sk, json!({"url": rx.url("/send"), "use": "primary"}))
        .await;
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    let (s, v) = body(r).await;
    assert_eq!(s, StatusCode::OK);
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{v}");
    let (s, v) = body(app.get(path, &sk).await).await;
    assert_eq!((s, &v["use"]), (StatusCode::OK, &json!("primary")));
    assert!(v.get("secret").is_none(), "{v}");
    // A replacement keeps the secret (and does not show it).
    let (s, v) = body(
        app.put(
            path,
            &sk,
            json!({"url": rx.url("/other"), "use": "fallback"}),
        )
        .await,
    )
    .await;
    assert_eq!((s, &v["use"]), (StatusCode::OK, &json!("fallback")), "{v}");
    assert!(v.get("secret").is_none(), "{v}");
    // A data-key rotation re-seals it: it still signs with the same secret.
    let (ok, _, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    app.smtp.set_mode(Mode::Down);
    let (s, v) = mint(&app, &sk, "ada@example.com", "sync").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let got = rx.wait_for(1).await;
    assert!(
        signed_with(&secret, &got[0]),
        "signed with the secret shown at creation"
    );
    assert_eq!(got[0].path, "/other");
    // Rotation: a new secret, the old one no longer signs.
    let (s, v) = body(
        app.post(&format!("{path}/rotate-secret"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rotated = v["secret"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    mint(&app, &sk, "bob@example.com", "sync").await;
    let got = rx.wait_for(2).await;
    assert!(signed_with(&rotated, &got[1]) && !signed_with(&secret, &got[1]));
    // Removed: gone, and email goes through SMTP only again.
    assert_eq!(app.delete(path, &sk).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(path, &sk).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(path, &sk).await.status(), StatusCode::NOT_FOUND);
    let (s, _) = mint(&app, &sk, "cy@example.com", "sync").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(rx.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_go_to_the_endpoint_signed_and_any_2xx_accepts_them() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    let secret = put_http(&app, &sk, &rx, "primary").await;
    rx.answer_next(&[200, 201, 202, 204]);
    for (i, to) in [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = mint(&app, &sk, to, "sync").await;
        assert_eq!(s, StatusCode::CREATED, "{to}: {v}");
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let req = rx.wait_for(i + 1).await.pop().unwrap();
        assert!(signed_with(&secret, &req), "{to}");
        assert_eq!(req.method, "POST");
        let m = req.json();
        assert_eq!(
            (&m["channel"], &m["to"]),
            (&json!("email"), &json!(to)),
            "{m}"
        );
        assert_eq!(m["from"], "Acme <no-reply@acme.example>");
        assert_eq!(
            (&m["locale"], &m["purpose"]),
            (&json!("en"), &json!("default"))
        );
        assert!(m["subject"].is_string() && m["html"].is_string(), "{m}");
        assert!(m["id"].as_str().unwrap().starts_with("msg_"), "{m}");
        assert_eq!(req.header("webhook-id"), m["id"].as_str());
        assert!(m["expires_at"].as_str().unwrap().ends_with('Z'), "{m}");
        let st = status_of(&app, &sk, &key).await;
        assert_eq!(st["delivery"]["transport"], "http", "{st}");
        let code = code_in(m["text"].as_str().unwrap());
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    }
    assert!(app.smtp.messages().is_empty(), "nothing went to the relay");
}

/// `delivery.http_timeout_seconds` may be as short as 1 s (its range starts there): an
/// endpoint that answers at once is still sent to, synchronously and from the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shortest_http_timeout_still_sends() {
    let rx = HttpReceiver::start(true).await;
    for secs in [1, 2] {
        let ca = rx.ca_path.clone();
        let app = spawn_app_with(move |s| {
            s.webhooks.allow_private_hosts = true;
            s.webhooks.extra_root_certificates = vec![ca];
            s.delivery.http_timeout_seconds = secs;
        })
        .await;
        let (_, sk) = app.tenant().await;
        let secret = put_http(&app, &sk, &rx, "primary").await;
        let sent = rx.requests().len();
        let (s, v) = mint(&app, &sk, &format!("sync{secs}@example.com"), "sync").await;
        assert_eq!(s, StatusCode::CREATED, "{secs} s: {v}");
        let req = rx.wait_for(sent + 1).await.pop().unwrap();
        assert!(signed_with(&secret, &req));
        let (s, v) = mint(&app, &sk, &format!("async{secs}@example.com"), "async").await;
        assert_eq!(s, StatusCode::ACCEPTED, "{secs} s: {v}");
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let req = rx.wait_for(sent + 2).await.pop().unwrap();
        let code = code_in(req.json()["text"].as_str().unwrap());
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_answer_decides_retry_or_failure_and_redirects_are_not_followed() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    put_http(&app, &sk, &rx, "primary").await;

    // 500: transient. A sync mint answers 502; an async one is tried again and delivered.
    rx.answer_next(&[500]);
    let (s, v) = mint(&app, &sk, "a@example.com", "sync").await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::BAD_GATEWAY, &json!("http_unavailable")),
        "{v}"
    );
    rx.answer_next(&[500]);
    let (s, v) = mint(&app, &sk, "b@example.com", "async").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let key = v["shareable_key"].as_str().unwrap().to_string();
    attempts_recorded(&app, &sk, &key, 1).await;
    app.clock.advance_secs(2);
    let got = rx.wait_for(3).await;
    assert_eq!(
        got[1].json()["id"],
        got[2].json()["id"],
        "a retry carries the same id"
    );
    let code = code_in(got[2].json()["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);

    // 429 with Retry-After: not before the endpoint asked.
    rx.set_retry_after(Some("120"));
    rx.answer_next(&[429]);
    let (_, v) = mint(&app, &sk, "c@example.com", "async").await;
    let key = v["shareable_key"].as_str().unwrap().to_string();
    attempts_recorded(&app, &sk, &key, 1).await;
    rx.set_retry_after(None);
    app.clock.advance_secs(30);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests().len(), 4, "Retry-After honoured");
    app.clock.advance_secs(100);
    let got = rx.wait_for(5).await;
    assert_eq!(got[4].json()["to"], "c@example.com");
    let code = code_in(got[4].json()["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);

    // 400 and 302: refused for good (the redirect is not followed), never tried again.
    for (i, status) in [400u16, 302].into_iter().enumerate() {
        rx.answer_next(&[status]);
        let (_, v) = mint(&app, &sk, &format!("r{i}@example.com"), "async").await;
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let mut st = Value::Null;
        for _ in 0..100 {
            st = status_of(&app, &sk, &key).await;
            if st["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            (&st["status"], &st["delivery"]["reason"]),
            (&json!("failed"), &json!("http_rejected")),
            "{status}: {st}"
        );
        let before = rx.requests().len();
        app.clock.advance_secs(60);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(rx.requests().len(), before, "{status} is not retried");
        assert!(rx.requests().iter().all(|r| r.path == "/send"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_endpoint_takes_the_message_when_the_relay_fails() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    let secret = put_http(&app, &sk, &rx, "fallback").await;
    // The relay up: SMTP takes it, the endpoint hears nothing.
    let (key, _) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(
        status_of(&app, &sk, &key).await["delivery"]["transport"],
        "smtp"
    );
    assert!(rx.requests().is_empty());
    // The relay down: the same attempt goes to the endpoint.
    app.smtp.set_mode(Mode::Down);
    let (s, v) = mint(&app, &sk, "bob@example.com", "sync").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let req = rx.wait_for(1).await.pop().unwrap();
    assert!(signed_with(&secret, &req));
    assert_eq!(
        status_of(&app, &sk, &key).await["delivery"]["transport"],
        "http"
    );
    let code = code_in(req.json()["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// The Python receiver of docs/api.md ("Delivery over HTTP"), as written there.
fn documented_receiver() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let start = doc
        .find("```python\n# otpmint HTTP transport")
        .expect("the receiver in docs/api.md");
    let code = &doc[start + "```python\n".len()..];
    code[..code.find("```").unwrap()].to_string()
}

/// A child process killed when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_receiver_in_the_docs_forwards_what_it_verifies() {
    assert!(
        crate::tools::apt_tools(&["python3"], &["python3"], false),
        "python3 is needed to run the documented receiver, and apt-get could not install it (run the tests as root, or apt-get install python3)"
    );
    // The provider's API the receiver forwards to.
    let provider = HttpReceiver::start(false).await;
    let app = spawn_app_with(|s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.allow_plaintext = true;
    })
    .await;
    let (_, sk) = app.tenant().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/otp");
    let (s, v) = body(
        app.put(
            "/v1/tenant/transport/http",
            &sk,
            json!({"url": url, "use": "primary"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let script = app.dir.path().join("receiver.py");
    std::fs::write(&script, documented_receiver()).unwrap();
    let _receiver = Child(
        std::process::Command::new("python3")
            .arg(&script)
            .env("OTPMINT_SECRET", &secret)
            .env("PROVIDER_URL", provider.url("/v1/send"))
            .env("PROVIDER_TOKEN", "provider-token")
            .env("PORT", port.to_string())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the receiver listens");

    // A mint goes otpmint -> receiver (signature checked) -> provider, and the code verifies.
    let (s, v) = mint(&app, &sk, "ada@example.com", "sync").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let sent = provider.wait_for(1).await.pop().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer provider-token"));
    let m = sent.json();
    assert_eq!(
        (&m["to"], &m["channel"]),
        (&json!("ada@example.com"), &json!("email")),
        "{m}"
    );
    let code = code_in(m["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);

    // A request it cannot verify is refused and forwards nothing.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .body(r#"{"id":"msg_forged","channel":"email","to":"eve@example.com","text":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(provider.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_may_have_forwarded_is_not_bypassed_one_that_refused_is() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    // The endpoint first, the relay (as smtp_fallback) after it.
    let fb = app.smtp_json();
    let r = app
        .patch("/v1/tenant", &sk, json!({ "smtp_fallback": fb }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    put_http(&app, &sk, &rx, "primary").await;
    // A 502 may have been forwarded: no second copy through the relay.
    rx.answer_next(&[502]);
    let (s, v) = mint(&app, &sk, "a@example.com", "sync").await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::BAD_GATEWAY, &json!("http_unavailable")),
        "{v}"
    );
    assert_eq!(app.smtp.count_to("a@example.com"), 0);
    // A 503 turned it away: the relay takes it at once.
    rx.answer_next(&[503]);
    let (s, v) = mint(&app, &sk, "b@example.com", "sync").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    assert_eq!(
        status_of(&app, &sk, &key).await["delivery"]["transport"],
        "smtp_fallback"
    );
    let msg = app.smtp.wait_for("b@example.com", 1).await;
    assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);
}

/// An endpoint that took the request and answered nothing within the timeout: the message
/// may have gone out, so it is `unknown`, valid, and never sent again by itself (sync or
/// async; API.md §19.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_endpoint_never_answered_is_unknown_and_not_sent_again() {
    let rx = HttpReceiver::start(true).await;
    let app = app_for(&rx).await;
    let (_, sk) = app.tenant().await;
    put_http(&app, &sk, &rx, "primary").await;
    rx.set_delay(Duration::from_secs(5));
    let (s, v) = mint(&app, &sk, "ada@example.com", "sync").await;
    assert_eq!(
        (s, v["delivery"].as_str()),
        (StatusCode::CREATED, Some("unknown")),
        "{v}"
    );
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let (s, v) = mint(&app, &sk, "bob@example.com", "async").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let queued = v["shareable_key"].as_str().unwrap().to_string();
    attempts_recorded(&app, &sk, &queued, 1).await;
    for _ in 0..5 {
        app.clock.advance_secs(60);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2, "one request per message");
    for (k, req) in [(&key, &reqs[0]), (&queued, &reqs[1])] {
        let st = status_of(&app, &sk, k).await;
        assert_eq!(
            (
                st["status"].as_str(),
                st["delivery"]["status"].as_str(),
                st["delivery"]["attempts"].as_i64()
            ),
            (Some("pending"), Some("unknown"), Some(1)),
            "{st}"
        );
        let code = code_in(req.json()["text"].as_str().unwrap());
        assert_eq!(app.verify(&sk, k, &code).await.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_through_the_endpoint_takes_its_place_in_the_endpoints_window_not_the_relays() {
    // One session per window: the relay's is taken by an email it holds unanswered.
    let rx = HttpReceiver::start(true).await;
    let ca = rx.ca_path.clone();
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 3;
        s.smtp.timeout_seconds = 60;
        s.smtp.initial_connections = 1;
        s.smtp.max_connections_per_tenant = 1;
    })
    .await;
    let (_, sk) = app.tenant().await;
    app.allow_sms(&sk, &["DE"]).await;
    let secret = put_http(&app, &sk, &rx, "fallback").await;
    app.smtp.hold();
    let (s, v) = mint(&app, &sk, "ada@example.com", "async").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let email_key = v["shareable_key"].as_str().unwrap().to_string();
    for _ in 0..300 {
        if app.smtp.in_data() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.smtp.in_data(), 1, "the relay holds the email's session");

    // A text message goes to the endpoint at once, while the relay's one session is busy.
    let (s, v) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"phone": "+4915112345678", "delivery": "async"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let sms_key = v["shareable_key"].as_str().unwrap().to_string();
    let req = rx.wait_for(1).await.pop().unwrap();
    assert!(signed_with(&secret, &req));
    assert_eq!(req.json()["to"], "+4915112345678");
    assert_eq!(app.smtp.in_data(), 1, "the email is still held");
    let held = status_of(&app, &sk, &email_key).await["delivery"]["status"].clone();
    assert!(held == "queued" || held == "sending", "{held}");
    let sms = delivery_becomes(&app, &sk, &sms_key, "sent").await;
    assert_eq!(sms["delivery"]["transport"], "http", "{sms}");
    let code = code_in(req.json()["text"].as_str().unwrap());
    assert_eq!(app.verify(&sk, &sms_key, &code).await.0, StatusCode::OK);

    // The relay answers: the email is sent too.
    app.smtp.release();
    let email = delivery_becomes(&app, &sk, &email_key, "sent").await;
    assert_eq!(email["delivery"]["transport"], "smtp", "{email}");
    app.smtp.wait_for("ada@example.com", 1).await;
}

/// Wait until the key's delivery status is `want`; its status then.
async fn delivery_becomes(app: &TestApp, sk: &str, key: &str, want: &str) -> Value {
    let mut v = Value::Null;
    for _ in 0..200 {
        v = status_of(app, sk, key).await;
        if v["delivery"]["status"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the delivery of {key} never became {want}: {v}");
}
