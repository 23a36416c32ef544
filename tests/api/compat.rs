//! OtpMint-compatible routes over HTTP with the real SMTP server.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::{SMTP_PASS, SMTP_USER};

const KEY: &str = "legacy-client-secret-key-0001";

fn reg_body(app: &TestApp, key: &str) -> Value {
    json!({"secretKey": key, "smtp_host": "127.0.0.1", "smtp_port": app.smtp.port,
           "smtp_mail": SMTP_USER, "smtp_password": SMTP_PASS})
}

async fn text(r: reqwest::Response) -> (StatusCode, String, String) {
    let s = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (s, ct, r.text().await.unwrap())
}

/// POST `body` as it is (not JSON made by serde) to a compat route, as the admin.
async fn post_raw(app: &TestApp, path: &str, body: String) -> (StatusCode, String, String) {
    let r = app
        .client
        .post(format!("{}{path}", app.addr))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    text(r).await
}

async fn register(app: &TestApp) {
    let (s, ct, body) = text(app.post("/reg_secretkey", ADMIN, reg_body(app, KEY)).await).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "Registration of secretKey succeeded.")
    );
    assert_eq!(ct, "text/html; charset=utf-8");
}

async fn compat_mint(app: &TestApp, mail: &str) -> (String, String) {
    let before = app.smtp.count_to(mail);
    let (s, _, key) = text(
        app.post("/otp", "", json!({"mail": mail, "secretKey": KEY}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{key}");
    let m = app.smtp.wait_for(mail, before + 1).await;
    (key, m.code())
}

async fn compat_verify(app: &TestApp, key: &str, otp: Value) -> (StatusCode, String) {
    let (s, _, b) = text(
        app.post("/verify-otp", "", json!({"shareableKey": key, "otp": otp}))
            .await,
    )
    .await;
    (s, b)
}

#[tokio::test]
async fn registration_needs_the_admin_token_and_a_16_character_key() {
    let app = spawn_app().await;
    let (s, _, b) = text(app.post("/reg_secretkey", "", reg_body(&app, KEY)).await).await;
    assert_eq!((s, b.as_str()), (StatusCode::UNAUTHORIZED, "Unauthorized"));
    let (s, _, b) = text(
        app.post("/reg_secretkey", ADMIN, reg_body(&app, "short-key"))
            .await,
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Error: secretKey must be at least 16 characters"
        )
    );
    // A key the same client could not send back as a bearer token on /v1 (API.md §2), or
    // one too long, is refused with a sentence saying why; nothing is registered.
    let long = "k".repeat(513);
    for (key, says) in [
        ("ééé-0123456789abcdef", "printable ASCII"),
        ("trailing-space-key-xxxx   ", "printable ASCII"),
        (&*" ".repeat(20), "printable ASCII"),
        ("tab\tinside-the-key-0000", "printable ASCII"),
        (&*long, "at most 512 characters"),
    ] {
        let (s, _, b) = text(app.post("/reg_secretkey", ADMIN, reg_body(&app, key)).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{key:?}");
        assert!(
            b.starts_with("Error: secretKey must be") && b.contains(says),
            "{key:?}: {b}"
        );
    }
    let list: serde_json::Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 0, "{list}");
    // 512 characters, inner spaces and punctuation are fine, and work on /v1 too.
    let odd = format!("{} !\"#$%&'()*+,-./:;<=>?@[\\]^_`{{|}}~", "k".repeat(479));
    assert_eq!(odd.len(), 512);
    let (s, _, b) = text(
        app.post("/reg_secretkey", ADMIN, reg_body(&app, &odd))
            .await,
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::OK, "Registration of secretKey succeeded.")
    );
    assert_eq!(app.get("/v1/tenant", &odd).await.status(), StatusCode::OK);
    let mut missing = reg_body(&app, KEY);
    missing.as_object_mut().unwrap().remove("smtp_password");
    let (s, _, b) = text(app.post("/reg_secretkey", ADMIN, missing).await).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::BAD_REQUEST, "Missing required fields")
    );
    let (s, _, b) = post_raw(&app, "/reg_secretkey", "not json".into()).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::BAD_REQUEST, "Missing required fields")
    );
    register(&app).await;
    let (s, _, b) = text(app.post("/reg_secretkey", ADMIN, reg_body(&app, KEY)).await).await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Unknown Error - Internal Error Code: 3009"
        )
    );
}

#[tokio::test]
async fn registration_refuses_private_hosts_when_not_allowed() {
    let app = spawn_app_with(|s| s.smtp.allow_private_hosts = false).await;
    let (s, _, b) = text(app.post("/reg_secretkey", ADMIN, reg_body(&app, KEY)).await).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::BAD_REQUEST, "Error: SMTP host not allowed")
    );
}

