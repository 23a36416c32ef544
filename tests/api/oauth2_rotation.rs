//! SMTP with OAuth2 (API.md §15.1), refresh tokens kept whatever happens: a token endpoint
//! echoing the secret, a request given up on, a rotation during a data-key rotation or a
//! failed store, an empty refresh token, a new client secret, and checked creates and
//! changes that rotate it.

use crate::helpers::*;
use crate::oauth2::*;
use crate::smtp::{SMTP_PASS, SMTP_USER};
use otpmint::testkit::oauth2::{TokenMode, TokenServer, CLIENT_SECRET, REFRESH_TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_echoes_the_secret_leaves_it_in_no_answer_or_record() {
    let (app, tokens) = setup().await;
    let (_, sk, _) = oauth2_tenant(&app, client_credentials(&tokens)).await;
    tokens.set_mode(TokenMode::EchoSecret);
    let echoed: String = CLIENT_SECRET
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert!(!v.to_string().contains(&echoed), "{v}");
    let key = crate::outbox::mint_async(&app, &sk, "bob@example.com").await;
    let st =
        crate::outbox::wait_status(&app, &sk, &key, |v| v["delivery"]["status"] == "failed").await;
    // Not an error code OAuth2 defines: recorded as `rejected`, never as what it said.
    assert_eq!(
        (&st["delivery"]["reason"], &st["delivery"]["detail_code"]),
        (&json!("smtp_auth"), &json!("oauth2_rejected")),
        "{st}"
    );
    assert!(!st.to_string().contains(&echoed), "{st}");
}

/// A token request the sender stops waiting for (the relay's setup time passed, so the
/// message went by the fallback relay) still runs to its end: the refresh token the endpoint
/// rotated meanwhile is kept, and the next request uses it — the first one no longer works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_request_given_up_on_still_keeps_the_rotated_refresh_token() {
    use crate::smtp::SmtpServer;
    let tokens = TokenServer::start(SMTP_USER).await;
    let fallback = SmtpServer::start().await;
    let (ca, port, fallback_ca) = (
        tokens.rx.ca_path.clone(),
        fallback.port,
        fallback.ca_path.clone(),
    );
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
        s.delivery.http_timeout_seconds = 10;
        s.smtp.allowed_ports.push(port);
        s.smtp.extra_root_certificates.push(fallback_ca);
    })
    .await;
    app.smtp.accept_xoauth2(tokens.check());
    tokens.rotate_refresh_tokens(true);
    // Tokens good for no longer than the 60 s margin: every message asks for a new one.
    tokens.set_expires_in(60);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let body_json = json!({
        "name": "Contoso",
        "smtp": relay(&app, oauth2),
        "smtp_fallback": {"host": "127.0.0.1", "port": fallback.port, "username": SMTP_USER,
            "password": SMTP_PASS, "from": "Contoso <backup@contoso.example>", "tls": "starttls"},
    });
    let (s, v) = body(app.post("/v1/tenants", ADMIN, body_json).await).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sk = v["secret_key"].as_str().unwrap().to_string();
    // The endpoint rotates at once and answers after the relay's setup time (half the
    // attempt's 5 s, a fallback waiting): the message goes by the fallback.
    tokens.rx.set_delay(Duration::from_millis(3500));
    let (s, v) = body(
        app.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let code = fallback.wait_for("ada@example.com", 1).await.code();
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert!(app.smtp.messages().is_empty());
    // The request given up on has ended by now.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    tokens.rx.set_delay(Duration::ZERO);
    let (key, code) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert_eq!(
        app.smtp.messages().len(),
        1,
        "the relay took it with a fresh token"
    );
    assert_eq!(tokens.grants(), ["refresh_token"; 2]);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// Queue an async code to ada@example.com and wait until its sender asked the token
/// endpoint (which answers after its delay): the mint's answer.
async fn queued_until_its_token_is_asked_for(
    app: &TestApp,
    tokens: &TokenServer,
    sk: &str,
) -> Value {
    let (s, v) = body(
        app.post(
            "/v1/otp",
            sk,
            json!({"email": "ada@example.com", "delivery": "async"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tokens.requests() == 0 {
        assert!(std::time::Instant::now() < deadline, "no token request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v
}

/// A refresh token the provider rotates while a data-key rotation re-seals the relay's
/// secrets is stored all the same: the compare-and-swap on the sealed secrets finds their
/// re-sealed copy, reads it again (the same relay, the same refresh token) and swaps that.
/// Before, the rotated token was kept in memory only and the re-sealed one — which the
/// provider no longer takes — was used from then on, by this process too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotated_during_a_data_key_rotation_is_stored() {
    let (app, tokens) = setup_with(|s| s.delivery.http_timeout_seconds = 20).await;
    tokens.rotate_refresh_tokens(true);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (id, sk, _) = oauth2_tenant(&app, oauth2).await;
    // The endpoint rotates the refresh token as the request comes and answers 8 s later;
    // meanwhile the data key is rotated, re-sealing the relay's secrets.
    tokens.rx.set_delay(Duration::from_secs(8));
    queued_until_its_token_is_asked_for(&app, &tokens, &sk).await;
    let asked = std::time::Instant::now();
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 re-encrypted"), "{out}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "the re-seal came before the token's answer"
    );
    stored_once_answered_and_taken(&app, &tokens, &id).await;
}

/// A rotated refresh token whose store failed (the tenant's row held by another
/// transaction past the lock timeout) is used from memory and stored with the next token
/// request, even one that rotates nothing: the stored copy holds a token the provider
/// replaced. Another process then logs in with the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_whose_store_failed_is_stored_with_the_next_request() {
    if !on_postgres() {
        eprintln!("skipped on SQLite: only PostgreSQL locks one row while others are written");
        return;
    }
    let (app, tokens) = setup_with(|s| s.database.timeout_seconds = 1).await;
    tokens.rotate_refresh_tokens(true);
    // Tokens good for no longer than the 60 s margin: every message asks for a new one.
    tokens.set_expires_in(60);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (id, sk, _) = oauth2_tenant(&app, oauth2).await;
    // The endpoint answers the first request 1.5 s late; meanwhile another transaction
    // takes the tenant's row, and holds it until the message is sent.
    tokens.rx.set_delay(Duration::from_millis(1500));
    let v = queued_until_its_token_is_asked_for(&app, &tokens, &sk).await;
    let lock = HeldLock::pg_row(&app.settings.database.url, "tenants", &id);
    let msg = app.smtp.wait_for("ada@example.com", 1).await;
    lock.release();
    tokens.rx.set_delay(Duration::ZERO);
    let key = v["shareable_key"].as_str().unwrap();
    assert_eq!(app.verify(&sk, key, &msg.code()).await.0, StatusCode::OK);
    // The next request rotates nothing; it sends the token kept in memory, and stores it.
    tokens.rotate_refresh_tokens(false);
    let (key, code) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    cli_logs_in(&app, &tokens, &id);
    assert_eq!(tokens.grants(), ["refresh_token"; 3]);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// An answer whose `refresh_token` is empty rotates nothing: the stored refresh token stays,
/// and another process still logs in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_refresh_token_in_an_answer_replaces_nothing() {
    let (app, tokens) = setup().await;
    tokens.set_mode(TokenMode::EmptyRefreshToken);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (id, sk, _) = oauth2_tenant(&app, oauth2).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    tokens.set_mode(TokenMode::Normal);
    cli_logs_in(&app, &tokens, &id);
    assert_eq!(tokens.grants(), ["refresh_token"; 2]);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// A new client secret alone keeps the stored refresh token; one that cannot be read is
/// asked for again (400, nothing changed), never silently dropped — that would move the
/// relay to the client-credentials grant its provider refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_secret_keeps_the_refresh_token_or_asks_for_it_again() {
    let (app, tokens) = setup().await;
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let mut ids = Vec::new();
    for name in ["Contoso", "Fabrikam"] {
        let (s, v) = body(
            app.post(
                "/v1/tenants",
                ADMIN,
                json!({"name": name, "smtp": relay(&app, oauth2.clone())}),
            )
            .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let secret = json!({"smtp": {"oauth2": {"client_secret": CLIENT_SECRET}}});
    let (s, v) = body(
        app.patch(&format!("/v1/tenants/{}", ids[0]), ADMIN, secret.clone())
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["smtp"]["oauth2"]["refresh_token"]),
        (StatusCode::OK, &json!(true)),
        "{v}"
    );
    // One tenant's stored secrets replaced by the other's sealed value: they no longer
    // open for it.
    crate::lifecycle::sql(
        &app.settings.database.url,
        "UPDATE tenants SET smtp_password = (SELECT t.smtp_password FROM tenants t ORDER BY t.id LIMIT 1)",
    );
    let mut refused = 0;
    for id in &ids {
        let path = format!("/v1/tenants/{id}");
        let (s, v) = body(app.patch(&path, ADMIN, secret.clone()).await).await;
        if s == StatusCode::BAD_REQUEST {
            refused += 1;
            assert_eq!(v["errors"][0]["field"], "smtp.oauth2.refresh_token", "{v}");
        } else {
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let (_, t) = body(app.get(&path, ADMIN).await).await;
        assert_eq!(t["smtp"]["oauth2"]["refresh_token"], true, "{t}");
    }
    assert_eq!(refused, 1);
}

/// `check_relay` (API.md §18.8) logs in with the relay as it would be saved; when the
/// provider rotates the refresh token for that login, what is saved is the new token, at
/// create and at a change. Before, a create stored the token the check had replaced (the
/// new one lived in this process's memory only, so another process failed with
/// `invalid_grant`), and at a change the check stored its token under the change, whose
/// every retry then rotated it again, which ended in 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_check_whose_login_rotates_the_refresh_token_saves_the_new_one() {
    let (app, tokens) = setup().await;
    tokens.rotate_refresh_tokens(true);
    // No session is kept: each message logs in.
    app.smtp.set_hang_up_after_message(true);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Contoso", "smtp": relay(&app, oauth2), "check_relay": true}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (id, sk) = (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    );
    // Another process logs in with what the create stored.
    cli_logs_in(&app, &tokens, &id);
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    // A change checked again. The relay is not changed by it (its sessions and tokens in
    // use stay): only its stored refresh token is.
    let (db, q) = (
        &app.settings.database.url,
        "SELECT smtp_version FROM tenants",
    );
    let version = crate::lifecycle::sql(db, q);
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"name": "Contoso Ltd", "check_relay": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(crate::lifecycle::sql(db, q), version);
    // The stored token works in another process, and so does the one this process uses.
    cli_logs_in(&app, &tokens, &id);
    // This process's next token request (its token revoked) logs in too.
    tokens.revoke_access_tokens();
    let before = tokens.grants().len();
    let (key, code) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert_eq!(tokens.grants().len(), before + 1);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// A checked change that sets the relay saves the refresh token its provider rotated for
/// the check with the change itself: the row is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_change_of_the_relay_saves_the_rotated_refresh_token_with_it() {
    let (app, tokens) = setup().await;
    tokens.rotate_refresh_tokens(true);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (id, _, _) = oauth2_tenant(&app, oauth2).await;
    let version = row_version(&app);
    let scope = "https://outlook.office.com/SMTP.Send offline_access";
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"oauth2": {"scope": scope}}, "check_relay": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(row_version(&app), version + 1);
    cli_logs_in(&app, &tokens, &id);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// A change of only the client secret, made while a token request the provider answers
/// with a new refresh token is in flight, keeps that token: it is stored with the new
/// client secret (a client's refresh tokens do not depend on which of its secrets asked).
/// Before, the store gave up on the changed client secret and the change forgot the token
/// in memory, so the relay was left with one the provider no longer takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotated_while_the_client_secret_changes_is_stored_with_the_new_secret() {
    let (app, tokens) = setup_with(|s| s.delivery.http_timeout_seconds = 20).await;
    tokens.rotate_refresh_tokens(true);
    tokens.add_client_secret("client-s3cret-the-second");
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (id, sk, _) = oauth2_tenant(&app, oauth2).await;
    // The endpoint rotates the refresh token as the request comes and answers 8 s later;
    // meanwhile the client secret is changed.
    tokens.rx.set_delay(Duration::from_secs(8));
    queued_until_its_token_is_asked_for(&app, &tokens, &sk).await;
    let asked = std::time::Instant::now();
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"oauth2": {"client_secret": "client-s3cret-the-second"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "the change came before the token's answer"
    );
    // Stored with the new secret.
    stored_once_answered_and_taken(&app, &tokens, &id).await;
    let last = tokens.rx.requests();
    let form = String::from_utf8_lossy(&last.last().unwrap().body).to_string();
    assert!(
        form.contains("client_secret=client-s3cret-the-second"),
        "{form}"
    );
}

/// A checked create whose other relay's check fails (a wrong password) spends nothing of the
/// refresh token given: the relay that logs in with a password is checked first, so a
/// provider that rotates tokens (the fake's old token stops working) never saw this one, and
/// the create made again with the right password works with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_create_refused_by_a_password_relay_spends_no_refresh_token() {
    let (app, tokens) = setup().await;
    tokens.rotate_refresh_tokens(true);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let create = |password: &str| {
        let mut fallback = app.smtp_json();
        fallback["password"] = json!(password);
        json!({"name": "Contoso", "smtp": relay(&app, oauth2.clone()),
               "smtp_fallback": fallback, "check_relay": true})
    };
    let (s, v) = body(
        app.post("/v1/tenants", ADMIN, create("not-the-password"))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(tokens.grants().is_empty(), "{:?}", tokens.grants());
    let (s, v) = body(app.post("/v1/tenants", ADMIN, create(SMTP_PASS)).await).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(tokens.grants(), ["refresh_token"]);
    let id = v["id"].as_str().unwrap().to_string();
    cli_logs_in(&app, &tokens, &id);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

/// A checked change that fails after the check logged in — here the fallback relay's check
/// (a refresh token the provider does not know) fails after the main relay's, whose
/// provider rotated the refresh token for it — saves nothing of the change, but stores the
/// relay's new refresh token in place of the one the provider replaced: another process
/// logs in with it. Before, the stored token was the replaced one, and the new one lived in
/// this process's memory only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_change_that_fails_still_stores_the_refresh_token_its_check_rotated() {
    let (app, tokens) = setup().await;
    tokens.rotate_refresh_tokens(true);
    let mut oauth2 = client_credentials(&tokens);
    oauth2["refresh_token"] = json!(REFRESH_TOKEN);
    let (id, _, _) = oauth2_tenant(&app, oauth2.clone()).await;
    oauth2["refresh_token"] = json!("a-refresh-token-the-provider-never-issued");
    let fallback = relay(&app, oauth2);
    let (s, v) = body(
        app.patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"name": "Contoso Ltd", "smtp_fallback": fallback, "check_relay": true}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        tokens.grants(),
        ["refresh_token"; 2],
        "the main relay was checked, then the fallback"
    );
    let (_, t) = body(app.get(&format!("/v1/tenants/{id}"), ADMIN).await).await;
    assert_eq!(
        (&t["name"], &t["smtp_fallback"]),
        (&json!("Contoso"), &Value::Null),
        "{t}"
    );
    cli_logs_in(&app, &tokens, &id);
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}
