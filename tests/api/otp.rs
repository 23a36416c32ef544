//! Codes over HTTP: every row of the verify table, the concurrency invariants, expiry,
//! superseding, isolation, persistence, and what the database file holds.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::SMTP_PASS;

#[tokio::test]
async fn mint_returns_201_with_key_and_policy_and_the_code_arrives_by_mail() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "purpose": "login"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    let key = v["shareable_key"].as_str().unwrap();
    assert!(key.starts_with("otp_") && key.len() == 26, "{key}");
    assert_eq!(v["ttl_seconds"], 600);
    assert_eq!(v["code_length"], 6);
    assert_eq!(v["max_attempts"], 5);
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let msg = app.smtp.wait_for("ada@example.com", 1).await;
    assert_eq!(msg.code().len(), 6);
    assert!(msg.tls, "message must travel over TLS");
    assert_eq!(msg.user, crate::smtp::SMTP_USER);
}

#[tokio::test]
async fn verify_returns_200_once_with_email_as_given_and_purpose() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app
        .mint_purpose(&sk, "Ada@Example.COM", Some("login"))
        .await;
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["email"], "Ada@Example.COM");
    assert_eq!(v["purpose"], "login");
    assert!(v["verified_at"].as_str().is_some());
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "otp_used");
    assert_eq!(v["type"], "/problems/otp_used");
}

#[tokio::test]
async fn verify_returns_422_with_attempts_remaining_then_410_attempts_exhausted() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 3})).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    for remaining in [2, 1, 0] {
        let (s, v) = app.verify(&sk, &key, &wrong(&code)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["code"], "otp_mismatch");
        assert_eq!(v["attempts_remaining"], remaining);
        assert!(!v.to_string().contains(&code));
    }
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "attempts_exhausted");
}

#[tokio::test]
async fn malformed_codes_are_400_and_use_no_attempt() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 1})).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    for bad in [
        "12345",
        "1234567",
        "12a456",
        "١٢٣٤٥٦",
        " 123456",
        "",
        "12345\u{0}",
    ] {
        let (s, v) = app.verify(&sk, &key, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert_eq!(v["code"], "invalid_request");
    }
    // a number instead of a string is a wrong type
    let r = app
        .post(
            "/v1/otp/verify",
            &sk,
            json!({"shareable_key": key, "otp": 123456}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // the single attempt is still there
    let (s, _) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn unknown_malformed_and_foreign_keys_are_the_same_404() {
    let app = spawn_app().await;
    let (_, sk_a) = app.tenant().await;
    let (_, sk_b) = app.tenant().await;
    let (key_a, code_a) = app.mint(&sk_a, "ada@example.com").await;
    let mut bodies = Vec::new();
    for key in ["otp_AAAAAAAAAAAAAAAAAAAAAA", "garbage", key_a.as_str()] {
        let (s, mut v) = app.verify(&sk_b, key, &code_a).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{key}");
        v.as_object_mut().unwrap().remove("request_id");
        bodies.push(v);
        let r = app.get(&format!("/v1/otp/{key}"), &sk_b).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app.delete(&format!("/v1/otp/{key}"), &sk_b).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], bodies[2]);
    assert_eq!(bodies[0]["code"], "otp_not_found");
    // tenant A's code is untouched by B's attempts
    let (s, _) = app.verify(&sk_a, &key_a, &code_a).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_code_never_verifies_after_expires_at() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"ttl_seconds": 60})).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.clock.advance_secs(59);
    let r: Value = app
        .get(&format!("/v1/otp/{key}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "pending");
    app.clock.advance_secs(1);
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "otp_expired");
    let r: Value = app
        .get(&format!("/v1/otp/{key}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "expired");
    assert_eq!(r["attempts_used"], 0);
}

/// Times are shown in whole seconds; a code minted 700 ms into a second ends at the second
/// its `expires_at` shows, not up to a second after it.
#[tokio::test]
async fn a_code_ends_at_the_whole_second_its_expires_at_shows() {
    use otpmint::clock::Clock;
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"ttl_seconds": 60})).await;
    app.clock
        .advance_millis(700 - app.clock.now().rem_euclid(1000));
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let path = format!("/v1/otp/{key}");
    let status = || async { app.get(&path, &sk).await.json::<Value>().await.unwrap() };
    let v = status().await;
    let shown = otpmint::clock::parse_time(v["expires_at"].as_str().unwrap()).unwrap();
    let left = shown - app.clock.now();
    assert_eq!(left, 59_300, "{v}");
    app.clock.advance_millis(left - 1);
    assert_eq!(status().await["status"], "pending");
    app.clock.advance_millis(1);
    assert_eq!(status().await["status"], "expired");
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!((s, &v["code"]), (StatusCode::GONE, &json!("otp_expired")));
}

