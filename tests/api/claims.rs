//! Outcomes claimed once (API.md §17.2): a verified key's, and a hosted session's, by its
//! verifier when it was opened with a challenge; a session's key and the session share one
//! claim, also for rows written before they were linked.

use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::hosted::{
    attr, hosted_app, hosted_app_with, on_the_page, open_session, unescape, Browser, RETURN,
};
/// RFC 7636's example verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub(crate) async fn claim(
    app: &TestApp,
    sk: &str,
    path: &str,
    verifier: Option<&str>,
) -> (StatusCode, Value) {
    let b = match verifier {
        Some(v) => json!({ "code_verifier": v }),
        None => json!({}),
    };
    body(app.post(path, sk, b).await).await
}

/// A key's outcome is claimed once (API.md §17.2): not before it is verified, then once;
/// with a challenge given at its link only with the verifier, and a wrong one spends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_key_is_claimed_once_and_with_its_verifier_when_it_had_a_challenge() {
    let (app, sk) = hosted_app(RETURN).await;
    let (_, other) = app.tenant().await;
    // Without a challenge.
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let path = format!("/v1/otp/{key}/claim");
    let (s, v) = claim(&app, &sk, &path, None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_verified")),
        "{v}"
    );
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (s, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_eq!(
        (s, v["email"].as_str()),
        (StatusCode::OK, Some("ada@example.com")),
        "{v}"
    );
    assert_eq!(
        claim(&app, &other, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let r = app
        .client
        .post(format!("{}{path}", app.addr))
        .bearer_auth(&sk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a claim needs no body");
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["email"].as_str(),
            v["purpose"].as_str(),
            v["verified_via"].as_str()
        ),
        (Some("ada@example.com"), Some("default"), Some("code")),
        "{v}"
    );
    assert!(v["verified_at"].as_str().unwrap().ends_with('Z'));
    let (s, v) = claim(&app, &sk, &path, None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed"))
    );
    let (_, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_eq!(
        (&v["status"], &v["email"], &v["claimed"]),
        (&json!("verified"), &Value::Null, &json!(true)),
        "{v}"
    );

    // With a challenge on its link.
    for (bad, field) in [
        (
            json!({"return_url": RETURN, "code_challenge": "short"}),
            "link.code_challenge",
        ),
        (
            json!({"return_url": RETURN, "code_challenge": CHALLENGE, "code_challenge_method": "plain"}),
            "link.code_challenge_method",
        ),
        // A method alone would leave the outcome unbound where the caller meant to bind it.
        (
            json!({"return_url": RETURN, "code_challenge_method": "S256"}),
            "link.code_challenge",
        ),
    ] {
        let (s, v) = body(
            app.post(
                "/v1/otp",
                &sk,
                json!({"email": "bob@example.com", "link": bad}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, v["errors"][0]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{v}"
        );
    }
    let before = app.smtp.count_to("bob@example.com");
    let (s, v) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "bob@example.com", "link": {"return_url": RETURN, "code_challenge": CHALLENGE, "code_challenge_method": "S256"}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let code = app
        .smtp
        .wait_for("bob@example.com", before + 1)
        .await
        .code();
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let path = format!("/v1/otp/{key}/claim");
    for wrong in [
        None,
        Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"),
        Some("x"),
    ] {
        let (s, v) = claim(&app, &sk, &path, wrong).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("code_verifier_mismatch")),
            "{wrong:?}"
        );
    }
    let (s, v) = claim(&app, &sk, &path, Some(VERIFIER)).await;
    assert_eq!(
        (s, v["email"].as_str(), v["verified_via"].as_str()),
        (StatusCode::OK, Some("bob@example.com"), Some("code")),
        "{v}"
    );
    assert_eq!(
        claim(&app, &sk, &path, Some(VERIFIER)).await.0,
        StatusCode::CONFLICT
    );
}

/// A hosted session's outcome is claimed once, with its verifier (API.md §17.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_session_is_claimed_once_with_its_verifier() {
    let (app, sk) = hosted_app(RETURN).await;
    let (s, v) = body(
        app.post(
            "/v1/tenant/hosted-sessions",
            &sk,
            json!({"return_url": RETURN, "email": "ada@example.com", "code_challenge": "no"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("code_challenge")),
        "{v}"
    );
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "ada@example.com", "code_challenge": CHALLENGE}),
    )
    .await;
    let path = format!("/v1/tenant/hosted-sessions/{id}/claim");
    let (s, v) = claim(&app, &sk, &path, Some(VERIFIER)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_verified")),
        "{v}"
    );
    // The person verifies on the page.
    let mut b = Browser::new(&app);
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let csrf = attr(&html, "name=\"csrf\" value=\"").to_string();
    let send = unescape(attr(&html, "<form method=\"post\" action=\""));
    if send.ends_with("/send") {
        b.post(&send, &[("csrf", &csrf), ("email", "ada@example.com")])
            .await;
    }
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let verify = unescape(attr(&html, "<form method=\"post\" action=\""));
    let (s, _, _) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await;
    assert_eq!(
        (&v["status"], &v["email"]),
        (&json!("verified"), &json!("ada@example.com"))
    );
    let (s, v) = claim(&app, &sk, &path, None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("code_verifier_mismatch"))
    );
    let (s, v) = claim(&app, &sk, &path, Some(VERIFIER)).await;
    assert_eq!(
        (s, v["email"].as_str(), v["purpose"].as_str()),
        (StatusCode::OK, Some("ada@example.com"), Some("default")),
        "{v}"
    );
    let (s, v) = claim(&app, &sk, &path, Some(VERIFIER)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed"))
    );
    let (_, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await;
    assert_eq!(
        (&v["status"], &v["email"]),
        (&json!("verified"), &Value::Null),
        "{v}"
    );
}

