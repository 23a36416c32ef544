//! The suppression list (API.md §16.1): added by hand, listed newest first in pages, removed;
//! a mint or resend to a listed recipient answers 422 and sends nothing unless the tenant
//! only records (two instances: tests/api_postgres/scale.rs).

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

async fn suppress(app: &TestApp, sk: &str, recipient: &str) -> (StatusCode, Value) {
    body(
        app.post(
            "/v1/tenant/suppressions",
            sk,
            json!({"recipient": recipient, "reason": "manual"}),
        )
        .await,
    )
    .await
}

async fn try_mint(app: &TestApp, sk: &str, email: &str) -> (StatusCode, Value) {
    body(app.post("/v1/otp", sk, json!({"email": email})).await).await
}

#[tokio::test]
async fn a_suppressed_recipient_gets_nothing_until_it_is_removed() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (_, other_sk) = app.tenant().await;
    let (key, _) = app.mint(&sk, "ada@example.com").await;

    let (s, v) = body(app.get("/v1/tenant/suppressions", &sk).await).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"suppressions": [], "next_cursor": null})
        )
    );

    let (s, added) = suppress(&app, &sk, "Ada@Example.COM").await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    assert_eq!(
        added["recipient"], "ada@example.com",
        "kept in its canonical form"
    );
    assert_eq!(
        (added["reason"].as_str(), added["source"].as_str()),
        (Some("manual"), Some("api"))
    );
    assert!(added["created_at"].as_str().unwrap().ends_with('Z'));
    // Again: the entry as it was, 200.
    let (s, again) = suppress(&app, &sk, "ada@example.com").await;
    assert_eq!((s, &again), (StatusCode::OK, &added));

    // A mint (any spelling of the address) and a resend of an earlier key send nothing.
    let before = app.smtp.count_to("ada@example.com");
    for spelling in ["ada@example.com", "ADA@example.com"] {
        let (s, v) = try_mint(&app, &sk, spelling).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("recipient_suppressed")
            ),
            "{v}"
        );
    }
    let (s, v) = body(
        app.post(&format!("/v1/otp/{key}/resend"), &sk, json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("recipient_suppressed")
        ),
        "{v}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        app.smtp.count_to("ada@example.com"),
        before,
        "nothing reached the relay"
    );
    // Others still get their codes; another tenant's list is its own.
    app.mint(&sk, "bob@example.com").await;
    app.mint(&other_sk, "ada@example.com").await;
    let (_, v) = body(app.get("/v1/tenant/suppressions", &other_sk).await).await;
    assert_eq!(v["suppressions"], json!([]));
    assert_eq!(
        app.delete("/v1/tenant/suppressions/ada@example.com", &other_sk)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // The audit names the change with the recipient masked.
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    let text = v.to_string();
    assert!(text.contains("suppression.add"), "{text}");
    assert!(
        text.contains("a***@example.com") && !text.contains("ada@example.com"),
        "{text}"
    );

    // Removed (by the address as given): mints send again; removing twice is a 404.
    let r = app
        .delete("/v1/tenant/suppressions/ADA@example.com", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.mint(&sk, "ada@example.com").await;
    let (s, v) = body(
        app.delete("/v1/tenant/suppressions/ada@example.com", &sk)
            .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("suppression_not_found"))
    );
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    assert!(v.to_string().contains("suppression.remove"));
}

