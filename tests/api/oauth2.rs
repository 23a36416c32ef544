//! SMTP with OAuth2 (API.md §15.1): a test token endpoint over HTTPS (CA made at test time)
//! issuing tokens that the test SMTP server checks in `AUTH XOAUTH2`; both grants, the token
//! cache, a refusal fetched anew once, rotated refresh tokens stored, `invalid_grant` and
//! 503, the "moving the relay needs the secret again" rule, and the CLI.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::{SMTP_PASS, SMTP_USER};
use otpmint::config::Settings;
use otpmint::testkit::oauth2::{TokenMode, TokenServer, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN};

/// An app that trusts the token endpoint's CA and may reach it on loopback, and a token
/// endpoint whose tokens the SMTP server takes.
pub(crate) async fn setup() -> (TestApp, TokenServer) {
    setup_with(|_| {}).await
}

/// [`setup`] with more settings (the token request is bounded at 3 s unless `tweak` says).
pub(crate) async fn setup_with(tweak: impl FnOnce(&mut Settings)) -> (TestApp, TokenServer) {
    let tokens = TokenServer::start(SMTP_USER).await;
    let ca = tokens.rx.ca_path.clone();
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 3;
        tweak(s);
    })
    .await;
    app.smtp.accept_xoauth2(tokens.check());
    (app, tokens)
}

/// Run the CLI with the app's config plus the outbound policy the token endpoint needs.
fn cli(app: &TestApp, tokens: &TokenServer, args: &[&str]) -> (bool, String, String) {
    let base = std::fs::read_to_string(app.cli_config()).unwrap();
    let path = app.dir.path().join("cli-oauth2.toml");
    std::fs::write(
        &path,
        format!(
            "{base}[webhooks]\nallow_private_hosts = true\nextra_root_certificates = [\"{}\"]\n",
            tokens.rx.ca_path.display()
        ),
    )
    .unwrap();
    otpmint_with(&path, args)
}

/// Another process (the CLI's `smtp test`) logs in to the relay of tenant `id` with what is
/// stored, and sends; what it said.
pub(crate) fn cli_logs_in(app: &TestApp, tokens: &TokenServer, id: &str) -> String {
    let (ok, out, err) = cli(
        app,
        tokens,
        &["smtp", "test", id, "--to", "cli@example.com"],
    );
    assert!(ok, "{out}{err}");
    format!("{out}{err}")
}