#[tokio::test]
async fn a_new_code_supersedes_the_previous_one_for_the_same_purpose_only() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (old, old_code) = app
        .mint_purpose(&sk, "ada@example.com", Some("login"))
        .await;
    let (other, other_code) = app
        .mint_purpose(&sk, "ada@example.com", Some("reset"))
        .await;
    let (new, new_code) = app
        .mint_purpose(&sk, "ada@example.com", Some("login"))
        .await;
    let (s, v) = app.verify(&sk, &old, &old_code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "otp_superseded");
    assert_eq!(app.verify(&sk, &new, &new_code).await.0, StatusCode::OK);
    assert_eq!(app.verify(&sk, &other, &other_code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_and_cancel_follow_the_code() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app
        .mint_purpose(&sk, "ada@example.com", Some("login"))
        .await;
    app.verify(&sk, &key, &wrong(&code)).await;
    let v = app.code_status(&sk, &key).await;
    assert_eq!(v["status"], "pending");
    assert_eq!(v["purpose"], "login");
    assert_eq!(v["attempts_used"], 1);
    assert_eq!(v["attempts_remaining"], 4);
    assert_eq!(v["verified_at"], Value::Null);
    let r = app.delete(&format!("/v1/otp/{key}"), &sk).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "otp_cancelled");
    let v = app.code_status(&sk, &key).await;
    assert_eq!(v["status"], "cancelled");
    // cancelling again: it has ended
    let r = app.delete(&format!("/v1/otp/{key}"), &sk).await;
    assert_eq!(r.status(), StatusCode::GONE);
}

#[tokio::test]
async fn twenty_parallel_correct_verifies_succeed_exactly_once() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let futs = (0..20).map(|_| app.verify(&sk, &key, &code));
    let results = futures_util::future::join_all(futs).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
    // The others lost the race: the code is used. None is told `attempts_exhausted`, though
    // copies still being compared held every attempt when it came: no wrong guess was made.
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != StatusCode::OK)
            .all(|(s, v)| *s == StatusCode::GONE && v["code"] == "otp_used"),
        "{results:?}"
    );
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("otp_used"))
    );
}

/// Copies of the right code compared while the code expires, or while another copy
/// verifies it, were no wrong guesses (found by the race audit: ten copies racing
/// `expires_at` all answered `attempts_exhausted` and left the key `exhausted` with no wrong
/// guess made; copies that lost to the winner left `attempts_used` at 5). Whatever the
/// interleaving: never `attempts_exhausted`; the key ends verified with the winner's one
/// attempt used, or expired with none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_the_right_code_racing_expiry_or_each_other_are_no_wrong_guesses() {
    let app = spawn_app().await;
    let (_, sk) = app
        .tenant_with(json!({"max_attempts": 5, "ttl_seconds": 60}))
        .await;
    for (round, expire_after_ms) in [None, Some(0), Some(1), Some(3), Some(6), Some(10)]
        .into_iter()
        .enumerate()
    {
        let (key, code) = app.mint(&sk, &format!("race{round}@example.com")).await;
        let copies = futures_util::future::join_all((0..10).map(|_| app.verify(&sk, &key, &code)));
        let expire = async {
            if let Some(ms) = expire_after_ms {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                app.clock.advance_secs(61);
            }
        };
        let (results, ()) = tokio::join!(copies, expire);
        let won = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        assert!(won <= 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .filter(|(s, _)| *s != StatusCode::OK)
                .all(|(s, v)| *s == StatusCode::GONE
                    && (v["code"] == "otp_used" || v["code"] == "otp_expired")),
            "round {round}: {results:?}"
        );
        let (_, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
        let want = if won == 1 {
            ("verified", 1)
        } else {
            ("expired", 0)
        };
        assert_eq!(
            (
                v["status"].as_str().unwrap_or_default(),
                v["attempts_used"].as_i64().unwrap_or(-1)
            ),
            want,
            "round {round}: {v}"
        );
    }
}

#[tokio::test]
async fn fifty_parallel_wrong_guesses_evaluate_exactly_max_attempts() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 5})).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let bad = wrong(&code);
    let futs = (0..50).map(|_| app.verify(&sk, &key, &bad));
    let results = futures_util::future::join_all(futs).await;
    let evaluated = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!(evaluated, 5, "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s != StatusCode::UNPROCESSABLE_ENTITY)
        .all(|(s, v)| *s == StatusCode::GONE && v["code"] == "attempts_exhausted"));
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "attempts_exhausted");
}

