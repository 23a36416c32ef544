//! Provider events (API.md §16.2) as they arrive: a new events secret, a webhook change or a
//! disabled tenant holds from the next event, a burst applies each once, a Mailgun signature
//! carries one request, an event that could not be applied is applied on its retry, and ids
//! holding a NUL.

use crate::helpers::*;
use crate::lifecycle::sql;
use crate::provider_events::*;
use otpmint::testkit::provider_events::{mailgun_body, resend_headers};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A Resend event signed with `secret`: `kind` its type (`email.bounced`, …), `bounce` its
/// bounce type if any, id `msg_<n>`.
fn resend_event(
    s: &Setup,
    secret: &str,
    n: &str,
    kind: &str,
    to: &str,
    bounce: Option<&str>,
) -> (Vec<(String, String)>, Vec<u8>) {
    let mut data = json!({"email_id": format!("em-{n}"), "to": [to]});
    if let Some(b) = bounce {
        data["bounce"] = json!({"type": b});
    }
    let b = json!({"type": kind, "created_at": "2026-11-24T12:00:00.000Z", "data": data})
        .to_string()
        .into_bytes();
    (resend_headers(secret, &format!("msg_{n}"), s.now(), &b), b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_events_secret_a_webhook_change_or_a_disabled_tenant_holds_from_the_next_event() {
    // Events of a tenant whose settings were read for an earlier event are verified with
    // those, and applied only while they still hold: each change here comes between two
    // events and must hold for the second.
    const NEW_SECRET: &str = "whsec_bmV3LWV2ZW50cy1zaWduaW5nLXNlY3JldC0wMDAwMDE=";
    let s = setup().await;
    let fake = s.fakes.iter().find(|f| f.kind == "resend").unwrap();
    let (id, sk) = s.tenant(fake).await;
    let subscribe = |events: Value| {
        s.app.put(
            "/v1/tenant/webhook",
            &sk,
            json!({"url": s.hooks.url("/hooks"), "events": events}),
        )
    };
    assert_eq!(
        subscribe(json!(["otp.complained"])).await.status(),
        StatusCode::OK
    );
    let bounce = |secret: &str, n: u32, to: &str| {
        resend_event(
            &s,
            secret,
            &n.to_string(),
            "email.bounced",
            to,
            Some("Permanent"),
        )
    };
    let (st, v) = s
        .post("resend", &id, bounce(RESEND_SECRET, 1, "one@example.com"))
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");

    // Subscribed to bounces now: the next bounce raises otp.bounced.
    assert_eq!(
        subscribe(json!(["otp.bounced"])).await.status(),
        StatusCode::OK
    );
    let (st, v) = s
        .post("resend", &id, bounce(RESEND_SECRET, 2, "two@example.com"))
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    let hooks = s.hooks.wait_for(1).await;
    let first = hooks[0].json();
    assert_eq!(first["type"], "otp.bounced", "{first}");
    assert_eq!(first["data"]["email"], "two@example.com", "{first}");

    // A new events secret: an event signed with the old one is refused and changes nothing
    // (the settings kept from the last event still hold the old one).
    let mut settings = fake.settings("primary");
    settings["events_secret"] = json!(NEW_SECRET);
    let (st, v) = body(s.app.put("/v1/tenant/providers/email", &sk, settings).await).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Not even an event that would change nothing (a soft bounce).
    let soft = resend_event(
        &s,
        RESEND_SECRET,
        "s",
        "email.bounced",
        "soft@example.com",
        Some("Transient"),
    );
    let (st, v) = s.post("resend", &id, soft).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = s
        .post("resend", &id, bounce(RESEND_SECRET, 3, "three@example.com"))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "event_unverified");
    let listed = |list: Vec<Value>| {
        list.iter()
            .map(|e| e["recipient"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut now_suppressed = listed(suppressed(&s.app, &sk).await);
    now_suppressed.sort();
    assert_eq!(now_suppressed, ["one@example.com", "two@example.com"]);
    let (st, v) = s
        .post("resend", &id, bounce(NEW_SECRET, 4, "four@example.com"))
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    // And the same again: the settings read for it are kept, the duplicate changes nothing.
    let (st, v) = s
        .post("resend", &id, bounce(NEW_SECRET, 4, "four@example.com"))
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(0)), "{v}");

    // A disabled tenant takes no events.
    let r = s
        .app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let delivered = resend_event(
        &s,
        NEW_SECRET,
        "d",
        "email.delivered",
        "five@example.com",
        None,
    );
    let (st, v) = s.post("resend", &id, delivered).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = s
        .post("resend", &id, bounce(NEW_SECRET, 5, "five@example.com"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let r = s
        .app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut now_suppressed = listed(suppressed(&s.app, &sk).await);
    now_suppressed.sort();
    assert_eq!(
        now_suppressed,
        ["four@example.com", "one@example.com", "two@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_tenants_events_applies_each_once_and_refuses_none() {
    // Concurrent events of one tenant, verified with its kept settings: each applies once
    // (a duplicate changes nothing), none is refused or lost to a lock (on PostgreSQL each
    // updates the tenant's suppression count in its transaction).
    let s = setup().await;
    let fake = s.fakes.iter().find(|f| f.kind == "resend").unwrap();
    let (id, sk) = s.tenant(fake).await;
    let bounce = |n: u32| {
        let to = format!("burst{n}@example.com");
        resend_event(
            &s,
            RESEND_SECRET,
            &n.to_string(),
            "email.bounced",
            &to,
            Some("Permanent"),
        )
    };
    let (st, v) = s.post("resend", &id, bounce(0)).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    let answers = futures_util::future::join_all(
        (1..=24u32)
            .flat_map(|n| [n, n])
            .map(|n| s.post("resend", &id, bounce(n))),
    )
    .await;
    let mut applied = 0;
    for (st, v) in answers {
        assert_eq!(st, StatusCode::OK, "{v}");
        applied += v["applied"].as_u64().unwrap();
    }
    assert_eq!(applied, 24, "each event once");
    assert_eq!(suppressed(&s.app, &sk).await.len(), 25);
}

/// Mailgun signs only a timestamp and a token, not the event: a token carries one request,
/// whatever that request did — nothing, a soft bounce, an event seen before, or a bounce
/// applied — so a captured signature never carries another event.
#[tokio::test]
async fn a_mailgun_signature_carries_one_request_whatever_event_it_is_put_on() {
    let s = setup().await;
    let fake = s.fakes.iter().find(|f| f.kind == "mailgun").unwrap();
    let (id, sk) = s.tenant(fake).await;
    let ts = s.now();
    let signed = |token: &str, data: Value| {
        (
            Vec::<(String, String)>::new(),
            mailgun_body(MAILGUN_SIGNING, ts, token, data),
        )
    };
    let bounce = |n: u32, to: &str| json!({"event": "failed", "severity": "permanent", "id": format!("mg-{n}"), "recipient": to});
    let posted = |token: &'static str, data: Value| {
        let s = &s;
        let id = id.clone();
        async move {
            let (st, v) = s.post("mailgun", &id, signed(token, data)).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v["applied"].as_u64().unwrap()
        }
    };
    // A soft bounce changes nothing, and takes its token.
    let soft = json!({"event": "failed", "severity": "temporary", "id": "mg-soft", "recipient": "ann@example.com"});
    assert_eq!(posted("tok-soft", soft).await, 0);
    assert_eq!(posted("tok-soft", bounce(1, "ann@example.com")).await, 0);
    // A hard bounce applied takes its token with it.
    assert_eq!(posted("tok-bob", bounce(2, "bob@example.com")).await, 1);
    let complaint = json!({"event": "complained", "id": "mg-3", "recipient": "carl@example.com"});
    assert_eq!(posted("tok-bob", complaint).await, 0);
    // An event seen before, under a new token: nothing, and the token is taken.
    assert_eq!(posted("tok-again", bounce(2, "bob@example.com")).await, 0);
    assert_eq!(posted("tok-again", bounce(4, "dave@example.com")).await, 0);
    let list: Vec<String> = suppressed(&s.app, &sk)
        .await
        .iter()
        .map(|e| e["recipient"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(list, vec!["bob@example.com".to_string()]);
    // A new token with a new event is applied.
    assert_eq!(posted("tok-dave", bounce(4, "dave@example.com")).await, 1);
    // Another tenant of the same Mailgun account (the same signing key): a token taken here
    // carries nothing there either, whatever event it is put on.
    let (other, other_sk) = s.tenant(fake).await;
    let (st, v) = s
        .post(
            "mailgun",
            &other,
            signed("tok-dave", bounce(5, "eve@example.com")),
        )
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(0)), "{v}");
    assert!(suppressed(&s.app, &other_sk).await.is_empty());
    let (st, v) = s
        .post(
            "mailgun",
            &other,
            signed("tok-eve", bounce(5, "eve@example.com")),
        )
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
}

/// A Mailgun event whose write fails is answered with an error and leaves its token
/// unused: Mailgun's retry of the same request (same token, same signature) is applied.
#[tokio::test]
async fn a_mailgun_event_that_could_not_be_applied_is_applied_on_its_retry() {
    let s = setup().await;
    let fake = s.fakes.iter().find(|f| f.kind == "mailgun").unwrap();
    let (id, sk) = s.tenant(fake).await;
    let url = s.app.settings.database.url.clone();
    // Every new suppression is refused until the trigger goes.
    let drop_trigger = if on_postgres() {
        sql(
            &url,
            "CREATE FUNCTION refuse_suppression() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql",
        );
        sql(
            &url,
            "CREATE TRIGGER refuse BEFORE INSERT ON suppressions FOR EACH ROW \
             EXECUTE FUNCTION refuse_suppression()",
        );
        "DROP TRIGGER refuse ON suppressions"
    } else {
        sql(
            &url,
            "CREATE TRIGGER refuse BEFORE INSERT ON suppressions \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        );
        "DROP TRIGGER refuse"
    };
    let data = json!({"event": "failed", "severity": "permanent", "id": "mg-1", "recipient": "bob@example.com"});
    let request = (
        Vec::<(String, String)>::new(),
        mailgun_body(MAILGUN_SIGNING, s.now(), "tok-1", data),
    );
    let (st, v) = s.post("mailgun", &id, request.clone()).await;
    assert!(st.is_server_error(), "{st}: {v}");
    assert!(suppressed(&s.app, &sk).await.is_empty());
    sql(&url, drop_trigger);
    let (st, v) = s.post("mailgun", &id, request).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    assert_eq!(suppressed(&s.app, &sk).await.len(), 1);
}

/// Ids that hold a NUL — a message id of each provider's, Mailgun's token, SendGrid's event
/// id — are applied as any other, once, on both backends (found by the differential audit:
/// PostgreSQL's text holds no NUL, so the write failed and each such event answered 500,
/// which a provider retries for ever; SQLite applied it).
#[tokio::test]
async fn an_event_whose_ids_hold_a_nul_is_applied_once() {
    let s = setup().await;
    for (n, fake) in s.fakes.iter().enumerate() {
        if fake.kind == "ses" {
            continue;
        }
        let (id, sk) = s.tenant(fake).await;
        let to = format!("nul{n}@example.com");
        let ev = s.event(
            fake.kind,
            &to,
            "<em\u{0}x@example.com>",
            false,
            900 + n as u32,
        );
        let (st, v) = s.post(fake.kind, &id, ev.clone()).await;
        assert_eq!(
            (st, &v["applied"]),
            (StatusCode::OK, &json!(1)),
            "{}: {v}",
            fake.kind
        );
        let list = suppressed(&s.app, &sk).await;
        assert_eq!(list.len(), 1, "{}: {list:?}", fake.kind);
        assert_eq!(list[0]["recipient"], to.as_str());
        // The same event again changes nothing (Mailgun: its token is taken).
        let (st, v) = s.post(fake.kind, &id, ev).await;
        assert_eq!(
            (st, &v["applied"]),
            (StatusCode::OK, &json!(0)),
            "{}: {v}",
            fake.kind
        );
    }
    // A Mailgun token and a SendGrid event id with a NUL in them.
    let mailgun = s.fakes.iter().find(|f| f.kind == "mailgun").unwrap();
    let (id, sk) = s.tenant(mailgun).await;
    let data = json!({"event": "failed", "severity": "permanent", "id": "mg-nul", "recipient": "tok@example.com"});
    let signed = (
        Vec::<(String, String)>::new(),
        mailgun_body(MAILGUN_SIGNING, s.now(), "tok-\u{0}-1", data),
    );
    let (st, v) = s.post("mailgun", &id, signed.clone()).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    let (st, v) = s.post("mailgun", &id, signed).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(0)), "{v}");
    assert_eq!(suppressed(&s.app, &sk).await.len(), 1);
    let sendgrid = s.fakes.iter().find(|f| f.kind == "sendgrid").unwrap();
    let (id, sk) = s.tenant(sendgrid).await;
    let ts = s.now();
    let b =
        json!([{"email": "sg@example.com", "timestamp": ts, "event": "bounce", "type": "bounce",
        "sg_event_id": "sg-\u{0}-1", "sg_message_id": "m\u{0}.filterdrecv-1.0"}])
        .to_string()
        .into_bytes();
    let ev = (s.sendgrid.headers(ts, &b), b);
    let (st, v) = s.post("sendgrid", &id, ev.clone()).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    let (st, v) = s.post("sendgrid", &id, ev).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(0)), "{v}");
    assert_eq!(suppressed(&s.app, &sk).await.len(), 1);
}
