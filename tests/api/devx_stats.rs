//! Statistics read back over HTTP (API.md §13): the conversion rate is verified over minted
//! exactly, and counts by period and group say what happened to codes.

use crate::devx::*;
use crate::helpers::*;
use otpmint::testkit::smtp::Mode;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `conversion_rate` is verified / minted exactly (API.md §13.4): one of three is 1/3, not
/// a rounded 0.333.
#[tokio::test]
async fn the_conversion_rate_is_verified_over_minted_exactly() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    app.mint(&sk, "bob@example.com").await;
    app.mint(&sk, "cy@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let v = stats(&app, "/v1/tenant/stats", &sk).await;
    let row = &v["rows"][0];
    assert_eq!(
        (&row["minted"], &row["verified"]),
        (&json!(3), &json!(1)),
        "{v}"
    );
    assert_eq!(row["conversion_rate"].as_f64(), Some(1.0 / 3.0), "{v}");
}

#[tokio::test]
async fn statistics_count_what_happened_to_codes_by_period_and_group() {
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    put_list(
        &app,
        &sk,
        json!([{"match": "*@test.example", "expires_at": at(&app, DAY)}]),
    )
    .await;
    // Two verified (one after 20 s), one left to expire, one whose delivery fails, one test.
    let (k1, c1) = app.mint(&sk, "a@one.example").await;
    let (k2, c2) = app.mint_purpose(&sk, "b@two.example", Some("reset")).await;
    app.mint(&sk, "c@two.example").await;
    app.smtp.set_mode(Mode::RejectRecipients);
    assert_eq!(
        mint_json(&app, &sk, "d@one.example").await.0,
        StatusCode::BAD_GATEWAY
    );
    app.smtp.set_mode(Mode::Normal);
    mint_json(&app, &sk, "e@test.example").await;
    assert_eq!(app.verify(&sk, &k1, &c1).await.0, StatusCode::OK);
    app.clock.advance_secs(20);
    assert_eq!(app.verify(&sk, &k2, &c2).await.0, StatusCode::OK);
    // A code counts as expired a minute after its expiry (longer than instances' clocks
    // differ).
    app.clock.advance_secs(590);
    assert_eq!(
        app.services.admin.count_expired().await.unwrap(),
        0,
        "not yet"
    );
    app.clock.advance_secs(71);
    // The pass the server runs every 15 s: the third code expired unverified.
    assert!(app.services.admin.count_expired().await.unwrap() >= 1);
    assert_eq!(
        app.services.admin.count_expired().await.unwrap(),
        0,
        "counted once"
    );

    let v = stats(&app, "/v1/tenant/stats?granularity=hour", &sk).await;
    let rows = v["rows"].as_array().unwrap();
    let total = rows.iter().fold([0i64; 6], |mut acc, r| {
        for (a, b) in acc.iter_mut().zip(counts(r)) {
            *a += b;
        }
        acc
    });
    assert_eq!(total, [4, 3, 1, 2, 1, 1], "{v}");
    let row = rows.iter().find(|r| r["verified"] == 2).unwrap();
    let (verified, minted) = (row["verified"].as_f64(), row["minted"].as_f64());
    assert_eq!(
        row["conversion_rate"].as_f64(),
        Some(verified.unwrap() / minted.unwrap()),
        "exactly verified / minted, not rounded: {row}"
    );
    let p50 = row["seconds_to_verify"]["p50"].as_f64().unwrap();
    let p90 = row["seconds_to_verify"]["p90"].as_f64().unwrap();
    assert!(p50 <= p90 && p90 <= 30.0, "{row}");

    let v = stats(
        &app,
        "/v1/tenant/stats?granularity=day&group_by=domain",
        &sk,
    )
    .await;
    let by: Vec<(String, i64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["domain"].as_str().unwrap().to_string(),
                r["minted"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(by.contains(&("one.example".into(), 2)), "{by:?}");
    assert!(by.contains(&("two.example".into(), 2)), "{by:?}");
    let v = stats(&app, "/v1/tenant/stats?group_by=purpose", &sk).await;
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["group"] == "reset" && r["minted"] == 1),
        "{v}"
    );

    // The admin's views: the same tenant, and every tenant together.
    let (_, sk2) = app.tenant().await;
    app.mint(&sk2, "z@example.com").await;
    let one = stats(&app, &format!("/v1/tenants/{id}/stats"), ADMIN).await;
    let all = stats(&app, "/v1/stats", ADMIN).await;
    let minted = |v: &Value| -> i64 {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["minted"].as_i64().unwrap())
            .sum()
    };
    assert_eq!((minted(&one), minted(&all)), (4, 5));
    assert_eq!(
        app.get("/v1/stats", &sk).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Bad ranges and parameters change nothing and say why.
    // (API.md §13.4: a range over 400 days or 10,000 rows → 400, like a bad parameter.)
    for q in [
        "from=2020-01-01&to=2026-01-01",
        "granularity=week",
        "group_by=colour",
        "from=2026-02-01&to=2026-01-01",
        "from=yesterday",
    ] {
        let (s, v) = body(app.get(&format!("/v1/tenant/stats?{q}"), &sk).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
    }

    // The CLI reads the same numbers.
    let (ok, out, err) = app.cli(&["stats", "--tenant", &id, "--json"]);
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(minted(&cli), 4, "{out}");
}