/// A code whose only attempt is taken by the right code still being compared is not
/// exhausted: a status read waits for that verify's outcome (`verified`), a cancel either
/// cancels it (the verify then fails) or says it was used, and so does a resend (found by
/// the verify audit: it answered `attempts_exhausted`) — never `attempts_exhausted`, which
/// is final. (Before, each said exhausted, then it verified.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_being_checked_is_never_called_exhausted_by_a_status_read_or_a_cancel() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 1})).await;
    for round in 0..6 {
        let (key, code) = app.mint(&sk, &format!("poll{round}@example.com")).await;
        let done = AtomicBool::new(false);
        let verify = async {
            let r = app.verify(&sk, &key, &code).await;
            done.store(true, Ordering::SeqCst);
            r
        };
        let poll = async {
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let (_, v) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
                seen.push(v["status"].as_str().unwrap_or_default().to_string());
            }
            seen
        };
        let ((s, v), seen) = tokio::join!(verify, poll);
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            seen.iter().all(|st| st == "pending" || st == "verified"),
            "{seen:?}"
        );
    }
    let mut saw_used = false;
    for round in 0..6 {
        let (key, code) = app.mint(&sk, &format!("resend{round}@example.com")).await;
        let done = AtomicBool::new(false);
        let verify = async {
            let r = app.verify(&sk, &key, &code).await;
            done.store(true, Ordering::SeqCst);
            r
        };
        let resend = async {
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let path = format!("/v1/otp/{key}/resend");
                let (s, v) = body(app.post(&path, &sk, json!({})).await).await;
                seen.push((s, v["code"].as_str().unwrap_or_default().to_string()));
            }
            seen
        };
        let ((s, v), seen) = tokio::join!(verify, resend);
        assert_eq!(s, StatusCode::OK, "{v}");
        // Resent, or refused by the cooldown or the resend limit, while the code is
        // pending; `otp_used` once it is verified; never `attempts_exhausted`.
        assert!(
            seen.iter().all(|(s, c)| *s == StatusCode::CREATED
                || *s == StatusCode::TOO_MANY_REQUESTS
                || (*s == StatusCode::GONE && c == "otp_used")),
            "{seen:?}"
        );
        saw_used |= seen.iter().any(|(s, _)| *s == StatusCode::GONE);
    }
    assert!(
        saw_used,
        "no resend met a verified key: the race was not run"
    );
    for round in 0..12 {
        let (key, code) = app.mint(&sk, &format!("cancel{round}@example.com")).await;
        let cancel = async {
            tokio::time::sleep(std::time::Duration::from_millis(round)).await;
            body(app.delete(&format!("/v1/otp/{key}"), &sk).await).await
        };
        let ((vs, vv), (cs, cv)) = tokio::join!(app.verify(&sk, &key, &code), cancel);
        match cs {
            StatusCode::NO_CONTENT => {
                assert_eq!(
                    (vs, vv["code"].as_str()),
                    (StatusCode::GONE, Some("otp_cancelled"))
                )
            }
            _ => {
                assert_eq!(
                    (cs, cv["code"].as_str()),
                    (StatusCode::GONE, Some("otp_used")),
                    "{cv}"
                );
                assert_eq!(vs, StatusCode::OK, "{vv}");
            }
        }
    }
}

#[tokio::test]
async fn pending_codes_survive_a_restart() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let (used, used_code) = app.mint_purpose(&sk, "bob@example.com", None).await;
    assert_eq!(app.verify(&sk, &used, &used_code).await.0, StatusCode::OK);
    let app = app.restart().await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (s, v) = app.verify(&sk, &used, &used_code).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["code"], "otp_used");
}

#[tokio::test]
async fn codes_belong_to_the_tenant_not_to_its_secret_key() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let r = app
        .post(&format!("/v1/tenants/{id}/rotate-secret"), ADMIN, json!({}))
        .await;
    let new_sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.verify(&new_sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_tenant_stops_its_codes() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(
        app.delete(&format!("/v1/tenants/{id}"), ADMIN)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test]
async fn the_database_file_holds_no_password_secret_code_or_shareable_key() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let (key2, _) = app.mint(&sk, "bob@example.com").await;
    let bytes = app.stored_bytes();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains("ada@example.com"),
        "the scan must see the stored rows"
    );
    for secret in [
        SMTP_PASS,
        sk.as_str(),
        key.as_str(),
        key2.as_str(),
        &key[4..],
        &sk[3..],
    ] {
        assert!(!contains(secret), "database holds a plaintext secret");
    }
    // the code is stored only as argon2id; make sure its digits don't sit next to the email
    assert!(!contains(&format!("\"{code}\"")) && !contains(&format!("code={code}")));
}

