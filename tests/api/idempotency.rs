//! Idempotent mint (API.md §9): `Idempotency-Key` on `POST /v1/otp`.

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp::Mode;

async fn mint_with_key(app: &TestApp, sk: &str, key: &str, body: Value) -> Response {
    app.client
        .post(format!("{}/v1/otp", app.addr))
        .bearer_auth(sk)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn parts(r: Response) -> (StatusCode, bool, String) {
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (r.status(), replayed, r.text().await.unwrap())
}

#[tokio::test]
async fn a_repeat_gets_the_first_answer_and_sends_nothing() {
    let app = spawn_app_with(|s| s.limits.recipient_max_sends = 1).await;
    let (_, sk) = app.tenant().await;
    let body = json!({"email": "ada@example.com", "purpose": "login"});
    let (s1, r1, b1) =
        parts(mint_with_key(&app, &sk, "order-7781/attempt", body.clone()).await).await;
    assert_eq!((s1, r1), (StatusCode::CREATED, false), "{b1}");
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    // The same body, spelled differently, is the same request.
    let same = json!({"purpose": "login", "email": "ada@example.com"});
    let r = mint_with_key(&app, &sk, "order-7781/attempt", same).await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let (s2, r2, b2) = parts(r).await;
    assert_eq!((s2, r2), (StatusCode::CREATED, true));
    assert_eq!(b1, b2, "the first answer, again");
    // The answers staged with the code are gone once the answer is kept (they name the key).
    let staged =
        "SELECT COUNT(*) FROM idempotency_keys WHERE staged IS NOT NULL OR staged_code IS NOT NULL";
    assert_eq!(crate::lifecycle::sql(&app.settings.database.url, staged), 0);
    // Nothing sent, nothing counted (the recipient quota of 1 is not hit by the replay).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
    let key = serde_json::from_str::<Value>(&b1).unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    // Without the key the same body is a new mint (and now over the quota).
    let r = app.post("/v1/otp", &sk, body).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn another_body_with_the_key_is_refused() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (s, _, _) =
        parts(mint_with_key(&app, &sk, "k1", json!({"email": "ada@example.com"})).await).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = mint_with_key(&app, &sk, "k1", json!({"email": "bob@example.com"})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "idempotency_key_mismatch");
    assert_eq!(app.smtp.count_to("bob@example.com"), 0);
}

#[tokio::test]
async fn ten_parallel_requests_with_one_key_send_one_email() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_delay(std::time::Duration::from_millis(300));
    let body = json!({"email": "ada@example.com"});
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (client, addr, sk, body) = (
            app.client.clone(),
            app.addr.clone(),
            sk.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{addr}/v1/otp"))
                .bearer_auth(&sk)
                .header("Idempotency-Key", "same-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            let (s, replayed, text) = parts(r).await;
            (s, replayed, text, retry)
        }));
    }
    let mut firsts = 0;
    let mut answers = Vec::new();
    for t in tasks {
        let (s, replayed, text, retry) = t.await.unwrap();
        match s {
            StatusCode::CREATED if !replayed => {
                firsts += 1;
                answers.push(text);
            }
            StatusCode::CREATED => answers.push(text),
            StatusCode::CONFLICT => {
                assert!(retry, "409 carries Retry-After");
                assert_eq!(
                    serde_json::from_str::<Value>(&text).unwrap()["code"],
                    "idempotency_key_in_use"
                );
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert_eq!(firsts, 1);
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.smtp.count_to("ada@example.com"), 1, "exactly one email");
    // Once finished, the key replays.
    let (s, replayed, text) = parts(mint_with_key(&app, &sk, "same-key", body).await).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, true));
    assert_eq!(text, answers[0]);
}