/// A person verifies on a session's pages (the address given when it was opened).
async fn verified_on_the_page(app: &TestApp, id: &str, to: &str) {
    let (mut b, csrf) = on_the_page(app, id).await;
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let send = unescape(attr(&html, "<form method=\"post\" action=\""));
    if send.ends_with("/send") {
        b.post(&send, &[("csrf", &csrf), ("email", to)]).await;
    }
    let code = app.smtp.wait_for(to, 1).await.code();
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let verify = unescape(attr(&html, "<form method=\"post\" action=\""));
    let (s, _, _) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

/// A hosted session's code has a key of its own (webhooks carry it), but one outcome: the
/// key's claim needs the session's verifier, and a claim by either route spends the other
/// (API.md §17.2: redeemed once; found by the hosted-pages audit: the key claimed without
/// the verifier, and both claimed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_sessions_key_shares_its_claim_and_its_verifier() {
    let (app, sk, ids, keys, _hooks) = two_verified_sessions().await;
    let by_key = |k: &str| format!("/v1/otp/{k}/claim");
    let by_session = |id: &str| format!("/v1/tenant/hosted-sessions/{id}/claim");

    // Claimed by its key: only with the session's verifier; then not by the session.
    let (s, v) = claim(&app, &sk, &by_key(&keys[0]), None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("code_verifier_mismatch")),
        "{v}"
    );
    let (s, v) = claim(&app, &sk, &by_key(&keys[0]), Some(VERIFIER)).await;
    assert_eq!(
        (s, v["email"].as_str()),
        (StatusCode::OK, Some("ada@example.com")),
        "{v}"
    );
    let (s, v) = claim(&app, &sk, &by_session(&ids[0]), Some(VERIFIER)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed")),
        "{v}"
    );
    let (_, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{}", ids[0]), &sk)
            .await,
    )
    .await;
    assert_eq!(
        (&v["status"], &v["email"]),
        (&json!("verified"), &Value::Null)
    );

    // Claimed as a session: then not by its key, whose address is no longer shown.
    let (s, v) = claim(&app, &sk, &by_session(&ids[1]), Some(VERIFIER)).await;
    assert_eq!(
        (s, v["email"].as_str()),
        (StatusCode::OK, Some("bob@example.com")),
        "{v}"
    );
    let (s, v) = claim(&app, &sk, &by_key(&keys[1]), Some(VERIFIER)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed")),
        "{v}"
    );
    let (_, v) = body(app.get(&format!("/v1/otp/{}", keys[1]), &sk).await).await;
    assert_eq!(
        (&v["status"], &v["email"], &v["claimed"]),
        (&json!("verified"), &Value::Null, &json!(true)),
        "{v}"
    );
}