/// A host that is no host name at all, or port 0, is a refused host (API.md §6.8), an empty
/// one a missing field; neither registers anything.
#[tokio::test]
async fn registration_refuses_a_host_that_is_no_host_name_or_port_zero() {
    let app = spawn_app().await;
    for blank in ["", " "] {
        let mut empty = reg_body(&app, KEY);
        empty["smtp_host"] = json!(blank);
        let (s, _, b) = text(app.post("/reg_secretkey", ADMIN, empty).await).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::BAD_REQUEST, "Missing required fields"),
            "{blank:?}"
        );
    }
    let long = "a".repeat(254);
    for (host, port) in [
        ("mail example.com", json!(587)),
        (&*long, json!(587)),
        ("127.0.0.1", json!(0)),
    ] {
        let mut reg = reg_body(&app, KEY);
        reg["smtp_host"] = json!(host);
        reg["smtp_port"] = port;
        let (s, _, b) = text(app.post("/reg_secretkey", ADMIN, reg).await).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::BAD_REQUEST, "Error: SMTP host not allowed"),
            "{host:?}"
        );
    }
    register(&app).await;
}

#[tokio::test]
async fn otp_and_verify_otp_work_end_to_end() {
    let app = spawn_app().await;
    register(&app).await;
    let (key, code) = compat_mint(&app, "ada@example.com").await;
    assert_eq!(key.len(), 10);
    assert!(key.bytes().all(|b| b.is_ascii_alphabetic()));
    assert_eq!(code.len(), 6);
    assert_eq!(
        compat_verify(&app, &key, json!(wrong(&code))).await,
        (StatusCode::FORBIDDEN, "OTP Mismatched!".into())
    );
    assert_eq!(
        compat_verify(&app, &key, json!(code)).await,
        (StatusCode::CREATED, "OTP Matched!".into())
    );
    assert_eq!(
        compat_verify(&app, &key, json!(code)).await,
        (StatusCode::BAD_REQUEST, "Unknown Error in blocker".into())
    );
}

#[tokio::test]
async fn a_numeric_otp_counts_as_its_digits() {
    let app = spawn_app().await;
    register(&app).await;
    loop {
        let (key, code) = compat_mint(&app, "ada@example.com").await;
        if code.starts_with('0') {
            continue; // a JSON number cannot carry a leading zero
        }
        let n: u64 = code.parse().unwrap();
        assert_eq!(
            compat_verify(&app, &key, json!(n)).await.0,
            StatusCode::CREATED
        );
        break;
    }
}

#[tokio::test]
async fn unknown_keys_bad_addresses_and_smtp_failures_answer_6055() {
    let app = spawn_app().await;
    register(&app).await;
    for body in [
        json!({"mail": "ada@example.com", "secretKey": "not-a-registered-key"}),
        json!({"mail": "nope", "secretKey": KEY}),
        json!({"mail": "a@example.com, b@example.com", "secretKey": KEY}),
        json!({"secretKey": KEY}),
    ] {
        let (s, _, b) = text(app.post("/otp", "", body).await).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::BAD_REQUEST, "Error: Mail Error -- 6055")
        );
    }
    // `mail` given twice is refused, not sent to the last one.
    let twice =
        format!(r#"{{"mail": "a@example.com", "mail": "b@example.com", "secretKey": "{KEY}"}}"#);
    let (s, _, b) = post_raw(&app, "/otp", twice).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::BAD_REQUEST, "Error: Mail Error -- 6055")
    );
    // A body that is no JSON object holds no `mail` either (API.md §6.8).
    for unreadable in ["not json", "", "null", r#"["ada@example.com"]"#] {
        let (s, _, b) = post_raw(&app, "/otp", unreadable.into()).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::BAD_REQUEST, "Error: Mail Error -- 6055"),
            "{unreadable:?}"
        );
    }
    assert!(app.smtp.messages().is_empty(), "nothing is sent");
    app.smtp.set_mode(crate::smtp::Mode::RejectRecipients);
    let (s, _, b) = text(
        app.post(
            "/otp",
            "",
            json!({"mail": "ada@example.com", "secretKey": KEY}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::BAD_REQUEST, "Error: Mail Error -- 6055")
    );
}

#[tokio::test]
async fn max_attempts_is_exact_under_twenty_concurrent_guesses() {
    let app = spawn_app().await;
    register(&app).await;
    let (key, code) = compat_mint(&app, "ada@example.com").await;
    let bad = wrong(&code);
    let futs = (0..20).map(|_| compat_verify(&app, &key, json!(bad.clone())));
    let results = futures_util::future::join_all(futs).await;
    let mismatched = results
        .iter()
        .filter(|r| r.0 == StatusCode::FORBIDDEN)
        .count();
    assert_eq!(mismatched, 3, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.0 != StatusCode::FORBIDDEN)
        .all(|r| *r
            == (
                StatusCode::BAD_REQUEST,
                "Maximum Attempts Reached!".to_string()
            )));
    assert_eq!(
        compat_verify(&app, &key, json!(code)).await,
        (StatusCode::BAD_REQUEST, "Maximum Attempts Reached!".into())
    );
}