#[tokio::test]
async fn bad_entries_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    for (b, field) in [
        (json!({"recipient": "not an address"}), "recipient"),
        (json!({"recipient": "+12"}), "recipient"),
        (
            json!({"recipient": "ada@example.com", "reason": "hard_bounce"}),
            "reason",
        ),
        (
            json!({"recipient": "ada@example.com", "reason": "soft_bounce"}),
            "reason",
        ),
    ] {
        let (s, v) = body(app.post("/v1/tenant/suppressions", &sk, b.clone()).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b} {v}");
        assert_eq!(v["errors"][0]["field"], field, "{v}");
    }
    // Both fields wrong: both are named, in one answer.
    let both = json!({"recipient": "+12", "reason": "complaint"});
    let (s, v) = body(app.post("/v1/tenant/suppressions", &sk, both).await).await;
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        (s, fields),
        (StatusCode::BAD_REQUEST, vec!["recipient", "reason"]),
        "{v}"
    );
    // Removing names the recipient the same way.
    let (s, v) = body(app.delete("/v1/tenant/suppressions/+12", &sk).await).await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("recipient"))
    );
    for b in [json!({}), json!({"recipient": "a@b.example", "extra": 1})] {
        let (s, _) = body(app.post("/v1/tenant/suppressions", &sk, b.clone()).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }
    // Not a cursor; and cursors in no form this server writes (a NUL in one failed
    // PostgreSQL's query: a 500 there, a 200 on SQLite).
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    for cursor in [
        "bm9wZQ".to_string(),
        b64("1795924280054\n\0"),
        b64("1795924280054\nx@exa\0mple.com"),
        b64("-1\nx@example.com"),
        b64("+5\nx@example.com"),
    ] {
        let (s, v) = body(
            app.get(&format!("/v1/tenant/suppressions?cursor={cursor}"), &sk)
                .await,
        )
        .await;
        assert_eq!(
            (s, v["errors"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("cursor")),
            "{cursor}: {v}"
        );
    }
    assert_eq!(
        app.get("/v1/tenant/suppressions", "sk_wrong")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, v) = body(app.get("/v1/tenant/suppressions", &sk).await).await;
    assert_eq!(v["suppressions"], json!([]));
    // A phone number is listed as E.164 and removed by it.
    let (s, v) = suppress(&app, &sk, "+14155550123").await;
    assert_eq!(
        (s, v["recipient"].as_str()),
        (StatusCode::CREATED, Some("+14155550123"))
    );
    let r = app
        .delete("/v1/tenant/suppressions/+14155550123", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Suppression "on"/"off" only.
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"suppression": "maybe"}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("suppression"))
    );
}

#[tokio::test]
async fn with_suppression_off_the_list_only_records() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (_, v) = body(app.get("/v1/tenant", &sk).await).await;
    assert_eq!(v["suppression"], "on");
    suppress(&app, &sk, "ada@example.com").await;
    assert_eq!(
        try_mint(&app, &sk, "ada@example.com").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"suppression": "off"}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["suppression"].as_str()),
        (StatusCode::OK, Some("off")),
        "{v}"
    );
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (_, v) = body(app.get("/v1/tenant/suppressions", &sk).await).await;
    assert_eq!(
        v["suppressions"].as_array().unwrap().len(),
        1,
        "still listed"
    );
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"suppression": "on"}))
            .await,
    )
    .await;
    assert_eq!((s, v["suppression"].as_str()), (StatusCode::OK, Some("on")));
    assert_eq!(
        try_mint(&app, &sk, "ada@example.com").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    // 205 entries: some share a millisecond (the recipient breaks the tie), some do not.
    let mut added = Vec::new();
    for i in 0..205 {
        if i % 50 == 0 {
            app.clock.advance_secs(1);
        }
        let r = format!("user{i:03}@example.com");
        assert_eq!(suppress(&app, &sk, &r).await.0, StatusCode::CREATED);
        added.push(r);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenant/suppressions?cursor={c}"),
            None => "/v1/tenant/suppressions".to_string(),
        };
        let (s, v) = body(app.get(&path, &sk).await).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let page = v["suppressions"].as_array().unwrap();
        pages.push(page.len());
        seen.extend(page.iter().map(|e| {
            (
                e["created_at"].as_str().unwrap().to_string(),
                e["recipient"].as_str().unwrap().to_string(),
            )
        }));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, [100, 100, 5]);
    let distinct: HashSet<_> = seen.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(distinct.len(), 205, "no repeats");
    assert_eq!(
        distinct,
        added.iter().cloned().collect::<HashSet<_>>(),
        "no gaps"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");
    assert_eq!(seen[0].1, "user204@example.com");
}