#[tokio::test]
async fn mint_rejects_bad_email_and_purpose_and_sends_nothing() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    for email in [
        "nope",
        "a@b",
        "a@[127.0.0.1]",
        "Ada <ada@example.com>",
        "a@x.com, b@y.com",
        "a@x.com\r\nBcc: c@d.com",
    ] {
        let r = app.post("/v1/otp", &sk, json!({"email": email})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{email:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "invalid_email");
    }
    for purpose in ["LOGIN", "a b", "", &"x".repeat(65)] {
        let r = app
            .post(
                "/v1/otp",
                &sk,
                json!({"email": "ada@example.com", "purpose": purpose}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{purpose:?}");
    }
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test]
async fn requests_without_a_valid_secret_key_are_401_with_one_body() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    app.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"enabled": false}),
    )
    .await;
    let mut bodies = Vec::new();
    for bearer in [
        "",
        "sk_unknownunknownunknownunknown12",
        "garbage",
        sk.as_str(),
    ] {
        let r = app
            .post("/v1/otp", bearer, json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        bodies.push(r.json::<Value>().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Verify checks the secret key in the store call that reserves the attempt; a wrong key is
/// still a 401 whatever else is wrong with the request, uses no attempt and reaches no audit.
#[tokio::test]
async fn verify_with_a_wrong_secret_key_is_401_whatever_the_body_and_uses_no_attempt() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 2})).await;
    let (other_id, other_sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.patch(
        &format!("/v1/tenants/{other_id}"),
        ADMIN,
        json!({"enabled": false}),
    )
    .await;
    let bodies = [
        json!({"shareable_key": key, "otp": code}),
        json!({"shareable_key": key, "otp": wrong(&code)}),
        json!({"shareable_key": key, "otp": "12ab"}),
        json!({"shareable_key": "otp_nope", "otp": code}),
        json!({"shareable_key": key}),
        json!([1, 2]),
    ];
    for bearer in ["", "sk_unknownunknownunknownunknown12", other_sk.as_str()] {
        for body in &bodies {
            let r = app.post("/v1/otp/verify", bearer, body.clone()).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bearer:?} {body}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["code"], "unauthorized", "{v}");
        }
        let r = app
            .client
            .post(format!("{}/v1/otp/verify", app.addr))
            .bearer_auth(bearer)
            .header("content-type", "text/plain")
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bearer:?} text body");
    }
    // The owner's key still has both attempts, and the audit saw no verify.
    let v = app.code_status(&sk, &key).await;
    assert_eq!(v["attempts_remaining"], 2, "{v}");
    let audit = |v: Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e["event"], e["outcome"]))
            .collect()
    };
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    assert_eq!(audit(v), ["\"mint\" \"sent\""]);
    // The right key with a bad body gets the body's error, then the code verifies.
    let r = app
        .post("/v1/otp/verify", &sk, json!({"shareable_key": key}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    assert_eq!(audit(v), ["\"verify\" \"verified\"", "\"mint\" \"sent\""]);
}

#[tokio::test]
async fn concurrent_mints_for_one_recipient_and_purpose_leave_exactly_one_pending_code() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let futs = (0..6).map(|_| {
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "purpose": "login"}),
        )
    });
    let mut keys = Vec::new();
    for r in futures_util::future::join_all(futs).await {
        assert_eq!(r.status(), StatusCode::CREATED);
        keys.push(
            r.json::<Value>().await.unwrap()["shareable_key"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut statuses = Vec::new();
    for k in &keys {
        let v: Value = app
            .get(&format!("/v1/otp/{k}"), &sk)
            .await
            .json()
            .await
            .unwrap();
        statuses.push(v["status"].as_str().unwrap().to_string());
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "pending").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "superseded").count(),
        5,
        "{statuses:?}"
    );
}

/// A verify whose client goes away while its guess is compared still finishes: the right
/// code verifies the key (as if only the answer were lost), and its attempt is no longer
/// open — where actix dropped the request's work with the connection, leaving the key
/// pending with an attempt used and open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_whose_client_goes_away_mid_compare_still_finishes() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|s| {
        // A hash slow enough for the client to leave while it is compared.
        s.hashing.iterations = 40;
    })
    .await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let db = app.settings.database.url.clone();
    const USED: &str = "SELECT COUNT(*) FROM challenges WHERE attempts = 1";
    const OPEN: &str = "SELECT COUNT(*) FROM challenges WHERE attempts_open > 0";
    let body = json!({"shareable_key": key, "otp": code}).to_string();
    let host = app.addr.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST /v1/otp/verify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {sk}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    crate::lifecycle::wait_sql(&db, USED, 1, "the attempt was never reserved").await;
    // The client leaves before its answer, resetting the connection (as a client's own
    // timeout may): actix then drops the request's work.
    conn.set_zero_linger().unwrap();
    drop(conn);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = app.code_status(&sk, &key).await;
        if v["status"] == "verified" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the verify stopped with its client: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    crate::lifecycle::wait_sql(&db, OPEN, 0, "the attempt stayed open").await;
    assert_eq!(crate::lifecycle::sql(&db, USED), 1);
}