#[tokio::test]
async fn compat_codes_expire() {
    let app = spawn_app().await;
    register(&app).await;
    let (key, code) = compat_mint(&app, "ada@example.com").await;
    app.clock.advance_secs(601);
    assert_eq!(
        compat_verify(&app, &key, json!(code)).await,
        (StatusCode::BAD_REQUEST, "Unknown Error in blocker".into())
    );
}

#[tokio::test]
async fn v1_keys_are_unknown_to_verify_otp_and_the_compat_tenant_can_use_v1() {
    let app = spawn_app().await;
    register(&app).await;
    let (key, code) = app.mint(KEY, "ada@example.com").await;
    assert_eq!(
        compat_verify(&app, &key, json!(code)).await,
        (StatusCode::BAD_REQUEST, "Unknown Error in blocker".into())
    );
    assert_eq!(app.verify(KEY, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn compat_routes_can_be_turned_off() {
    let app = spawn_app_with(|s| s.compat.otpmint = false).await;
    for path in ["/reg_secretkey", "/otp", "/verify-otp"] {
        assert_eq!(
            app.post(path, ADMIN, json!({})).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn a_disabled_tenant_cannot_verify_and_a_malformed_otp_on_an_ended_key_is_a_blocker_error() {
    let app = spawn_app().await;
    register(&app).await;
    let (key, code) = compat_mint(&app, "ada@example.com").await;
    assert_eq!(
        compat_verify(&app, &key, json!("12")).await,
        (StatusCode::FORBIDDEN, "OTP Mismatched!".into())
    );
    assert_eq!(
        compat_verify(&app, &key, json!(code)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        compat_verify(&app, &key, json!("12")).await,
        (StatusCode::BAD_REQUEST, "Unknown Error in blocker".into())
    );
    let (key2, code2) = compat_mint(&app, "bob@example.com").await;
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    let id = list["tenants"][0]["id"].as_str().unwrap().to_string();
    app.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(
        compat_verify(&app, &key2, json!(code2)).await,
        (StatusCode::BAD_REQUEST, "Unknown Error in blocker".into())
    );
    let r = app
        .post(
            "/reg_secretkey",
            "",
            reg_body(&app, "another-key-0000000001"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn codes_hashed_either_way_verify_after_the_hashing_algorithm_changes() {
    use otpmint::config::HashAlgorithm;
    let app = spawn_app().await;
    register(&app).await;
    let (_, sk) = app.tenant().await;
    // Made under argon2id.
    let (argon_key, argon_code) = app.mint(&sk, "ada@example.com").await;
    let (argon_compat, argon_compat_code) = compat_mint(&app, "bob@example.com").await;
    assert!(!String::from_utf8_lossy(&app.stored_bytes()).contains("$hmac-sha256$"));

    let mut app = app;
    app.settings.hashing.algorithm = HashAlgorithm::HmacSha256;
    let app = app.restart().await;
    let (hmac_key, hmac_code) = app.mint(&sk, "cy@example.com").await;
    let (hmac_compat, hmac_compat_code) = compat_mint(&app, "dee@example.com").await;
    let stored = String::from_utf8_lossy(&app.stored_bytes()).into_owned();
    assert!(
        stored.contains("$hmac-sha256$v=1$"),
        "the stored form names HMAC"
    );
    assert!(
        stored.contains("$argon2id$v=19$"),
        "earlier codes keep theirs"
    );
    // Under HMAC: a wrong code uses an attempt, the right one verifies; argon2id codes too.
    let (s, v) = app.verify(&sk, &hmac_key, &wrong(&hmac_code)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("otp_mismatch"))
    );
    assert_eq!(v["attempts_remaining"], 4);
    assert_eq!(
        app.verify(&sk, &hmac_key, &hmac_code).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.verify(&sk, &argon_key, &argon_code).await.0,
        StatusCode::OK
    );
    assert_eq!(
        compat_verify(&app, &argon_compat, json!(argon_compat_code)).await,
        (StatusCode::CREATED, "OTP Matched!".into())
    );

    // And back: HMAC codes keep verifying under argon2id.
    let (later_key, later_code) = app.mint(&sk, "eve@example.com").await;
    let mut app = app;
    app.settings.hashing.algorithm = HashAlgorithm::Argon2id;
    let app = app.restart().await;
    assert_eq!(
        compat_verify(&app, &hmac_compat, json!(wrong(&hmac_compat_code))).await,
        (StatusCode::FORBIDDEN, "OTP Mismatched!".into())
    );
    assert_eq!(
        compat_verify(&app, &hmac_compat, json!(hmac_compat_code)).await,
        (StatusCode::CREATED, "OTP Matched!".into())
    );
    assert_eq!(
        app.verify(&sk, &later_key, &later_code).await.0,
        StatusCode::OK
    );
}

/// OtpMint's routes answer POST only; another method is 405 with `Allow: POST`
/// (API.md §18.5), like every route.
#[tokio::test]
async fn another_method_on_an_otpmint_route_is_405_with_allow() {
    let app = spawn_app().await;
    for path in ["/otp", "/verify-otp", "/reg_secretkey"] {
        let r = app
            .client
            .get(format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.headers()["allow"], "POST", "{path}");
    }
}
