//! Tenants over HTTP: admin CRUD, self-service, secret rotation, registration modes,
//! validation, and the operational basics (health, problem+json, request ids).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn create_returns_the_tenant_and_a_secret_shown_once() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Acme", "smtp": app.smtp_json(), "policy": {"code_length": 8}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("tnt_"));
    let sk = v["secret_key"].as_str().unwrap();
    assert!(sk.starts_with("sk_") && sk.len() >= 3 + 22);
    assert_eq!(v["smtp"]["host"], "127.0.0.1");
    assert_eq!(v["smtp"]["tls"], "starttls");
    assert_eq!(
        v["policy"],
        json!({"code_length": 8, "ttl_seconds": 600, "max_attempts": 5})
    );
    assert!(v["smtp"].get("password").is_none());
    let got: Value = app
        .get(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .json()
        .await
        .unwrap();
    assert!(got.get("secret_key").is_none());
    assert!(!got.to_string().contains(crate::smtp::SMTP_PASS));
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    // the policy is used for codes
    let (_, code) = app.mint(sk, "ada@example.com").await;
    assert_eq!(code.len(), 8);
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    for bearer in ["", "wrong", sk.as_str()] {
        let r = app.get("/v1/tenants", bearer).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            app.get(&format!("/v1/tenants/{id}"), bearer).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let r = app
            .post(
                "/v1/tenants",
                bearer,
                json!({"name": "x", "smtp": app.smtp_json()}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn an_empty_admin_token_disables_the_admin_api_unless_registration_is_open() {
    let app = spawn_app_with(|s| s.admin.token = secrecy::SecretString::from(String::new())).await;
    assert_eq!(
        app.get("/v1/tenants", "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/v1/tenants",
            "",
            json!({"name": "x", "smtp": app.smtp_json()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let open = spawn_app_with(|s| {
        s.admin.token = secrecy::SecretString::from(String::new());
        s.registration.mode = otpmint::config::RegistrationMode::Open;
    })
    .await;
    let r = open
        .post(
            "/v1/tenants",
            "",
            json!({"name": "x", "smtp": open.smtp_json()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        open.get("/v1/tenants", "").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn closed_registration_answers_403() {
    let app =
        spawn_app_with(|s| s.registration.mode = otpmint::config::RegistrationMode::Closed).await;
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "x", "smtp": app.smtp_json()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "registration_closed");
    // OtpMint's route too, admin token or not (API.md §6.7); nothing is registered.
    let smtp = app.smtp_json();
    let reg = json!({"secretKey": "a-closed-registration-key", "smtp_host": smtp["host"],
                     "smtp_port": smtp["port"], "smtp_mail": "otp@example.com",
                     "smtp_password": "pw"});
    for token in [ADMIN, ""] {
        let r = app.post("/reg_secretkey", token, reg.clone()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.text().await.unwrap(), "registration_closed");
    }
    let (s, v) = body(app.get("/v1/tenants", ADMIN).await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tenants"], json!([]), "{v}");
}

#[tokio::test]
async fn invalid_tenant_bodies_are_400_with_field_errors() {
    let app = spawn_app().await;
    let mut smtp = app.smtp_json();
    let cases = vec![
        (
            json!({"name": "x", "smtp": smtp.clone(), "policy": {"code_length": 3}}),
            "policy.code_length",
        ),
        (
            json!({"name": "x", "smtp": smtp.clone(), "policy": {"ttl_seconds": 0}}),
            "policy.ttl_seconds",
        ),
        (
            json!({"name": "x", "smtp": smtp.clone(), "policy": {"max_attempts": 21}}),
            "policy.max_attempts",
        ),
        (json!({"name": "", "smtp": smtp.clone()}), "name"),
        (
            json!({"name": "x", "smtp": smtp.clone(), "extra": 1}),
            "extra",
        ),
        (json!({"name": 5, "smtp": smtp.clone()}), "name"),
    ];
    for (body, field) in cases {
        let r = app.post("/v1/tenants", ADMIN, body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "invalid_request");
        assert!(v["errors"].to_string().contains(field), "{field}: {v}");
    }
    for (k, val) in [
        ("from", json!("not a mailbox")),
        ("tls", json!("sometimes")),
        ("port", json!(0)),
        ("port", json!(70000)),
        // A URL, host:port, a path or user info is no host (400), not a refused one (422,
        // whose advice names a setting that could not allow it): private hosts are allowed
        // in this app.
        ("host", json!("smtp://localhost")),
        ("host", json!("8.8.8.8:587")),
        ("host", json!("localhost/x")),
        ("host", json!("user@8.8.8.8")),
    ] {
        smtp = app.smtp_json();
        smtp[k] = val;
        let r = app
            .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{k}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["errors"].to_string().contains(&format!("smtp.{k}")),
            "{v}"
        );
    }
    // duplicate keys
    let r = app
        .client
        .post(format!("{}/v1/tenants", app.addr))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"name":"a","name":"b","smtp":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(
        list["tenants"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );
}

#[tokio::test]
async fn smtp_policy_refusals_are_422_and_the_canary_sees_nothing() {
    let canary = crate::smtp::Canary::start().await;
    let cport = canary.addr.port();
    let app = spawn_app_with(|s| {
        s.smtp.allow_private_hosts = false;
        s.smtp.allowed_ports.push(cport);
    })
    .await;
    for host in [
        "127.0.0.1",
        "127.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[127.0.0.1]",
        "[10.1.2.3]",
        "10.1.2.3",
        "169.254.169.254",
        "100.64.0.1",
    ] {
        let mut smtp = app.smtp_json();
        smtp["host"] = json!(host);
        smtp["port"] = json!(cport);
        let r = app
            .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{host}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "smtp_host_not_allowed");
        // The refusal names the setting that allows it (API.md §18.8).
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("smtp.allow_private_hosts"),
            "{v}"
        );
    }
    // A public address literal, as SMTP writes one, is a host like its bare address.
    let mut smtp = app.smtp_json();
    smtp["host"] = json!("[8.8.8.8]");
    smtp["port"] = json!(cport);
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
        .await;
    let (s, v) = body(r).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut smtp = app.smtp_json();
    smtp["host"] = json!("8.8.8.8");
    smtp["port"] = json!(25);
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "smtp_port_not_allowed");
    assert!(
        v["detail"].as_str().unwrap().contains("smtp.allowed_ports"),
        "{v}"
    );
    let mut smtp = app.smtp_json();
    smtp["host"] = json!("8.8.8.8");
    smtp["tls"] = json!("none");
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "smtp_plaintext_not_allowed"
    );
    // A full-width spelling of a refused address is that address (and refused as it).
    let mut smtp = app.smtp_json();
    smtp["host"] = json!("１２７．０．０．１");
    smtp["port"] = json!(cport);
    let (s, v) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("smtp_host_not_allowed")
        ),
        "{v}"
    );
    assert_eq!(canary.hits(), 0, "no connection may reach a refused host");
}

/// A host the address policy cannot read as a name or an address is a bad field (400 naming
/// `smtp.host`), not a refused address whose advice (allow private hosts) no setting could
/// follow; a name in another script is stored in the ASCII form that is dialled (found by a
/// black-box audit).
#[tokio::test]
async fn a_host_that_is_no_name_is_a_bad_field_and_a_name_is_kept_as_dialled() {
    let app = spawn_app().await;
    assert!(app.settings.smtp.allow_private_hosts);
    let long_label = format!("{}.example", "a".repeat(64));
    for host in [
        long_label.as_str(),
        "a..b.example",
        "-a.example",
        "a-.example",
        "1.2.3.999",
    ] {
        let mut smtp = app.smtp_json();
        smtp["host"] = json!(host);
        let (s, v) = body(
            app.post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
                .await,
        )
        .await;
        assert_eq!(
            (s, &v["errors"][0]["field"]),
            (StatusCode::BAD_REQUEST, &json!("smtp.host")),
            "{host}: {v}"
        );
    }
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(
        list["tenants"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );
    // (Names that resolve here: the relay's host is resolved when it is set.)
    for (given, kept) in [
        ("ｌｏｃａｌｈｏｓｔ", "localhost"),
        ("LocalHost.", "localhost"),
        ("１２７．０．０．１", "127.0.0.1"),
    ] {
        let mut smtp = app.smtp_json();
        smtp["host"] = json!(given);
        let (s, v) = body(
            app.post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
                .await,
        )
        .await;
        assert_eq!(
            (s, &v["smtp"]["host"]),
            (StatusCode::CREATED, &json!(kept)),
            "{given}: {v}"
        );
    }
}

#[tokio::test]
async fn patch_changes_fields_and_moving_smtp_requires_the_password() {
    let app = spawn_app().await;
    let (id, _) = app.tenant().await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"name": "Acme 2", "policy": {"ttl_seconds": 120}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "Acme 2");
    assert_eq!(v["policy"]["ttl_seconds"], 120);
    assert_eq!(v["policy"]["code_length"], 6);
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"username": "other"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["errors"]
        .to_string()
        .contains("smtp.password"));
    // Every error of a change comes in one answer: a bad sender, a bad host and the
    // missing password of the move together, and nothing changes.
    for body in [
        json!({"smtp": {"host": "new.example", "from": "not a mailbox"}}),
        json!({"smtp": {"host": "bad host", "from": "not a mailbox"}}),
    ] {
        let r = app.patch(&format!("/v1/tenants/{id}"), ADMIN, body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: Value = r.json().await.unwrap();
        let fields: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&"smtp.from"), "{v}");
        assert!(fields.contains(&"smtp.password"), "{v}");
    }
    let v: Value = app
        .get(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["smtp"]["host"], "127.0.0.1");
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"from": "New <new@acme.example>"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["smtp"]["from"],
        "New <new@acme.example>"
    );
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"policy": {"max_attempts": 0}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .patch(
            "/v1/tenants/tnt_doesnotexist00000000",
            ADMIN,
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_changed_smtp_password_is_used_for_the_next_send() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"password": "wrong-password"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "smtp_auth");
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"password": crate::smtp::SMTP_PASS}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.mint(&sk, "ada@example.com").await;
}

#[tokio::test]
async fn tenant_self_service_reads_and_changes_name_and_smtp_only() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let v: Value = app.get("/v1/tenant", &sk).await.json().await.unwrap();
    assert_eq!(v["id"], id.as_str());
    let r = app.patch("/v1/tenant", &sk, json!({"name": "Mine"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The admin's fields are not in a tenant's own body, even as null (its description
    // leaves them out).
    for (body, field) in [
        (json!({"policy": {"max_attempts": 20}}), "policy"),
        (json!({"enabled": false}), "enabled"),
        (json!({"name": "Other", "policy": null}), "policy"),
        (json!({"test": null}), "test"),
    ] {
        let r = app.patch("/v1/tenant", &sk, body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["field"], field, "{v}");
    }
    let r = app
        .patch("/v1/tenant", &sk, json!({"smtp": {"host": "localhost"}}))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "host change needs the password"
    );
    let v: Value = app.get("/v1/tenant", &sk).await.json().await.unwrap();
    assert_eq!(v["name"], "Mine");
    assert_eq!(v["policy"]["max_attempts"], 5);
    assert_eq!(v["smtp"]["host"], "127.0.0.1");
    // The same address spelt another way is no move: the stored password stays.
    for host in ["[127.0.0.1]", "127.0.0.1"] {
        let r = app
            .patch("/v1/tenant", &sk, json!({"smtp": {"host": host}}))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{host}");
        assert_eq!(r.json::<Value>().await.unwrap()["smtp"]["host"], host);
    }
}

#[tokio::test]
async fn rotate_secret_replaces_the_key_and_grace_keeps_the_old_one_for_a_while() {
    let app = spawn_app().await;
    let (id, old) = app.tenant().await;
    let r = app
        .post(
            &format!("/v1/tenants/{id}/rotate-secret"),
            ADMIN,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let new = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    assert_eq!(app.get("/v1/tenant", &old).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/tenant", &new).await.status(), StatusCode::OK);
    app.clock.advance_secs(61);
    assert_eq!(
        app.get("/v1/tenant", &old).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/v1/tenant", &new).await.status(), StatusCode::OK);
    // default grace 0: the old key stops at once; no body is fine
    let r = app
        .client
        .post(format!("{}/v1/tenants/{id}/rotate-secret", app.addr))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get("/v1/tenant", &new).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            &format!("/v1/tenants/{id}/rotate-secret"),
            ADMIN,
            json!({"grace_seconds": 86401}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn disabled_tenants_cannot_authenticate_until_enabled() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["enabled"], false);
    assert_eq!(
        app.get("/v1/tenant", &sk).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(app.get("/v1/tenant", &sk).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn operations_basics_health_errors_and_request_ids() {
    let app = spawn_app().await;
    let r = app.get("/healthz", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);
    let r = app
        .client
        .get(format!("{}/healthz", app.addr))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    // Any visible id is echoed as sent; one too long, with a space or an `@` (an address
    // would reach the logs unmasked), or not ASCII is replaced.
    let (longest, too_long) = ("r".repeat(200), "r".repeat(201));
    for (sent, echoed) in [
        ("{4f1c-9a}req#1/a?b=c", true),
        (longest.as_str(), true),
        (too_long.as_str(), false),
        ("req 1", false),
        ("login:ada@example.com", false),
    ] {
        let r = app
            .client
            .get(format!("{}/healthz", app.addr))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        let got = r.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(got == sent, echoed, "{sent:?} → {got:?}");
        assert!(!got.is_empty());
    }
    let r = app
        .client
        .get(format!("{}/healthz", app.addr))
        .header(
            "x-request-id",
            reqwest::header::HeaderValue::from_bytes(b"\xfcn\xef").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"].as_bytes(), b"\xfcn\xef");
    let r = app.get("/nowhere", "").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.delete("/v1/otp/verify", "").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "/problems/method_not_allowed"
    );
    let (_, sk) = app.tenant().await;
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .bearer_auth(&sk)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The one media type the API description declares: another JSON-based one is not it.
    for media in ["application/problem+json", "application/merge-patch+json"] {
        let r = app
            .client
            .post(format!("{}/v1/otp", app.addr))
            .bearer_auth(&sk)
            .header("content-type", media)
            .body(json!({"email": "ada@example.com"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{media}");
    }
    // JSON under a Content-Encoding is refused rather than read as if plain (within a list
    // too); nothing is sent.
    let mint = json!({"email": "ada@example.com"}).to_string();
    for (media, encoding) in [
        ("application/json", "gzip"),
        ("application/json; charset=utf-8", "identity, br"),
    ] {
        let r = app
            .client
            .post(format!("{}/v1/otp", app.addr))
            .bearer_auth(&sk)
            .header("content-type", media)
            .header("content-encoding", encoding)
            .body(mint.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{media} {encoding}"
        );
    }
    assert!(app.smtp.messages().is_empty());
    // Two Authorization headers are no credential, whichever comes first.
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .header("authorization", format!("Bearer {sk}"))
        .header("authorization", "Bearer sk_other")
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let big = json!({"email": "a".repeat(17 * 1024)});
    let r = app.post("/v1/otp", &sk, big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .bearer_auth(&sk)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["field"], "body", "{v}");
    // A missing field is named as the field.
    let (s, v) = body(
        app.post("/v1/tenants", ADMIN, json!({"smtp": app.smtp_json()}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["errors"][0]["field"], &v["errors"][0]["message"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("name"),
            &json!("is required")
        ),
        "{v}"
    );
    // A bad query parameter is told as the query's, in the client's words.
    let (s, v) = body(app.get("/v1/tenant/stats?foo=bar", &sk).await).await;
    assert_eq!(
        (s, &v["errors"][0]["field"]),
        (StatusCode::BAD_REQUEST, &json!("query")),
        "{v}"
    );
    assert!(
        !v.to_string().contains("deserialize"),
        "no framework text: {v}"
    );
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .bearer_auth(&sk)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(app.smtp.messages().is_empty());
    // A route that takes no body refuses one and does nothing.
    let (key, _) = app.mint(&sk, "ada@example.com").await;
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({"zzz": 1}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let status = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
    assert_eq!(status["resends"], 0, "{status}");
    assert_eq!(app.smtp.messages().len(), 1, "the mint's message alone");
}

#[tokio::test]
async fn json_answers_name_their_charset() {
    let app = spawn_app().await;
    let r = app.get("/healthz", "").await;
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let r = app.get("/v1/tenants", ADMIN).await;
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
}

/// Names that could mislead on a page (API.md §17.8): bidirectional controls, zero-width
/// and other invisible characters are refused with 400 and change nothing.
#[tokio::test]
async fn tenant_names_with_invisible_or_bidirectional_characters_are_refused() {
    let app = spawn_app().await;
    for name in [
        "Acme\u{202E}lapyap",
        "Pay\u{200B}Pal",
        "A\u{2066}cme",
        "\u{FEFF}Acme",
        "Ac\u{00AD}me",
    ] {
        let r = app
            .post(
                "/v1/tenants",
                ADMIN,
                json!({"name": name, "smtp": app.smtp_json()}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["field"], "name", "{v}");
    }
    let (_, sk) = app.tenant().await;
    let r = app
        .patch("/v1/tenant", &sk, json!({"name": "Evil\u{202E}"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = app.get("/v1/tenant", &sk).await.json().await.unwrap();
    assert!(!v["name"].as_str().unwrap().contains('\u{202E}'));
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Bücher & Co 東京", "smtp": app.smtp_json()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// `check_relay` (API.md §18.8): connect, TLS and AUTH before saving, no mail; a failure is
/// 422 with the delivery reason and nothing is saved.
#[tokio::test]
async fn check_relay_logs_in_before_saving_and_a_failure_saves_nothing() {
    let app = spawn_app().await;
    let mut bad = app.smtp_json();
    bad["password"] = json!("not-the-password");
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Bad", "smtp": bad, "check_relay": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["code"].as_str(), v["reason"].as_str()),
        (Some("relay_check_failed"), Some("smtp_auth")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("username and password"),
        "{v}"
    );
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(
        list["tenants"].as_array().unwrap().len(),
        0,
        "nothing saved"
    );

    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Good", "smtp": app.smtp_json(), "check_relay": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let (id, sk) = (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    );
    assert!(app.smtp.messages().is_empty(), "a check sends no mail");

    // A change that would not log in is refused whole; the relay as it was still sends.
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"name": "Renamed", "smtp": {"password": "wrong-again"}, "check_relay": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = app
        .get(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "Good");
    app.mint(&sk, "ada@example.com").await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app2 = spawn_app_with(move |s| s.smtp.allowed_ports.push(port)).await;
    let mut down = app2.smtp_json();
    down["port"] = json!(port);
    let r = app2
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Down", "smtp": down, "check_relay": true}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "smtp_unreachable", "{v}");
}

/// A relay added by PATCH to a tenant that had none takes what creation takes: a relay
/// without AUTH needs no username and no password (docs/api.md: they may be omitted).
#[tokio::test]
async fn a_relay_without_auth_can_be_added_by_patch_as_at_creation() {
    let app = spawn_app().await;
    let (s, t) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "NoRelay"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let mut smtp = app.smtp_json();
    let relay = smtp.as_object_mut().unwrap();
    relay.remove("username");
    relay.remove("password");
    let (s, v) = body(
        app.patch(&format!("/v1/tenants/{id}"), ADMIN, json!({ "smtp": smtp }))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["smtp"]["host"], json!("127.0.0.1"), "{v}");
    // Creation takes the same relay.
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Created", "smtp": smtp}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Allowed return URLs hold no invisible or reordering characters (a bidirectional override
/// reads otherwise than it goes), and each prefix is kept once (found by a black-box audit).
#[tokio::test]
async fn allowed_return_urls_are_visible_and_kept_once() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": ["https://app.example.com/", "https://app.example.com/\u{202E}nigol"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["errors"][0]["field"]),
        (StatusCode::BAD_REQUEST, &json!("allowed_return_urls[1]")),
        "{v}"
    );
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": ["https://b.example.com/", "https://a.example.com/", "https://b.example.com/"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["allowed_return_urls"],
        json!(["https://b.example.com/", "https://a.example.com/"]),
        "{v}"
    );
}