/// One mailbox has one spelling: a quoted local part (`"bob"@`, `"b\ob"@`, all delivered
/// to bob) is refused, so it cannot get past the suppression list, the cooldown or the
/// per-recipient limits; nor can a domain with an invisible character in it.
#[tokio::test]
async fn another_spelling_of_a_suppressed_address_is_refused_and_sends_nothing() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    assert_eq!(
        suppress(&app, &sk, "bob@example.com").await.0,
        StatusCode::CREATED
    );
    for spelling in [
        "\"bob\"@example.com",
        "\"b\\ob\"@example.com",
        "bob@ex\u{200b}ample.com",
    ] {
        let (s, v) = try_mint(&app, &sk, spelling).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_email")),
            "{spelling}: {v}"
        );
    }
    let (s, v) = try_mint(&app, &sk, "bob@example.com").await;
    assert_eq!(v["code"], "recipient_suppressed", "{s} {v}");
    // Case-folded, not lower-cased (API.md §6.16): `STRASSE` and `straße` are one mailbox
    // (a mint to `straße@` went out before), and so are `σίσυφοσ` and `σίσυφος`.
    for (listed, minted) in [
        ("STRASSE@example.com", "straße@example.com"),
        ("σίσυφοσ@example.com", "ΣΊΣΥΦΟΣ@example.com"),
    ] {
        assert_eq!(suppress(&app, &sk, listed).await.0, StatusCode::CREATED);
        let (s, v) = try_mint(&app, &sk, minted).await;
        assert_eq!(v["code"], "recipient_suppressed", "{minted}: {s} {v}");
    }
    assert!(app.smtp.messages().is_empty());
}

/// An entry stored before keys were case-folded (`straße@`, lower-cased) beside one stored
/// since (`strasse@`, a provider's bounce lists it so): `DELETE` takes both off, so the
/// recipient gets codes again, rather than answering 204 while the older entry still
/// refuses them.
#[tokio::test]
async fn removing_a_recipient_removes_its_entry_under_an_older_key_too() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    assert_eq!(
        suppress(&app, &sk, "STRASSE@example.com").await.0,
        StatusCode::CREATED
    );
    let url = app.settings.database.url.clone();
    crate::lifecycle::sql(
        &url,
        "INSERT INTO suppressions (tenant_id, recipient, reason, source, created_at) \
         SELECT id, 'straße@example.com', 'hard_bounce', 'postmark', 1 FROM tenants",
    );
    crate::lifecycle::sql(&url, "UPDATE tenants SET suppressed = suppressed + 1");
    let (s, v) = try_mint(&app, &sk, "straße@example.com").await;
    assert_eq!(v["code"], "recipient_suppressed", "{s} {v}");
    let r = app
        .delete("/v1/tenant/suppressions/stra%C3%9Fe@example.com", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Not refused: it goes to the relay (which, offering no SMTPUTF8, is not offered it).
    let (s, v) = try_mint(&app, &sk, "straße@example.com").await;
    assert_eq!(
        (s, &v["detail_code"]),
        (StatusCode::BAD_GATEWAY, &json!("smtputf8_unsupported")),
        "{v}"
    );
    let (_, list) = body(app.get("/v1/tenant/suppressions", &sk).await).await;
    assert_eq!(list["suppressions"], json!([]), "{list}");
    let count = crate::lifecycle::sql(&url, "SELECT suppressed FROM tenants");
    assert_eq!(
        count, 0,
        "the tenant's count of entries follows both removals"
    );
    let r = app
        .delete("/v1/tenant/suppressions/stra%C3%9Fe@example.com", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
