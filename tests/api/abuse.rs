//! Abuse resistance over HTTP: per-IP limits and trusted proxies, stored quotas, the failure
//! budget, SSRF at send time, hostile input, and overload shedding.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn per_ip_limit_answers_429_with_retry_after_on_every_route() {
    let app = spawn_app_with(|s| {
        s.limits.per_ip_per_second = 1;
        s.limits.per_ip_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.get("/healthz", "").await);
    }
    let limited = statuses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited >= 2, "burst 3 then limited: {limited}");
    let r = statuses
        .into_iter()
        .find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    assert!(retry_after(&r) >= 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited");
    // The refusal names its limit and the settings that allow more (API.md §18.8).
    assert_eq!(v["limit"], "ip");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("limits.per_ip_per_second"), "{detail}");
    // compat routes read OtpMint's text
    let r = app
        .post(
            "/verify-otp",
            "",
            json!({"shareableKey": "abcdefghij", "otp": "123456"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.text().await.unwrap(), "Too Many Requests");
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let app = spawn_app_with(|s| {
        s.limits.per_ip_per_second = 1;
        s.limits.per_ip_burst = 2;
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..5 {
        let r = app
            .client
            .get(format!("{}/healthz", app.addr))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        codes.push(r.status());
    }
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
}

#[tokio::test]
async fn a_trusted_proxy_forwards_each_client_its_own_bucket() {
    let app = spawn_app_with(|s| {
        s.limits.per_ip_per_second = 1;
        s.limits.per_ip_burst = 2;
        s.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    for i in 0..6 {
        let r = app
            .client
            .get(format!("{}/healthz", app.addr))
            .header("x-forwarded-for", format!("6.6.6.6, 198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "client {i} has its own bucket");
    }
}

#[tokio::test]
async fn thirty_concurrent_mints_with_a_quota_of_three_send_exactly_three() {
    let app = spawn_app_with(|s| s.limits.recipient_max_sends = 3).await;
    let (_, sk) = app.tenant().await;
    let futs = (0..30).map(|i| {
        // case and IDNA forms of one address share the bucket
        let email = if i % 2 == 0 {
            "Ada@EXAMPLE.com"
        } else {
            "ada@example.com"
        };
        app.post("/v1/otp", &sk, json!({"email": email}))
    });
    let results = futures_util::future::join_all(futs).await;
    let created = results
        .iter()
        .filter(|r| r.status() == StatusCode::CREATED)
        .count();
    let limited: Vec<_> = results
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(created, 3);
    assert_eq!(limited.len(), 27);
    assert!(limited
        .iter()
        .all(|r| r.headers().contains_key("retry-after")));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.smtp.messages().len(), 3);
}

#[tokio::test]
async fn idna_forms_share_a_bucket() {
    let app = spawn_app_with(|s| s.limits.recipient_max_sends = 1).await;
    let (_, sk) = app.tenant().await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@bücher.example"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ADA@xn--bcher-kva.example"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_resend_cooldown_and_tenant_quota_hold_and_survive_a_restart() {
    let app = spawn_app_with(|s| {
        s.limits.resend_cooldown_seconds = 30;
        s.limits.tenant_max_sends_per_hour = 3;
    })
    .await;
    let (_, sk) = app.tenant().await;
    app.mint(&sk, "ada@example.com").await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=30).contains(&retry_after(&r)));
    app.clock.advance_secs(31);
    app.mint(&sk, "ada@example.com").await;
    let app = app.restart().await;
    app.mint(&sk, "bob@example.com").await;
    // the tenant's hourly quota (3) is spent, across the restart
    let r = app
        .post("/v1/otp", &sk, json!({"email": "cy@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.smtp.messages().len(), 3);
    app.clock.advance_secs(3600);
    app.mint(&sk, "cy@example.com").await;
}

/// Where several limits refuse a mint at once, the 429 names the one that holds longest,
/// with its `Retry-After`: a client that waits that long is not refused by another (before,
/// the cooldown answered first and its wait ended in the recipient window's 429).
#[tokio::test]
async fn when_several_limits_refuse_the_429_waits_for_the_one_that_holds_longest() {
    let app = spawn_app_with(|s| {
        s.limits.resend_cooldown_seconds = 10;
        s.limits.recipient_max_sends = 2;
        s.limits.recipient_window_seconds = 60;
    })
    .await;
    let (_, sk) = app.tenant().await;
    app.mint(&sk, "ada@example.com").await;
    app.clock.advance_secs(10);
    app.mint(&sk, "ada@example.com").await;
    // The cooldown (10 s more) and the recipient's window (its 2 sends: 50 s more) refuse.
    let refused = || async {
        let r = app
            .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry = retry_after(&r);
        let v: Value = r.json().await.unwrap();
        (retry, v["limit"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(refused().await, (50, "recipient".to_string()));
    app.clock.advance_secs(10);
    assert_eq!(refused().await, (40, "recipient".to_string()));
    app.clock.advance_secs(39);
    assert_eq!(refused().await.1, "recipient");
    app.clock.advance_secs(1);
    app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.smtp.messages().len(), 3);
}

#[tokio::test]
async fn the_failure_budget_spans_codes_and_blocks_mint_and_verify_until_the_window_passes() {
    let app = spawn_app_with(|s| {
        s.limits.recipient_max_failures = 3;
        s.limits.recipient_window_seconds = 600;
    })
    .await;
    // Codes of three guesses each: the budget (never below a code's own guesses) is 3.
    let (_, sk) = app.tenant_with(json!({"max_attempts": 3})).await;
    let (k1, c1) = app.mint(&sk, "ada@example.com").await;
    app.verify(&sk, &k1, &wrong(&c1)).await;
    app.verify(&sk, &k1, &wrong(&c1)).await;
    // a resend does not reset the count
    let (k2, c2) = app.mint(&sk, "ada@example.com").await;
    let (s, _) = app.verify(&sk, &k2, &wrong(&c2)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = app.verify(&sk, &k2, &c2).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // other recipients are not affected
    app.mint(&sk, "bob@example.com").await;
    let v: Value = app
        .get(&format!("/v1/otp/{k2}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["attempts_used"], 1, "a blocked verify uses no attempt");
    app.clock.advance_secs(601);
    let (k3, c3) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &k3, &c3).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_right_code_resets_the_recipients_failure_budget() {
    let app = spawn_app_with(|s| {
        s.limits.recipient_max_failures = 3;
        s.limits.recipient_window_seconds = 600;
    })
    .await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 3})).await;
    let (k1, c1) = app.mint(&sk, "ada@example.com").await;
    for _ in 0..2 {
        assert_eq!(
            app.verify(&sk, &k1, &wrong(&c1)).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    assert_eq!(app.verify(&sk, &k1, &c1).await.0, StatusCode::OK);
    // Two failures before the match are forgotten with it: the recipient has the whole
    // budget of three evaluated guesses again, over its codes, then it is blocked.
    let (k2, c2) = app.mint(&sk, "ada@example.com").await;
    for _ in 0..2 {
        let (s, v) = app.verify(&sk, &k2, &wrong(&c2)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    let (k3, c3) = app.mint(&sk, "ada@example.com").await;
    let (s, v) = app.verify(&sk, &k3, &wrong(&c3)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = app.verify(&sk, &k3, &c3).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
}

/// The budget is never below a code's own `max_attempts` (API.md §6.3): a tenant that
/// allows 20 guesses gets its 422s down to `attempts_remaining: 0`, then 410 — not 429
/// after `limits.recipient_max_failures` (10 by default) — and the right code verifies
/// late in that run; past a whole code's worth of failures the recipient is blocked.
#[tokio::test]
async fn the_failure_budget_never_cuts_a_codes_own_attempts_short() {
    let app = spawn_app_with(|s| {
        s.limits.recipient_max_failures = 10;
        s.limits.recipient_window_seconds = 600;
        s.limits.resend_cooldown_seconds = 0;
    })
    .await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 20})).await;
    let (k1, c1) = app.mint(&sk, "ada@example.com").await;
    for left in (1..20).rev() {
        let (s, v) = app.verify(&sk, &k1, &wrong(&c1)).await;
        assert_eq!(
            (s, v["attempts_remaining"].as_u64()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(left)),
            "{v}"
        );
    }
    assert_eq!(app.verify(&sk, &k1, &c1).await.0, StatusCode::OK);
    let (k2, c2) = app.mint(&sk, "ada@example.com").await;
    for left in (0..20).rev() {
        let (s, v) = app.verify(&sk, &k2, &wrong(&c2)).await;
        assert_eq!(
            (s, v["attempts_remaining"].as_u64()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(left)),
            "{v}"
        );
    }
    let (s, v) = app.verify(&sk, &k2, &c2).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("attempts_exhausted")),
        "{v}"
    );
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_host_that_stopped_being_allowed_fails_at_send_time_without_connecting() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let mut settings = app.settings.clone();
    settings.smtp.allow_private_hosts = false;
    app.handle.stop(true).await;
    let TestApp {
        smtp, dir, clock, ..
    } = app;
    let before = smtp.connections();
    let app = start(settings, smtp, dir, clock).await;
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "smtp_host_not_allowed"
    );
    assert_eq!(
        app.smtp.connections(),
        before,
        "no connection to a refused host"
    );
}

#[tokio::test]
async fn a_dns_host_name_is_verified_by_tls_against_the_certificate() {
    let app = spawn_app().await;
    let mut smtp = app.smtp_json();
    smtp["host"] = json!("localhost");
    let r = app
        .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    app.mint(&sk, "ada@example.com").await;
}

#[tokio::test]
async fn hostile_input_gets_4xx_before_any_work_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let long_local = format!("{}@example.com", "a".repeat(250));
    let bodies = vec![
        json!({"email": "ada@example.com\r\nBcc: eve@evil.example"}),
        json!({"email": "ada@example.com\nX: y"}),
        json!({"email": "ada@example.com, eve@evil.example"}),
        json!({"email": "ada@example.com;eve@evil.example"}),
        json!({"email": "Ada <ada@example.com>"}),
        json!({"email": "ada@[127.0.0.1]"}),
        json!({"email": "ada@localhost"}),
        json!({"email": long_local}),
        json!({"email": "ada\u{0}@example.com"}),
        json!({"email": "ada@example.com", "purpose": "login\r\n"}),
        json!({"email": "ada@example.com", "locale": "en\r\nX"}),
        json!({"email": 5}),
        json!({"email": ["ada@example.com"]}),
        json!({"email": null}),
        json!({"email": "ada@example.com", "extra": true}),
    ];
    for b in bodies {
        let r = app.post("/v1/otp", &sk, b.clone()).await;
        assert!(r.status().is_client_error(), "{b}: {}", r.status());
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("evil.example") && !text.contains("SELECT"),
            "{text}"
        );
    }
    for raw in [
        r#"{"email":"ada@example.com","email":"eve@evil.example"}"#.to_string(),
        format!("{}1{}", "{\"a\":".repeat(300), "}".repeat(300)),
        "\u{0}".to_string(),
    ] {
        let r = app
            .client
            .post(format!("{}/v1/otp", app.addr))
            .bearer_auth(&sk)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    for otp in [
        json!("١٢٣٤٥٦"),
        json!("12345678901"),
        json!("12\r\n34"),
        json!(123456),
        json!(null),
        json!("1234\u{0}6"),
    ] {
        let r = app
            .post(
                "/v1/otp/verify",
                &sk,
                json!({"shareable_key": key, "otp": otp}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{otp}");
    }
    let long_key = format!("otp_{}", "a".repeat(5000));
    let (s, _) = app.verify(&sk, &long_key, &code).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // CR/LF in tenant fields
    for (field, val) in [
        ("host", "smtp.example.com\r\n"),
        ("username", "u\r\nAUTH"),
        ("from", "a@b.example\r\nBcc: c@d.example"),
        ("password", "pw\r\nQUIT"),
    ] {
        let mut smtp = app.smtp_json();
        smtp[field] = json!(val);
        let r = app
            .post("/v1/tenants", ADMIN, json!({"name": "x", "smtp": smtp}))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
    }
    let r = app
        .post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "x\r\ny", "smtp": app.smtp_json()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // nothing was sent or stored, and no attempt was used
    assert_eq!(app.smtp.messages().len(), 1);
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    let v = app.code_status(&sk, &key).await;
    assert_eq!(v["attempts_used"], 0);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_verify_flood_is_shed_with_503_while_healthz_answers() {
    let app = spawn_app_with(|s| {
        s.hashing.memory_kib = 65536;
        s.hashing.iterations = 2;
        s.hashing.max_concurrent = 1;
        s.hashing.max_queue = 2;
    })
    .await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 20})).await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let bad = wrong(&code);
    let flood = futures_util::future::join_all((0..40).map(|_| app.verify(&sk, &key, &bad)));
    let health = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let start = std::time::Instant::now();
        let r = app.get("/healthz", "").await;
        (r.status(), start.elapsed())
    };
    let (results, (hs, _took)) = tokio::join!(flood, health);
    assert_eq!(hs, StatusCode::OK);
    let shed = results
        .iter()
        .filter(|(s, v)| *s == StatusCode::SERVICE_UNAVAILABLE && v["code"] == "overloaded")
        .count();
    let evaluated = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert!(shed > 0, "the queue bound must shed load: {results:?}");
    assert!(evaluated <= 20);
    // shed requests gave their attempts back
    let v = app.code_status(&sk, &key).await;
    assert_eq!(v["attempts_used"].as_u64().unwrap() as usize, evaluated);
}

#[tokio::test]
async fn concurrent_guesses_across_codes_cannot_overrun_the_failure_budget() {
    // Three codes of four guesses each: the budget of 5 is what stops the guesses.
    let app = spawn_app_with(|s| s.limits.recipient_max_failures = 5).await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 4})).await;
    let mut keys = Vec::new();
    for p in ["a", "b", "c"] {
        let (k, c) = app.mint_purpose(&sk, "ada@example.com", Some(p)).await;
        keys.push((k, wrong(&c)));
    }
    let futs = (0..30).map(|i| {
        let (k, bad) = &keys[i % 3];
        app.verify(&sk, k, bad)
    });
    let results = futures_util::future::join_all(futs).await;
    let evaluated = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!(evaluated, 5, "{results:?}");
    // The rest are refused by the budget (429), or by a key whose four guesses were taken
    // (410).
    assert!(results
        .iter()
        .filter(|(s, _)| *s != StatusCode::UNPROCESSABLE_ENTITY)
        .all(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS || *s == StatusCode::GONE));
}

#[tokio::test]
async fn plaintext_smtp_never_carries_the_password() {
    let app = spawn_app_with(|s| s.smtp.allow_plaintext = true).await;
    let (id, sk) = app.tenant().await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"tls": "none"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "smtp_auth");
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test]
async fn unknown_malformed_and_disabled_secret_keys_cost_the_same() {
    // Not a performance goal: a no-oracle check. All three run one HMAC and one indexed
    // lookup (the disabled key's tenant is filtered in the same query: `t.enabled = 1`); an
    // extra step on one path (a hash, a second query) would show as a gap of a millisecond
    // or more between medians, in every measurement. A loaded machine (other tests, other
    // processes) adds noise to whichever request it hits: each round starts with another
    // kind (so no kind always pays for the first request after a pause), and a measurement
    // that a burst of load skewed is taken again — three times at most, and it fails only
    // when the same kind was the slow (or the fast) one every time: noise picks another
    // kind each time, an oracle the same one.
    let app = spawn_app().await;
    let (id, disabled) = app.tenant().await;
    app.patch(
        &format!("/v1/tenants/{id}"),
        ADMIN,
        json!({"enabled": false}),
    )
    .await;
    let kinds = [
        disabled.as_str(),
        "sk_unknownunknownunknownunknown12",
        "not a key at all",
    ];
    for k in kinds {
        app.get("/v1/tenant", k).await;
    }
    let mut attempts = Vec::new();
    // Which kind was slowest and which fastest, in each measurement with a gap.
    let mut extremes = Vec::new();
    for _ in 0..3 {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for round in 0..60 {
            for j in 0..3 {
                let i = (round + j) % 3;
                let t = std::time::Instant::now();
                let r = app.get("/v1/tenant", kinds[i]).await;
                times[i].push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            }
        }
        let medians: Vec<f64> = times
            .iter_mut()
            .map(|v| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v[v.len() / 2]
            })
            .collect();
        let lo = medians.iter().cloned().fold(f64::MAX, f64::min);
        let hi = medians.iter().cloned().fold(0.0, f64::max);
        if hi - lo < f64::max(1.0, lo * 0.5) {
            return;
        }
        let at = |x: f64| medians.iter().position(|m| *m == x);
        extremes.push([at(hi), at(lo)]);
        attempts.push(medians);
    }
    // An oracle makes the same kind the slow one (or the fast one) every time; a burst of
    // load picks whichever request it meets, another each time.
    let same = |which: usize| extremes.iter().all(|e| e[which] == extremes[0][which]);
    assert!(
        !same(0) && !same(1),
        "medians (ms) of three measurements: {attempts:?}"
    );
}

/// A 429's `Retry-After`, in seconds.
fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