/// Rows written before a session's key shared its outcome (a session verified then: its key
/// without the code challenge; a session claimed then: its key unclaimed) are linked by the
/// migration that comes with the release: neither key is claimable by itself after it.
#[tokio::test]
async fn a_hosted_session_from_before_the_claims_were_linked_is_linked_at_upgrade() {
    let (app, sk, ids, keys, _hooks) = two_verified_sessions().await;
    let url = app.settings.database.url.clone();
    let (s, _) = claim(
        &app,
        &sk,
        &format!("/v1/tenant/hosted-sessions/{}/claim", ids[1]),
        Some(VERIFIER),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // The rows as the release before wrote them, and its schema's record.
    app.handle.stop(true).await;
    assert_eq!(
        crate::lifecycle::sql(&url, "UPDATE challenges SET code_challenge = NULL"),
        2
    );
    assert_eq!(
        crate::lifecycle::sql(
            &url,
            "UPDATE challenges SET claimed_at = NULL WHERE claimed_at IS NOT NULL"
        ),
        1
    );
    let count = if on_postgres() {
        "SELECT COUNT(*) FROM otpmint_schema_history WHERE version = 23"
    } else {
        "SELECT COUNT(*) FROM refinery_schema_history WHERE version = 23"
    };
    // V23 and those after it (a database of the release before had none of them).
    assert!(crate::lifecycle::before_migration(&url, 23) >= 2);
    let app = app.restart().await;
    assert_eq!(crate::lifecycle::sql(&url, count), 1, "migrated again");

    // Each key's claim, as (status, its refusal's code or the outcome's address): the
    // first key needs the verifier, the second was claimed as a session; the first is
    // still claimed once, with its verifier.
    let mut said = Vec::new();
    for (key, verifier) in [
        (&keys[0], None),
        (&keys[1], Some(VERIFIER)),
        (&keys[0], Some(VERIFIER)),
    ] {
        let (s, v) = claim(&app, &sk, &format!("/v1/otp/{key}/claim"), verifier).await;
        let what = v["code"]
            .as_str()
            .or(v["email"].as_str())
            .map(str::to_string);
        said.push((s, what));
    }
    let said: Vec<_> = said.iter().map(|(s, w)| (*s, w.as_deref())).collect();
    assert_eq!(
        said,
        [
            (StatusCode::FORBIDDEN, Some("code_verifier_mismatch")),
            (StatusCode::CONFLICT, Some("already_claimed")),
            (StatusCode::OK, Some("ada@example.com")),
        ]
    );
}
/// A hosted app with two sessions opened with `CHALLENGE` (to ada@ and bob@) and verified on
/// their pages: the app, its secret key, the sessions' ids and their codes' keys (as the
/// `otp.verified` webhooks carry them), and the webhooks' receiver (whose certificate the app
/// reads again when it restarts).
async fn two_verified_sessions() -> (
    TestApp,
    String,
    Vec<String>,
    Vec<String>,
    otpmint::testkit::http::HttpReceiver,
) {
    let rx = otpmint::testkit::http::HttpReceiver::start(false).await;
    let ca = rx.ca_path.clone();
    let (app, sk) = hosted_app_with(RETURN, move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.allow_plaintext = true;
        s.webhooks.extra_root_certificates = vec![ca];
    })
    .await;
    let r = app
        .put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": rx.url("/hook"), "events": ["otp.verified"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for (n, to) in ["ada@example.com", "bob@example.com"]
        .into_iter()
        .enumerate()
    {
        let (id, _) = open_session(
            &app,
            &sk,
            json!({"return_url": RETURN, "email": to, "code_challenge": CHALLENGE}),
        )
        .await;
        verified_on_the_page(&app, &id, to).await;
        let hooks = rx.wait_for(n + 1).await;
        let key = hooks[n].json()["data"]["shareable_key"]
            .as_str()
            .unwrap()
            .to_string();
        keys.push(key);
        ids.push(id);
    }
    (app, sk, ids, keys, rx)
}