#[tokio::test]
async fn malformed_keys_are_refused_before_anything_happens() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str(), "tab\there"] {
        let r = mint_with_key(&app, &sk, key, json!({"email": "ada@example.com"})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{key:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["field"], "Idempotency-Key");
    }
    // Two header lines are one too many.
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .bearer_auth(&sk)
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // 255 visible characters are fine.
    let ok = "~".repeat(255);
    let r = mint_with_key(&app, &sk, &ok, json!({"email": "ada@example.com"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
}

#[tokio::test]
async fn a_failed_delivery_is_kept_and_other_answers_free_the_key() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    // 502 is kept: the repeat does not try the relay again.
    app.smtp.set_mode(Mode::RejectRecipients);
    let body = json!({"email": "ada@example.com"});
    let (s, _, first) = parts(mint_with_key(&app, &sk, "k502", body.clone()).await).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    let tries = app.smtp.connections();
    app.smtp.set_mode(Mode::Normal);
    let r = mint_with_key(&app, &sk, "k502", body.clone()).await;
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let (s, replayed, again) = parts(r).await;
    assert_eq!((s, replayed), (StatusCode::BAD_GATEWAY, true));
    assert_eq!(first, again);
    assert_eq!(app.smtp.connections(), tries);
    assert_eq!(app.smtp.count_to("ada@example.com"), 0);

    // A 400 is not kept: the key may be used again, even with another body.
    let r = mint_with_key(&app, &sk, "k400", json!({"email": "not an address"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = mint_with_key(&app, &sk, "k400", body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn keys_belong_to_a_tenant_and_last_a_day() {
    let app = spawn_app().await;
    let (_, a) = app.tenant().await;
    let (_, b) = app.tenant().await;
    let body = json!({"email": "ada@example.com", "delivery": "async"});
    let (s, _, first) = parts(mint_with_key(&app, &a, "shared", body.clone()).await).await;
    assert_eq!(s, StatusCode::ACCEPTED, "async answers are kept too");
    let (s, replayed, _) = parts(mint_with_key(&app, &b, "shared", body.clone()).await).await;
    assert_eq!(
        (s, replayed),
        (StatusCode::ACCEPTED, false),
        "another tenant's key"
    );
    let (s, replayed, again) = parts(mint_with_key(&app, &a, "shared", body.clone()).await).await;
    assert_eq!((s, replayed, &again), (StatusCode::ACCEPTED, true, &first));
    app.smtp.wait_for("ada@example.com", 2).await;
    // After 24 hours the key is forgotten (and purged).
    app.clock.advance_secs(24 * 3600 + 1);
    app.services.admin.purge_once().await.unwrap();
    let (s, replayed, later) = parts(mint_with_key(&app, &a, "shared", body).await).await;
    assert_eq!((s, replayed), (StatusCode::ACCEPTED, false));
    assert_ne!(later, first);
}

/// A repeat served by an instance that has not loaded the data key its answer was sealed
/// under (another instance, or the CLI, rotated it a moment ago) reloads the keyring and
/// replays the answer — never a 500 (API.md §9 "across instances", §11.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_sealed_under_a_data_key_this_instance_has_not_loaded_is_replayed() {
    use otpmint::service::codes::idempotency::{fingerprint, IdemStart};
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    // A second instance on the same database, built before the rotation and without the
    // server's reload loop: it holds data key 1 until something makes it look again.
    let clock: std::sync::Arc<dyn otpmint::clock::Clock> = app.clock.clone();
    let other = otpmint::startup::build_services(app.settings.clone(), clock).unwrap();
    let (ok, out, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok && out.contains("version 2"), "{out}{err}");
    // The server, started again, seals under version 2.
    let app = app.restart().await;
    let body = json!({"email": "ada@example.com"});
    let (status, replayed, first) =
        parts(mint_with_key(&app, &sk, "k-rotated", body.clone()).await).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed);
    let tenant = otpmint::domain::keys::TenantId::parse(&id).unwrap();
    match other
        .codes
        .idem_begin(&tenant, "k-rotated", fingerprint(&body))
        .await
    {
        Ok(IdemStart::Replay { status, body }) => {
            assert_eq!(status, 201);
            assert_eq!(String::from_utf8(body).unwrap(), first);
        }
        Ok(IdemStart::Proceed(_)) => panic!("the first answer was not found"),
        Err(e) => panic!("no replay: {e}"),
    }
}

/// A repeat that comes after the first request's holder died with its code stored — its
/// claim ran out while its send hung in DATA, as when its process is killed there — gets that
/// code's answer as its delivery reads (`unknown`: the message may have arrived), and nothing
/// is minted or sent again (API.md §9, §19.2; found by the PostgreSQL audit: such a repeat
/// minted a second code, superseding the first, which may have arrived). The holder is held
/// here, not killed: past its claim it is dead to the key, and its late answer changes nothing
/// (a holder alive past its claim happens only as here, with the clock moved on: the claim
/// outlasts any mint; its own client then got `sent` where the key keeps `unknown`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_after_its_holder_died_with_its_code_stored_gets_that_codes_answer() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let body = json!({"email": "ada@example.com"});
    app.smtp.hold();
    let first = {
        let (client, url) = (app.client.clone(), format!("{}/v1/otp", app.addr));
        let (sk, body) = (sk.clone(), body.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(sk)
                .header("Idempotency-Key", "order-9")
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    for _ in 0..250 {
        if app.smtp.in_data() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.smtp.in_data(), 1, "the first send is in DATA");
    // While it runs, a repeat is told so.
    let r = mint_with_key(&app, &sk, "order-9", body.clone()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Past the claim's lease (2 × (the send's and the request's timeouts) + 30 s).
    let lease =
        2 * (app.settings.attempt_seconds() + app.settings.server.request_timeout_seconds) + 30;
    app.clock.advance_secs(lease as i64 + 1);
    let (s, replayed, again) = parts(mint_with_key(&app, &sk, "order-9", body.clone()).await).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, true), "{again}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["delivery"], "unknown", "{again}");
    // Nothing minted or sent again: still the one send in DATA.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.smtp.in_data(), 1);
    app.smtp.release();
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let (s, _, first) = parts(first.await.unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["shareable_key"], again["shareable_key"]);
    // The key keeps the answer the repeat got; the code it names verifies.
    let (s, replayed, kept) = parts(mint_with_key(&app, &sk, "order-9", body).await).await;
    assert_eq!((s, replayed), (StatusCode::CREATED, true));
    assert_eq!(serde_json::from_str::<Value>(&kept).unwrap(), again);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
    let key = again["shareable_key"].as_str().unwrap();
    assert_eq!(app.verify(&sk, key, &code).await.0, StatusCode::OK);
}