/// A refresh token rotated by a delayed answer (a second request's to come) is stored once
/// the answer comes — the tenant's row is written again (each write bumps its version) —
/// and another process logs in with it: the endpoint takes only the rotated one.
pub(crate) async fn stored_once_answered_and_taken(app: &TestApp, tokens: &TokenServer, id: &str) {
    let version = row_version(app);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while row_version(app) == version {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated token was not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokens.rx.set_delay(Duration::ZERO);
    cli_logs_in(app, tokens, id);
    assert_eq!(tokens.grants(), ["refresh_token"; 2]);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// The tenant's row version (the test's only tenant).
pub(crate) fn row_version(app: &TestApp) -> i64 {
    crate::lifecycle::sql(
        &app.settings.database.url,
        "SELECT row_version FROM tenants",
    )
}

pub(crate) fn relay(app: &TestApp, oauth2: Value) -> Value {
    let mut s = app.smtp_json();
    s.as_object_mut().unwrap().remove("password");
    s["oauth2"] = oauth2;
    s
}

pub(crate) fn client_credentials(tokens: &TokenServer) -> Value {
    json!({"token_url": tokens.url(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
}

pub(crate) async fn oauth2_tenant(app: &TestApp, oauth2: Value) -> (String, String, Value) {
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Contoso", "smtp": relay(app, oauth2)}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
        v,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_logs_in_with_xoauth2_and_one_token_serves_many_messages() {
    let (app, tokens) = setup().await;
    let (id, sk, shown) = oauth2_tenant(&app, client_credentials(&tokens)).await;
    // Shown without its secret.
    assert_eq!(shown["smtp"]["oauth2"]["client_id"], CLIENT_ID, "{shown}");
    assert_eq!(shown["smtp"]["oauth2"]["refresh_token"], false, "{shown}");
    assert!(!shown.to_string().contains(CLIENT_SECRET));
    let (_, got) = body(app.get(&format!("/v1/tenants/{id}"), ADMIN).await).await;
    assert_eq!(got["smtp"]["oauth2"]["token_url"], json!(tokens.url()));
    assert!(!got.to_string().contains(CLIENT_SECRET));
    // Sync and async, several at once: one token request for all of them.
    let mut keys = Vec::new();
    let sends = (0..6).map(|i| {
        let app = &app;
        let sk = sk.clone();
        async move {
            let mode = if i % 2 == 0 { "sync" } else { "async" };
            body(
                app.post(
                    "/v1/otp",
                    &sk,
                    json!({"email": format!("u{i}@example.com"), "delivery": mode}),
                )
                .await,
            )
            .await
        }
    });
    for (s, v) in futures_util::future::join_all(sends).await {
        assert!(s.is_success(), "{v}");
        keys.push(v["shareable_key"].as_str().unwrap().to_string());
    }
    for (i, key) in keys.iter().enumerate() {
        let msg = app.smtp.wait_for(&format!("u{i}@example.com"), 1).await;
        assert_eq!(msg.user, SMTP_USER);
        assert_eq!(app.verify(&sk, key, &msg.code()).await.0, StatusCode::OK);
    }
    assert_eq!(tokens.requests(), 1, "one token for every message");
    assert_eq!(tokens.grants(), ["client_credentials"]);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
    assert!(app.smtp.xoauth2_counts().0 >= 1);
    // Re-sealed by a data-key rotation: another process opens the secret and logs in.
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("provider secrets): 1 re-encrypted"), "{out}");
    let (ok, out, err) = cli(
        &app,
        &tokens,
        &["smtp", "test", &id, "--to", "after@example.com"],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(tokens.requests(), 2);
    // Never stored in the clear.
    assert!(!app
        .stored_bytes()
        .windows(CLIENT_SECRET.len())
        .any(|w| w == CLIENT_SECRET.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_relay_refuses_is_fetched_anew_once() {
    let (app, tokens) = setup().await;
    let (_, sk, _) = oauth2_tenant(&app, client_credentials(&tokens)).await;
    // Every message on a new session, so each logs in.
    app.smtp.set_hang_up_after_message(true);
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    // Revoked early: the relay refuses it (535); one new token, the message goes.
    tokens.revoke_access_tokens();
    let (key, code) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert_eq!(tokens.requests(), 2);
    assert_eq!(app.smtp.xoauth2_counts().1, 1, "one refusal");
    // A token that expires is replaced before it does (60 s early).
    tokens.set_expires_in(60);
    tokens.revoke_access_tokens();
    let before = tokens.requests();
    app.mint(&sk, "cy@example.com").await;
    app.mint(&sk, "dee@example.com").await;
    assert!(
        tokens.requests() >= before + 2,
        "a token within 60 s of expiry is not used"
    );
    // A lifetime past any clock's end (the endpoint's word, not trusted): the token is used,
    // and kept no longer than a day.
    tokens.set_expires_in(u64::MAX);
    tokens.revoke_access_tokens();
    let before = tokens.requests();
    let (key, code) = app.mint(&sk, "eve@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    app.mint(&sk, "fay@example.com").await;
    assert_eq!(tokens.requests(), before + 1, "the token was kept");
}

/// A relay set to `tls = "none"` is never sent a login, so no token was refused: the mint
/// fails as `smtp_auth` saying why (`auth_needs_tls`) before any token is asked for (found by
/// a black-box audit: three token requests for two mints), and so does a relay check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_never_sent_in_the_clear_fetches_no_new_token() {
    let (app, tokens) = setup_with(|s| s.smtp.allow_plaintext = true).await;
    let mut smtp = relay(&app, client_credentials(&tokens));
    smtp["tls"] = json!("none");
    let (s, v) = body(
        app.post("/v1/tenants", ADMIN, json!({"name": "Plain", "smtp": smtp}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sk = v["secret_key"].as_str().unwrap().to_string();
    for to in ["ada@example.com", "bob@example.com"] {
        let (s, v) = body(app.post("/v1/otp", &sk, json!({"email": to})).await).await;
        assert_eq!(
            (s, &v["reason"], &v["detail_code"]),
            (
                StatusCode::BAD_GATEWAY,
                &json!("smtp_auth"),
                &json!("auth_needs_tls")
            ),
            "{v}"
        );
        assert!(v["detail"].as_str().unwrap().contains("never sent"), "{v}");
    }
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"name": "Plain 2", "check_relay": true}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["code"], &v["detail_code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("relay_check_failed"),
            &json!("auth_needs_tls")
        ),
        "{v}"
    );
    assert_eq!(tokens.requests(), 0, "no token for a login never sent");
    assert_eq!(app.smtp.xoauth2_counts(), (0, 0), "no login was sent");
    assert_eq!(app.smtp.connections(), 0, "nor a session opened");
}

/// Gmail refuses a token with a `334` carrying the error; RFC 7628 §3.2.3 has the client
/// answer it with an empty line (before: nothing was answered, and the `QUIT` that followed
/// was read by the relay as the SASL answer). A relay that asks again gets `*` (the
/// exchange cancelled) and is no login. Either refusal still gets one new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_with_a_challenge_gets_the_empty_answer_and_is_fetched_anew_once() {
    let (app, tokens) = setup().await;
    let (_, sk, _) = oauth2_tenant(&app, client_credentials(&tokens)).await;
    app.smtp.set_hang_up_after_message(true);
    for (challenges, round) in [(1, "one"), (2, "two")] {
        app.smtp.refuse_xoauth2_after_challenges(challenges);
        let to = format!("ada-{round}@example.com");
        let (key, code) = app.mint(&sk, &to).await;
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
        let (requests, refusals) = (tokens.requests(), app.smtp.xoauth2_counts().1);
        tokens.revoke_access_tokens();
        let (key, code) = app.mint(&sk, &format!("bob-{round}@example.com")).await;
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
        assert_eq!(tokens.requests(), requests + 1, "{round}: one new token");
        assert_eq!(
            app.smtp.xoauth2_counts().1,
            refusals + 1,
            "{round}: one refusal"
        );
    }
    // The challenges got the empty line, and the one asked again a cancel.
    assert_eq!(app.smtp.sasl_answers_off(), (0, 1));
}

/// `otpmint smtp test` logs in as the server does: a token the relay refuses (here the
/// first it is shown, fresh as it is) is fetched anew once before the test fails (§15.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_smtp_test_fetches_a_refused_token_anew_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (app, tokens) = setup().await;
    let (id, _, _) = oauth2_tenant(&app, client_credentials(&tokens)).await;
    let (check, refused) = (tokens.check(), Arc::new(AtomicBool::new(false)));
    let once = Arc::clone(&refused);
    app.smtp.accept_xoauth2(Arc::new(move |user, token| {
        once.swap(true, Ordering::SeqCst) && check(user, token)
    }));
    let (requests, refusals) = (tokens.requests(), app.smtp.xoauth2_counts().1);
    let said = cli_logs_in(&app, &tokens, &id);
    assert!(
        said.contains("ok: the SMTP server accepted the message"),
        "{said}"
    );
    assert!(refused.load(Ordering::SeqCst));
    assert_eq!(app.smtp.xoauth2_counts().1, refusals + 1, "one refusal");
    assert_eq!(tokens.requests(), requests + 2, "a token, then a fresh one");
    assert!(app
        .smtp
        .messages()
        .iter()
        .any(|m| m.to == ["cli@example.com"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_stored_at_once() {
    let (app, tokens) = setup().await;
    tokens.rotate_refresh_tokens(true);
    // Tokens good for no longer than the 60 s margin: every message asks for a new one.
    tokens.set_expires_in(60);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    oauth2["scope"] = json!("https://outlook.office.com/SMTP.Send offline_access");
    let (id, sk, shown) = oauth2_tenant(&app, oauth2).await;
    assert_eq!(shown["smtp"]["oauth2"]["refresh_token"], true, "{shown}");
    for who in ["a", "b", "c"] {
        let (key, code) = app.mint(&sk, &format!("{who}@example.com")).await;
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    }
    assert_eq!(tokens.grants(), ["refresh_token"; 3]);
    // The first refresh token no longer works at the endpoint; the stored one does: another
    // process (the CLI) reads it from the database.
    let said = cli_logs_in(&app, &tokens, &id);
    assert_eq!(tokens.requests(), 4);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
    assert!(!said.contains(REFRESH_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_fails_as_smtp_auth_and_503_is_tried_again() {
    let (app, tokens) = setup().await;
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (_, sk, _) = oauth2_tenant(&app, oauth2).await;
    tokens.set_mode(TokenMode::InvalidGrant);
    crate::outbox::mint_fails_with(&app, &sk, "ada@example.com", "smtp_auth").await;
    let key = crate::outbox::mint_async(&app, &sk, "bob@example.com").await;
    let st =
        crate::outbox::wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "failed").await;
    assert_eq!(
        (&st["delivery"]["reason"], &st["delivery"]["detail_code"]),
        (&json!("smtp_auth"), &json!("oauth2_invalid_grant")),
        "{st}"
    );
    // 200 without a token (a token_url that names another address): the settings are at
    // fault, and the answer says which one to check (found by a black-box audit: it said
    // the endpoint "did not answer" and that nothing was wrong with the settings).
    tokens.set_mode(TokenMode::NoToken);
    let v = crate::outbox::mint_fails_with(&app, &sk, "dee@example.com", "smtp_auth").await;
    assert_eq!(v["detail_code"], "oauth2_no_token", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("token_url") && !detail.contains("nothing is wrong"),
        "{detail}"
    );
    // 503: transient, tried again and delivered once the endpoint is back. A sync mint
    // meanwhile is told that the endpoint did not answer, not that its login was refused.
    tokens.set_mode(TokenMode::Unavailable);
    let v = crate::outbox::mint_fails_with(&app, &sk, "sync@example.com", "smtp_auth").await;
    assert_eq!(v["detail_code"], "oauth2_unavailable", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("token endpoint did not answer") && !detail.contains("check the username"),
        "{detail}"
    );
    let (s, v) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "cy@example.com", "delivery": "async"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let key = v["shareable_key"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let st = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await.1;
        if st["delivery"]["attempts"].as_u64() >= Some(1) {
            assert_eq!(st["delivery"]["detail_code"], "oauth2_unavailable", "{st}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokens.set_mode(TokenMode::Normal);
    app.clock.advance_secs(6);
    let msg = app.smtp.wait_for("cy@example.com", 1).await;
    assert_eq!(app.verify(&sk, &key, &msg.code()).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_oauth2_relay_needs_its_secret_again() {
    let (app, tokens) = setup().await;
    let (id, sk, _) = oauth2_tenant(&app, client_credentials(&tokens)).await;
    let path = format!("/v1/tenants/{id}");
    for (patch, field) in [
        (
            json!({"smtp": {"host": "localhost"}}),
            "smtp.oauth2.client_secret",
        ),
        (
            json!({"smtp": {"oauth2": {"client_id": "another-app"}}}),
            "smtp.oauth2.client_secret",
        ),
        (
            json!({"smtp": {"oauth2": {"token_url": "https://127.0.0.1:9/token"}}}),
            "smtp.oauth2.client_secret",
        ),
        (
            json!({"smtp": {"password": "x", "oauth2": {"client_secret": "y"}}}),
            "smtp.password",
        ),
        (
            json!({"smtp": {"oauth2": {"refresh_token": "rt-alone"}}}),
            "smtp.oauth2.client_secret",
        ),
        (json!({"smtp": {"username": ""}}), "smtp.username"),
    ] {
        let (s, v) = body(app.patch(&path, ADMIN, patch.clone()).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{patch}: {v}");
        assert!(
            v["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {v}"
        );
    }
    // The scope alone may change; the relay keeps working with its stored secret.
    let (s, v) = body(
        app.patch(&path, ADMIN, json!({"smtp": {"oauth2": {"scope": "smtp"}}}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["smtp"]["oauth2"]["scope"]),
        (StatusCode::OK, &json!("smtp")),
        "{v}"
    );
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    // Back to a password: the password is required, and then used.
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"smtp": {"password": SMTP_PASS}}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["smtp"].get("oauth2").is_none(), "{v}");
    let (key, code) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"smtp": {"oauth2": {"token_url": tokens.url(), "client_id": CLIENT_ID}}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a new way to log in needs its secret: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_fill_the_endpoint_and_the_token_endpoint_passes_the_address_policy() {
    let (app, tokens) = setup().await;
    // Microsoft 365, app-only: the preset's token URL and scope (not contacted on create).
    let strict = spawn_app().await;
    let (s, v) = body(
        strict
            .post(
                "/v1/tenants",
                ADMIN,
                json!({"name": "M", "smtp": relay(&strict, json!({
                    "provider": "microsoft", "entra_tenant": "contoso.onmicrosoft.com",
                    "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))}),
            )
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["smtp"]["oauth2"]["token_url"],
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(
        v["smtp"]["oauth2"]["scope"],
        "https://outlook.office365.com/.default"
    );
    assert_eq!(v["smtp"]["oauth2"]["provider"], "microsoft");
    // A token endpoint on loopback is refused where private hosts are not allowed.
    let (s, v) = body(
        strict
            .post(
                "/v1/tenants",
                ADMIN,
                json!({"name": "L", "smtp": relay(&strict, client_credentials(&tokens))}),
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
    // The answer names the field it refused, and no webhook (found by a black-box audit).
    assert_eq!(v["errors"][0]["field"], "smtp.oauth2.token_url", "{v}");
    assert!(!v["title"].as_str().unwrap().contains("Webhook"), "{v}");
    // A token URL has an endpoint's form, as a webhook's does: no fragment, an ASCII path.
    for bad in [
        "https://login.example.com/token#frag",
        "https://login.example.com/tökén",
    ] {
        let mut oauth2 = client_credentials(&tokens);
        oauth2["token_url"] = json!(bad);
        let (s, v) = body(
            app.post(
                "/v1/tenants",
                ADMIN,
                json!({"name": "F", "smtp": relay(&app, oauth2)}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, &v["errors"][0]["field"]),
            (StatusCode::BAD_REQUEST, &json!("smtp.oauth2.token_url")),
            "{bad}: {v}"
        );
    }
    // Missing pieces are named.
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "G", "smtp": relay(&app, json!({"provider": "microsoft", "client_id": "x", "client_secret": "y"}))}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("smtp.oauth2.entra_tenant"), "{v}");
    // OAuth2 was given: no password is asked for beside it.
    assert!(!v.to_string().contains("smtp.password"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_and_tests_an_oauth2_relay() {
    let (app, tokens) = setup().await;
    let file = app.dir.path().join("oauth2.json");
    std::fs::write(&file, client_credentials(&tokens).to_string()).unwrap();
    let port = app.smtp.port.to_string();
    let (ok, out, err) = cli(
        &app,
        &tokens,
        &[
            "tenant",
            "create",
            "--name",
            "Fabrikam",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &port,
            "--smtp-username",
            SMTP_USER,
            "--smtp-from",
            "Fabrikam <no-reply@fabrikam.example>",
            "--smtp-oauth2-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(!format!("{out}{err}").contains(CLIENT_SECRET));
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("tnt_"))
        .unwrap()
        .to_string();
    let (ok, out, err) = cli(
        &app,
        &tokens,
        &["smtp", "test", &id, "--to", "ops@example.com"],
    );
    assert!(ok, "{out}{err}");
    let msg = app.smtp.wait_for("ops@example.com", 1).await;
    assert_eq!(msg.user, SMTP_USER);
    // A file that is not an OAuth2 object is refused, naming what is wrong (an unknown field;
    // a secret of the wrong type, by its field and type), and never showing a value.
    for (bad, names, hidden) in [
        (r#"{"client_id": "x", "secret": "y"}"#, "secret", "\"y\""),
        (
            r#"{"client_id": "x", "client_secret": 918273645}"#,
            "invalid type",
            "918273645",
        ),
        (r#""rt-8372615""#, "invalid type", "rt-8372615"),
    ] {
        std::fs::write(&file, bad).unwrap();
        let (ok, _, err) = cli(
            &app,
            &tokens,
            &[
                "tenant",
                "create",
                "--name",
                "X",
                "--smtp-host",
                "127.0.0.1",
                "--smtp-port",
                &port,
                "--smtp-username",
                SMTP_USER,
                "--smtp-from",
                "x@x.example",
                "--smtp-oauth2-file",
                file.to_str().unwrap(),
            ],
        );
        assert!(!ok && err.contains(names), "{bad}: {err}");
        assert!(!err.contains(hidden), "{bad}: {err}");
    }
}
