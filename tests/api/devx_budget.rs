//! Test recipients' fixed codes and their failure budget (API.md §13): a budget spent turns
//! the code inert on every key until the list is stored again, a guess and a put of the list
//! take turns, a recipient out of budget is refused at mint and resend; a resend into the
//! test inbox marks its key test, and a rotation racing going live leaves no test key on a
//! live tenant.

use crate::devx::*;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A fixed test code has its own failure budget over all its keys (API.md §17.3): after
/// `limits.test_code_max_failures` wrong guesses the entry is inert — mints to it get a random
/// code in the inbox — until the list is stored again; audited.
#[tokio::test]
async fn a_fixed_test_code_turns_inert_after_its_failure_budget_until_stored_again() {
    let rx = otpmint::testkit::http::HttpReceiver::start(true).await;
    let ca = rx.ca_path.clone();
    let app = spawn_app_with(move |s| {
        s.limits.test_code_max_failures = 3;
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = vec![ca];
    })
    .await;
    let (_, sk) = app.tenant().await;
    let r = app
        .put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": rx.url("/hook"), "events": ["test_recipient.disabled"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let list =
        json!([{"match": "review@acme.example", "code": "424242", "expires_at": at(&app, DAY)}]);
    assert_eq!(put_list(&app, &sk, list.clone()).await.0, StatusCode::OK);
    // Three wrong guesses over two keys.
    for wrongs in [2, 1] {
        let (_, m) = mint_json(&app, &sk, "review@acme.example").await;
        let key = m["shareable_key"].as_str().unwrap().to_string();
        for _ in 0..wrongs {
            assert_eq!(
                app.verify(&sk, &key, "000000").await.0,
                StatusCode::UNPROCESSABLE_ENTITY
            );
        }
    }
    let (_, v) = body(app.get("/v1/tenant/test-recipients", &sk).await).await;
    assert!(v["recipients"][0]["disabled_at"].is_string(), "{v}");
    // The tenant's webhook hears of it.
    let got = rx.wait_for(1).await;
    let e = got[0].json();
    assert_eq!(
        (&e["type"], &e["data"]["email"], &e["data"]["reason"]),
        (
            &json!("test_recipient.disabled"),
            &json!("review@acme.example"),
            &json!("failure_budget")
        ),
        "{e}"
    );
    // Inert: a new mint goes to the inbox with a random code; the fixed one does not verify.
    let (s, m) = mint_json(&app, &sk, "review@acme.example").await;
    assert_eq!((s, &m["test"]), (StatusCode::CREATED, &json!(true)), "{m}");
    let key = m["shareable_key"].as_str().unwrap().to_string();
    let msgs = inbox(&app, &sk, "review@acme.example").await;
    let code = code_in(msgs[0]["text"].as_str().unwrap());
    assert_ne!(code, "424242");
    assert_eq!(
        app.verify(&sk, &key, "424242").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let audit: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    assert!(
        audit.to_string().contains("test_recipient.disabled"),
        "{audit}"
    );
    // Stored again: the fixed code works again.
    assert_eq!(put_list(&app, &sk, list).await.0, StatusCode::OK);
    let (_, v) = body(app.get("/v1/tenant/test-recipients", &sk).await).await;
    assert_eq!(v["recipients"][0]["disabled_at"], Value::Null, "{v}");
    let (_, m) = mint_json(&app, &sk, "review@acme.example").await;
    let key = m["shareable_key"].as_str().unwrap().to_string();
    assert_eq!(app.verify(&sk, &key, "424242").await.0, StatusCode::OK);
}

/// The budget spans every key of the entry, those minted before it was spent included: once
/// it is spent no key verifies the fixed code, and a resent key's earlier code (the fixed
/// one) does not either. A right guess does not use the budget.
#[tokio::test]
async fn a_spent_fixed_code_budget_stops_the_fixed_code_on_every_key_already_minted() {
    let app = spawn_app_with(|s| s.limits.test_code_max_failures = 3).await;
    let (_, sk) = app.tenant().await;
    let list =
        json!([{"match": "review@acme.example", "code": "424242", "expires_at": at(&app, DAY)}]);
    assert_eq!(put_list(&app, &sk, list).await.0, StatusCode::OK);
    let mut keys = Vec::new();
    // Three purposes, so that no key supersedes another.
    for purpose in ["login", "signup", "reset"] {
        let (s, m) = body(
            app.post(
                "/v1/otp",
                &sk,
                json!({"email": "review@acme.example", "purpose": purpose}),
            )
            .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{m}");
        keys.push(m["shareable_key"].as_str().unwrap().to_string());
    }
    // Two wrong guesses and a right one: the right one uses nothing of the budget.
    for _ in 0..2 {
        assert_eq!(
            app.verify(&sk, &keys[0], "000000").await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    assert_eq!(app.verify(&sk, &keys[0], "424242").await.0, StatusCode::OK);
    let (_, v) = body(app.get("/v1/tenant/test-recipients", &sk).await).await;
    assert_eq!(v["recipients"][0]["disabled_at"], Value::Null, "{v}");
    // A resend gives the second key a new code; its earlier one is the fixed code.
    let r = app
        .post(&format!("/v1/otp/{}/resend", keys[1]), &sk, json!({}))
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    // The third wrong guess spends it.
    assert_eq!(
        app.verify(&sk, &keys[2], "000000").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, v) = body(app.get("/v1/tenant/test-recipients", &sk).await).await;
    assert!(v["recipients"][0]["disabled_at"].is_string(), "{v}");
    // Neither a key minted before (attempts left) nor the resent one verifies it now.
    for key in [&keys[2], &keys[1]] {
        assert_eq!(
            app.verify(&sk, key, "424242").await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{key}"
        );
    }
}

/// Backends of the app's database waiting for a lock on a tenant's row.
const TENANT_LOCK_WAITS: &str = "SELECT count(*) FROM pg_stat_activity WHERE datname = \
    current_database() AND wait_event_type = 'Lock' AND query LIKE '%tenants%'";

/// Whether another transaction could take the test recipients' rows now.
fn test_recipients_unlocked(url: &str) -> bool {
    let url = url.to_string();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.query("SELECT 1 FROM test_recipients FOR UPDATE NOWAIT", &[])
            .is_ok()
    })
}

/// A wrong guess that spends a fixed code's budget takes the tenant's row before its
/// entry's, in the order a PUT of the list takes them: at once on PostgreSQL the two never
/// deadlock (one of them would answer 503, or the guess's failure would go uncounted). The
/// PUT that came first replaces the entry; the guess counts against nothing it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guess_spending_a_fixed_code_and_a_put_of_the_list_at_once_take_turns() {
    if !on_postgres() {
        eprintln!("skipped on SQLite: its one writer runs one transaction at a time");
        return;
    }
    let app = spawn_app_with(|s| {
        s.limits.test_code_max_failures = 1;
        // The PUT waits while the guess is hashed and the test looks: no lock timeout then.
        s.database.timeout_seconds = 60;
    })
    .await;
    let (id, sk) = app.tenant().await;
    let list =
        json!([{"match": "review@acme.example", "code": "424242", "expires_at": at(&app, DAY)}]);
    assert_eq!(put_list(&app, &sk, list.clone()).await.0, StatusCode::OK);
    let (_, m) = mint_json(&app, &sk, "review@acme.example").await;
    let key = m["shareable_key"].as_str().unwrap().to_string();
    let db = app.settings.database.url.clone();
    // Another transaction holds the tenant's row: the PUT waits for it, then the guess.
    let lock = HeldLock::pg_row_no_key(&db, "tenants", &id);
    let put = put_list(&app, &sk, list);
    let rest = async {
        crate::lifecycle::wait_sql(&db, TENANT_LOCK_WAITS, 1, "the PUT never waited").await;
        let guess = app.verify(&sk, &key, "000000");
        let release = async {
            crate::lifecycle::wait_sql(&db, TENANT_LOCK_WAITS, 2, "the guess never waited").await;
            // The guess waits holding nothing of its entry.
            let unlocked = test_recipients_unlocked(&db);
            lock.release();
            unlocked
        };
        tokio::join!(guess, release)
    };
    let ((put, v), ((guessed, g), unlocked)) = tokio::join!(put, rest);
    assert!(
        unlocked,
        "the guess locked its entry before the tenant's row"
    );
    assert_eq!(put, StatusCode::OK, "{v}");
    assert_eq!(guessed, StatusCode::UNPROCESSABLE_ENTITY, "{g}");
    // The entry the PUT stored is live: its fixed code verifies.
    let (_, v) = body(app.get("/v1/tenant/test-recipients", &sk).await).await;
    assert_eq!(v["recipients"][0]["disabled_at"], Value::Null, "{v}");
    let (_, m) = mint_json(&app, &sk, "review@acme.example").await;
    let key = m["shareable_key"].as_str().unwrap().to_string();
    assert_eq!(app.verify(&sk, &key, "424242").await.0, StatusCode::OK);
}

/// A test recipient counts against the recipient's failure budget at mint like any
/// recipient (API.md §17.8): guessing wrong until the budget is spent refuses its next mint,
/// and a resend of its key.
#[tokio::test]
async fn a_test_recipient_out_of_its_failure_budget_is_refused_at_mint_and_resend() {
    let app = spawn_app_with(|s| {
        s.limits.recipient_max_failures = 2;
        s.limits.resend_cooldown_seconds = 0;
    })
    .await;
    // Codes of two guesses: the budget (never below a code's own guesses) is 2.
    let (_, sk) = app.tenant_with(json!({"max_attempts": 2})).await;
    let list =
        json!([{"match": "review@acme.example", "code": "424242", "expires_at": at(&app, DAY)}]);
    assert_eq!(put_list(&app, &sk, list).await.0, StatusCode::OK);
    // A second key (another purpose) stays live while the first one's guesses are spent.
    let (_, m) = mint_json(&app, &sk, "review@acme.example").await;
    let spent = m["shareable_key"].as_str().unwrap().to_string();
    let (s, m) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "review@acme.example", "purpose": "other"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let key = m["shareable_key"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            app.verify(&sk, &spent, "000000").await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let (s, v) = mint_json(&app, &sk, "review@acme.example").await;
    assert_eq!(
        (s, v["limit"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("failures")),
        "{v}"
    );
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["limit"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("failures")),
        "{v}"
    );
    assert_eq!(inbox(&app, &sk, "review@acme.example").await.len(), 2);
}

/// A key minted live and resent after its tenant turned into a test tenant: the new code
/// goes to the test inbox, and the key shows `"test": true` from then on (API.md §17.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_into_the_test_inbox_marks_the_key_test() {
    let app = spawn_app_with(|s| s.limits.resend_cooldown_seconds = 0).await;
    let (id, sk) = app.tenant().await;
    let (key, _) = app.mint(&sk, "live@example.com").await;
    let (_, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_ne!(v["test"], true, "{v}");
    let r = app
        .patch(&format!("/v1/tenants/{id}"), ADMIN, json!({"test": true}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert!(s.is_success(), "{v}");
    assert_eq!(inbox(&app, &sk, "live@example.com").await.len(), 1);
    assert_eq!(app.smtp.count_to("live@example.com"), 1);
    let (_, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_eq!(v["test"], true, "{v}");
}

/// A rotation racing "the test tenant goes live": whichever comes first, no key that works
/// afterwards starts `sk_test_` on the live tenant (API.md §17.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_racing_going_live_leaves_no_test_key_on_a_live_tenant() {
    let app = spawn_app().await;
    for round in 0..8 {
        let (s, v) = body(
            app.post(
                "/v1/tenants",
                ADMIN,
                json!({"name": format!("CI {round}"), "test": true, "smtp": app.smtp_json()}),
            )
            .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let (rotate, patch) = (
            format!("/v1/tenants/{id}/rotate-secret"),
            format!("/v1/tenants/{id}"),
        );
        let (rotated, live) = tokio::join!(
            app.post(&rotate, ADMIN, json!({})),
            app.patch(&patch, ADMIN, json!({"test": false})),
        );
        let (s, rotated) = body(rotated).await;
        assert_eq!(s, StatusCode::OK, "{rotated}");
        let (s, live) = body(live).await;
        assert_eq!(
            (s, &live["test"]),
            (StatusCode::OK, &json!(false)),
            "{live}"
        );
        for key in [&rotated["secret_key"], &live["secret_key"]] {
            let Some(key) = key.as_str() else { continue };
            if app.get("/v1/tenant", key).await.status() == StatusCode::OK {
                assert!(
                    !key.starts_with("sk_test_"),
                    "round {round}: a test key works"
                );
            }
        }
    }
}
