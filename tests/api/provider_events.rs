//! Provider events (API.md §16.2) over HTTP: a signed hard bounce of each provider — the
//! code sent through that provider's fake API — suppresses the recipient, marks the code's
//! delivery `bounced`, counts in the statistics and raises `otp.bounced`; forgeries, another
//! tenant's secret and stale timestamps change nothing; duplicates change nothing; SES
//! through SNS with its certificate fetched only from an allowed host, the subscription
//! confirmed once.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::lifecycle::sql;
use otpmint::testkit::http::{HttpReceiver, Reply};
use otpmint::testkit::provider_events::{
    basic, mailgun_body, resend_headers, sns_message, SendgridKey, SNS_TEST_CERT, SNS_TOPIC,
};
use otpmint::testkit::providers::{FakeProvider, MAILGUN_DOMAIN};

const KINDS: [&str; 5] = ["postmark", "resend", "sendgrid", "mailgun", "ses"];
pub(crate) const RESEND_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const MAILGUN_SIGNING: &str = "mailgun-signing-key-1";

/// A fake SNS host: the certificate at /cert.pem, 404 at /missing.pem, 503 at /down.pem,
/// 200 for anything else (the subscription confirmation).
async fn sns_host() -> HttpReceiver {
    HttpReceiver::start_with(
        true,
        Arc::new(|r: &otpmint::testkit::http::Request| {
            if r.path.starts_with("/cert.pem") {
                Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "application/x-pem-file".into())],
                    body: SNS_TEST_CERT.as_bytes().to_vec(),
                }
            } else if r.path.starts_with("/missing.pem") {
                Reply::empty(404)
            } else if r.path.starts_with("/down.pem") {
                Reply::empty(503)
            } else {
                Reply::empty(200)
            }
        }),
    )
    .await
}

pub(crate) struct Setup {
    pub(crate) app: TestApp,
    pub(crate) fakes: Vec<FakeProvider>,
    pub(crate) sns: HttpReceiver,
    pub(crate) hooks: HttpReceiver,
    pub(crate) sendgrid: SendgridKey,
}

pub(crate) async fn setup() -> Setup {
    let mut fakes = Vec::new();
    for k in KINDS {
        fakes.push(FakeProvider::start(k).await);
    }
    let sns = sns_host().await;
    let hooks = HttpReceiver::start(true).await;
    // STS is asked for the SES account at the SES fake, which answers as STS.
    let urls: Vec<(String, String)> = fakes
        .iter()
        .map(|f| (f.kind.to_string(), f.base_url()))
        .chain([("sts".to_string(), fakes[4].base_url())])
        .collect();
    let cas: Vec<_> = fakes
        .iter()
        .map(|f| f.rx.ca_path.clone())
        .chain([sns.ca_path.clone(), hooks.ca_path.clone()])
        .collect();
    let app = spawn_app_with(move |s| {
        s.webhooks.allow_private_hosts = true;
        s.webhooks.extra_root_certificates = cas;
        s.delivery.http_timeout_seconds = 3;
        s.delivery.provider_base_urls = urls.into_iter().collect();
        s.delivery.sns_certificate_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    Setup {
        app,
        fakes,
        sns,
        hooks,
        sendgrid: SendgridKey::new(),
    }
}

impl Setup {
    pub(crate) fn now(&self) -> i64 {
        otpmint::clock::Clock::now(self.app.clock.as_ref()) / 1000
    }

    /// A tenant without a relay sending through `fake`, with the provider's event material
    /// and a webhook for bounces and complaints. Answers (id, secret key).
    pub(crate) async fn tenant(&self, fake: &FakeProvider) -> (String, String) {
        let (s, t) = body(
            self.app
                .post("/v1/tenants", ADMIN, json!({"name": fake.kind}))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let sk = t["secret_key"].as_str().unwrap().to_string();
        let mut settings = fake.settings("primary");
        match fake.kind {
            "postmark" => {
                settings["events_username"] = json!("hook");
                settings["events_password"] = json!("pm-hook-pass");
            }
            "resend" => settings["events_secret"] = json!(RESEND_SECRET),
            "sendgrid" => settings["events_public_key"] = json!(self.sendgrid.public_key()),
            "mailgun" => settings["events_secret"] = json!(MAILGUN_SIGNING),
            _ => {}
        }
        let (s, v) = body(
            self.app
                .put("/v1/tenant/providers/email", &sk, settings)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}: {v}", fake.kind);
        assert!(
            !v.to_string().contains("pm-hook-pass") && !v.to_string().contains(RESEND_SECRET),
            "{v}"
        );
        let r = self
            .app
            .put(
                "/v1/tenant/webhook",
                &sk,
                json!({"url": self.hooks.url("/hooks"), "events": ["otp.bounced", "otp.complained"]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        (t["id"].as_str().unwrap().to_string(), sk)
    }

    /// A provider's hard bounce (or complaint) of `to`, about message `msg`, signed as it
    /// signs: (headers, body).
    pub(crate) fn event(
        &self,
        kind: &str,
        to: &str,
        msg: &str,
        complaint: bool,
        n: u32,
    ) -> (Vec<(String, String)>, Vec<u8>) {
        let ts = self.now();
        match kind {
            "postmark" => {
                let b = if complaint {
                    json!({"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": n, "Email": to, "MessageID": msg})
                } else {
                    json!({"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "ID": n, "Email": to, "MessageID": msg})
                };
                (
                    vec![("authorization".into(), basic("hook", "pm-hook-pass"))],
                    b.to_string().into_bytes(),
                )
            }
            "resend" => {
                let b = json!({"type": if complaint {"email.complained"} else {"email.bounced"},
                    "created_at": "2026-11-24T12:00:00.000Z",
                    "data": {"email_id": msg, "to": [to], "bounce": {"type": "Permanent", "subType": "General"}}})
                .to_string()
                .into_bytes();
                (
                    resend_headers(RESEND_SECRET, &format!("msg_{n}"), ts, &b),
                    b,
                )
            }
            "sendgrid" => {
                let b = json!([{"email": to, "timestamp": ts, "event": if complaint {"spamreport"} else {"bounce"},
                    "type": "bounce", "sg_event_id": format!("sg-{n}"), "sg_message_id": format!("{msg}.filterdrecv-1.0")}])
                .to_string()
                .into_bytes();
                (self.sendgrid.headers(ts, &b), b)
            }
            "mailgun" => {
                let data = json!({"event": if complaint {"complained"} else {"failed"}, "severity": "permanent",
                    "id": format!("mg-{n}"), "recipient": to,
                    "message": {"headers": {"message-id": msg.trim_matches(|c| c == '<' || c == '>')}}});
                (
                    Vec::new(),
                    mailgun_body(MAILGUN_SIGNING, ts, &format!("tok-{n}"), data),
                )
            }
            _ => {
                let ses = if complaint {
                    json!({"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": to}]}, "mail": {"messageId": msg}})
                } else {
                    json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": to}]}, "mail": {"messageId": msg}})
                };
                (
                    vec![("x-amz-sns-message-type".into(), "Notification".into())],
                    sns_message(
                        2,
                        SNS_TOPIC,
                        "Notification",
                        &format!("sns-{n}"),
                        &ses.to_string(),
                        &self.sns.url("/cert.pem"),
                        "",
                    ),
                )
            }
        }
    }

    pub(crate) async fn post(
        &self,
        kind: &str,
        tenant: &str,
        (headers, b): (Vec<(String, String)>, Vec<u8>),
    ) -> (StatusCode, Value) {
        let mut req = self
            .app
            .client
            .post(format!("{}/v1/events/{kind}/{tenant}", self.app.addr))
            .header("content-type", "application/json")
            .body(b);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        body(req.send().await.unwrap()).await
    }
}

pub(crate) async fn suppressed(app: &TestApp, sk: &str) -> Vec<Value> {
    let (_, v) = body(app.get("/v1/tenant/suppressions", sk).await).await;
    v["suppressions"].as_array().unwrap().clone()
}

/// The tenant's `suppression.add` audit entries, newest first.
async fn suppressions_audited(app: &TestApp, sk: &str) -> Vec<Value> {
    let v: Value = app.get("/v1/tenant/audit", sk).await.json().await.unwrap();
    let events = v["events"].as_array().unwrap();
    let adds = events.iter().filter(|e| e["event"] == "suppression.add");
    adds.cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_hard_bounce_of_each_provider_suppresses_and_marks_the_code_bounced() {
    let s = setup().await;
    for (i, fake) in s.fakes.iter().enumerate() {
        let (id, sk) = s.tenant(fake).await;
        let to = format!("user{i}@example.com");
        let (st, v) = body(s.app.post("/v1/otp", &sk, json!({"email": to})).await).await;
        assert_eq!(st, StatusCode::CREATED, "{}: {v}", fake.kind);
        let key = v["shareable_key"].as_str().unwrap().to_string();
        let taken = fake.wait_taken(1).await;
        let msg = match fake.kind {
            "mailgun" => format!("<{}@{MAILGUN_DOMAIN}>", taken[0].id),
            _ => taken[0].id.clone(),
        };

        // A forgery first: signed with other material, or stale. Nothing changes.
        let (h, b) = s.event(fake.kind, &to, &msg, false, 1);
        let forged = match fake.kind {
            "postmark" => (
                vec![("authorization".into(), basic("hook", "guess"))],
                b.clone(),
            ),
            "resend" => (
                resend_headers(
                    "whsec_b3RoZXItc2VjcmV0LW9mLWFub3RoZXI=",
                    "msg_1",
                    s.now(),
                    &b,
                ),
                b.clone(),
            ),
            "sendgrid" => (SendgridKey::new().headers(s.now(), &b), b.clone()),
            "mailgun" => (
                Vec::new(),
                mailgun_body(
                    MAILGUN_SIGNING,
                    s.now() - 3600,
                    "tok-1",
                    serde_json::from_slice::<Value>(&b).unwrap()["event-data"].clone(),
                ),
            ),
            _ => (
                h.clone(),
                String::from_utf8(b.clone())
                    .unwrap()
                    .replace(&to, "eve@example.com")
                    .into_bytes(),
            ),
        };
        let (st, v) = s.post(fake.kind, &id, forged).await;
        assert_eq!(
            (st, &v["code"]),
            (StatusCode::UNAUTHORIZED, &json!("event_unverified")),
            "{}: {v}",
            fake.kind
        );
        assert!(suppressed(&s.app, &sk).await.is_empty(), "{}", fake.kind);

        // The signed event: applied once.
        let (st, v) = s.post(fake.kind, &id, (h.clone(), b.clone())).await;
        assert_eq!(st, StatusCode::OK, "{}: {v}", fake.kind);
        assert_eq!(v["applied"], 1, "{}: {v}", fake.kind);
        let list = suppressed(&s.app, &sk).await;
        assert_eq!(list.len(), 1, "{}: {list:?}", fake.kind);
        assert_eq!(list[0]["recipient"], to.as_str());
        assert_eq!(list[0]["reason"], "hard_bounce");
        assert_eq!(list[0]["source"], fake.kind);
        let (_, st_v) = body(s.app.get(&format!("/v1/otp/{key}"), &sk).await).await;
        assert_eq!(
            st_v["delivery"]["status"], "bounced",
            "{}: {st_v}",
            fake.kind
        );
        // A duplicate changes nothing (SNS, Postmark and Mailgun bodies are replayed as
        // sent; the others are signed again with the same event id).
        let again = if matches!(fake.kind, "resend" | "sendgrid") {
            s.event(fake.kind, &to, &msg, false, 1)
        } else {
            (h, b)
        };
        let (st, v) = s.post(fake.kind, &id, again).await;
        assert_eq!(
            (st, &v["applied"]),
            (StatusCode::OK, &json!(0)),
            "{}: {v}",
            fake.kind
        );
        // The suppression it added is in the audit trail once, masked, as one added over
        // the API is.
        let adds = suppressions_audited(&s.app, &sk).await;
        assert_eq!(adds.len(), 1, "{}: {adds:?}", fake.kind);
        assert_eq!(adds[0]["outcome"], "hard_bounce", "{}", fake.kind);
        let shown = adds[0]["recipient"].as_str().unwrap();
        assert!(shown.contains("***") && !shown.contains(&to), "{shown}");
        // The next mint to the address is refused; the statistics count one bounce.
        let (st, v) = body(s.app.post("/v1/otp", &sk, json!({"email": to})).await).await;
        assert_eq!(
            (st, &v["code"]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!("recipient_suppressed")
            ),
            "{}: {v}",
            fake.kind
        );
        let (_, stats) = body(s.app.get("/v1/tenant/stats", &sk).await).await;
        assert_eq!(stats["rows"][0]["bounced"], 1, "{}: {stats}", fake.kind);
    }
    // One otp.bounced per tenant, naming the recipient.
    let events = s.hooks.wait_for(5).await;
    let mut named: Vec<String> = events
        .iter()
        .map(|e| {
            let v = e.json();
            assert_eq!(v["type"], "otp.bounced", "{v}");
            v["data"]["email"].as_str().unwrap().to_string()
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        (0..5)
            .map(|i| format!("user{i}@example.com"))
            .collect::<Vec<_>>()
    );
    // The SNS certificate was fetched once, and cached.
    let certs = s
        .sns
        .requests()
        .iter()
        .filter(|r| r.path == "/cert.pem")
        .count();
    assert_eq!(certs, 1);
}

/// A message's events, each with an id of its own, count one `bounced` and one `complained`
/// in the statistics whatever their order: a bounce, a second bounce, a complaint; or a
/// complaint, a bounce, a second complaint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_later_events_count_no_second_bounce() {
    let s = setup().await;
    let fake = &s.fakes[0];
    let (id, sk) = s.tenant(fake).await;
    let orders = [
        ("twice@example.com", [(1, false), (2, false), (3, true)]),
        ("again@example.com", [(4, true), (5, false), (6, true)]),
    ];
    for (i, (to, events)) in orders.into_iter().enumerate() {
        let (st, v) = body(s.app.post("/v1/otp", &sk, json!({"email": to})).await).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let msg = fake.wait_taken(i + 1).await[i].id.clone();
        for (n, complaint) in events {
            let (st, v) = s
                .post(fake.kind, &id, s.event(fake.kind, to, &msg, complaint, n))
                .await;
            assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{n}: {v}");
        }
        let (_, stats) = body(s.app.get("/v1/tenant/stats", &sk).await).await;
        let row = &stats["rows"][0];
        let each = json!(i + 1);
        assert_eq!(
            (&row["bounced"], &row["complained"]),
            (&each, &each),
            "{to}: {stats}"
        );
    }
    assert_eq!(suppressed(&s.app, &sk).await.len(), 2);
}

/// A code an earlier release marked bounced (it counted its `bounced` then, and kept no
/// record of having counted it) is recorded at the upgrade (V24) as having counted it: a
/// later bounce of its message counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_bounced_before_the_upgrade_counts_no_second_bounce_after_it() {
    let mut s = setup().await;
    let fake = &s.fakes[0];
    let (id, sk) = s.tenant(fake).await;
    let to = "before@example.com";
    let (st, v) = body(s.app.post("/v1/otp", &sk, json!({"email": to})).await).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let msg = fake.wait_taken(1).await[0].id.clone();
    let (st, _) = s
        .post(fake.kind, &id, s.event(fake.kind, to, &msg, false, 1))
        .await;
    assert_eq!(st, StatusCode::OK);
    // The rows as the release before wrote them, and its schema's record.
    let url = s.app.settings.database.url.clone();
    assert_eq!(
        sql(
            &url,
            "DELETE FROM provider_events WHERE provider = 'counted-bounced'"
        ),
        1
    );
    assert!(crate::lifecycle::before_migration(&url, 24) >= 1);
    s.app = s.app.restart().await;
    let fake = &s.fakes[0];
    let (st, v) = s
        .post(fake.kind, &id, s.event(fake.kind, to, &msg, false, 2))
        .await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    let (_, stats) = body(s.app.get("/v1/tenant/stats", &sk).await).await;
    assert_eq!(stats["rows"][0]["bounced"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_suppress_and_soft_bounces_other_tenants_and_other_hosts_do_not() {
    let s = setup().await;
    let resend = &s.fakes[1];
    let ses = &s.fakes[4];
    let (a, a_sk) = s.tenant(resend).await;
    let (b, b_sk) = s.tenant(resend).await;
    // Tenant b stores another signing secret: a's events do not verify there.
    let mut other = resend.settings("primary");
    other["events_secret"] = json!("whsec_dGVuYW50LWItc2lnbmluZy1zZWNyZXQ=");
    let r = s.app.put("/v1/tenant/providers/email", &b_sk, other).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ev = s.event("resend", "cy@example.com", "em-x", true, 7);
    let (st, _) = s.post("resend", &b, ev.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(suppressed(&s.app, &b_sk).await.is_empty());
    // Under another provider's path, or an unknown tenant: refused.
    let (st, _) = s.post("postmark", &a, ev.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s
        .post("resend", "tnt_doesnotexist000000000", ev.clone())
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    for unknown in ["sparkpost", "twilio"] {
        let (st, v) = s.post(unknown, &a, ev.clone()).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["code"], "provider_not_found", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("names none"), "{v}");
    }
    // A complaint (no code matched) suppresses as a complaint and raises otp.complained.
    let (st, v) = s.post("resend", &a, ev).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    let list = suppressed(&s.app, &a_sk).await;
    assert_eq!(list[0]["reason"], "complaint", "{list:?}");
    let hook = s.hooks.wait_for(1).await[0].json();
    assert_eq!(hook["type"], "otp.complained", "{hook}");
    assert_eq!(hook["data"]["email"], "cy@example.com", "{hook}");
    // It names a recipient, not a code: no empty purpose beside it.
    assert!(hook["data"].get("purpose").is_none(), "{hook}");
    assert_eq!(hook["data"]["reason"], "complaint", "{hook}");
    // Another event for a recipient already on the list is applied (counted, raised) but
    // adds no entry: the audit says `exists`, as for one added over the API.
    let again = s.event("resend", "cy@example.com", "em-x2", true, 8);
    let (st, v) = s.post("resend", &a, again).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(1)), "{v}");
    assert_eq!(suppressed(&s.app, &a_sk).await.len(), 1);
    let adds = suppressions_audited(&s.app, &a_sk).await;
    let outcomes: Vec<&str> = adds
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["exists", "complaint"], "{adds:?}");
    s.hooks.wait_for(2).await;
    // A soft bounce is accepted and changes nothing.
    let soft = json!({"type": "email.bounced", "data": {"email_id": "em-y", "to": ["di@example.com"], "bounce": {"type": "Transient"}}})
        .to_string()
        .into_bytes();
    let h = resend_headers(RESEND_SECRET, "msg_soft", s.now(), &soft);
    let (st, v) = s.post("resend", &a, (h, soft)).await;
    assert_eq!((st, &v["applied"]), (StatusCode::OK, &json!(0)), "{v}");
    assert_eq!(suppressed(&s.app, &a_sk).await.len(), 1);
    // Malformed JSON that verifies is a 400; an oversized body a 413.
    let junk = b"not json".to_vec();
    let h = resend_headers(RESEND_SECRET, "msg_junk", s.now(), &junk);
    let (st, _) = s.post("resend", &a, (h, junk)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let big = vec![b' '; 1024 * 1024 + 1];
    let (st, _) = s.post("resend", &a, (Vec::new(), big)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);

    // SES: a certificate URL on any other host is refused without a fetch; a subscription
    // confirmation is followed once.
    let (c, c_sk) = s.tenant(ses).await;
    let other_host = sns_message(
        2,
        SNS_TOPIC,
        "Notification",
        "sns-evil",
        "{}",
        "https://localhost:1/cert.pem",
        "",
    );
    let (st, _) = s.post("ses", &c, (Vec::new(), other_host)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A tenant that names its topic takes no other (every topic is signed with the same
    // certificates); checked before any certificate is fetched.
    let mut named = ses.settings("primary");
    named["events_topic_arn"] = json!("arn:aws:sns:eu-west-1:123456789012:ses-events");
    let r = s.app.put("/v1/tenant/providers/email", &c_sk, named).await;
    assert_eq!(r.status(), StatusCode::OK);
    let fetched = s.sns.requests().len();
    let evil = sns_message(
        2,
        "arn:aws:sns:eu-west-1:999999999999:attacker",
        "Notification",
        "sns-evil-2",
        &json!({"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "victim@example.com"}]}, "mail": {"messageId": "x"}}).to_string(),
        &s.sns.url("/cert.pem"),
        "",
    );
    let (st, _) = s.post("ses", &c, (Vec::new(), evil)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(s.sns.requests().len(), fetched);
    // A certificate the host does not have is no message SNS signed (401); a host that
    // fails answers 503, so SNS sends the message again.
    for (url, want) in [
        (s.sns.url("/missing.pem"), StatusCode::UNAUTHORIZED),
        (s.sns.url("/down.pem"), StatusCode::SERVICE_UNAVAILABLE),
        // An allowed host that does not answer.
        (
            "https://127.0.0.1:1/cert.pem".to_string(),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let msg = sns_message(2, SNS_TOPIC, "Notification", "sns-c", "{}", &url, "");
        let (st, v) = s.post("ses", &c, (Vec::new(), msg)).await;
        assert_eq!(st, want, "{url}: {v}");
    }
    let sub = sns_message(
        2,
        SNS_TOPIC,
        "SubscriptionConfirmation",
        "sns-sub-1",
        "You have chosen to subscribe to the topic",
        &s.sns.url("/cert.pem"),
        &s.sns.url("/confirm?Action=ConfirmSubscription&Token=t"),
    );
    for _ in 0..2 {
        let (st, v) = s.post("ses", &c, (Vec::new(), sub.clone())).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let confirms = s
        .sns
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/confirm"))
        .count();
    assert_eq!(confirms, 1);
    assert!(suppressed(&s.app, &c_sk).await.is_empty());
}

/// Without `events_topic_arn`, an SES tenant's topic must belong to the AWS account of its
/// SES credentials, which STS names once (every SNS topic is signed with the same
/// certificates): a stranger's topic, subscribed or notifying first, is refused and pins
/// nothing; credentials STS refuses verify nothing; STS not answering is a 503 SNS retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ses_topic_of_another_aws_account_is_refused_and_pins_nothing() {
    let s = setup().await;
    let ses = &s.fakes[4];
    let (c, c_sk) = s.tenant(ses).await;
    let strangers = "arn:aws:sns:eu-west-1:999999999999:ses-events";
    let complaint = |to: &str| {
        json!({"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": to}]}, "mail": {"messageId": "x"}})
        .to_string()
    };
    let confirm_url = s
        .sns
        .url("/confirm?Action=ConfirmSubscription&Token=stranger");
    let sub = sns_message(
        2,
        strangers,
        "SubscriptionConfirmation",
        "sns-stranger-sub",
        "You have chosen to subscribe to the topic",
        &s.sns.url("/cert.pem"),
        &confirm_url,
    );
    let (st, v) = s.post("ses", &c, (Vec::new(), sub)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(ses.caller_identities(), 1);
    let evil = sns_message(
        2,
        strangers,
        "Notification",
        "sns-stranger-1",
        &complaint("victim@example.com"),
        &s.sns.url("/cert.pem"),
        "",
    );
    let (st, _) = s.post("ses", &c, (Vec::new(), evil)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let confirmed = |path: &str| s.sns.requests().iter().any(|r| r.path.starts_with(path));
    assert!(
        !confirmed("/confirm"),
        "a stranger's subscription was confirmed"
    );
    assert!(suppressed(&s.app, &c_sk).await.is_empty());
    // The tenant's own topic still counts (nothing was pinned); the account was kept.
    let own = s.event("ses", "own@example.com", "ses-own", true, 31);
    let (st, v) = s.post("ses", &c, own).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(suppressed(&s.app, &c_sk).await.len(), 1);
    assert_eq!(ses.caller_identities(), 1, "STS is asked once a key");
    assert!(ses.problems().is_empty(), "{:?}", ses.problems());

    // STS not answering: 503 (SNS sends again); asked again only after 30 s, so replayed
    // messages cannot make a call each.
    let sts_calls = || ses.rx.requests().iter().filter(|r| r.path == "/").count();
    let (d, d_sk) = s.tenant(ses).await;
    ses.fail_next(&[503]);
    let ev = s.event("ses", "later@example.com", "ses-later", false, 32);
    for _ in 0..2 {
        let (st, _) = s.post("ses", &d, ev.clone()).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        sts_calls(),
        2,
        "the first tenant's call and one for this one"
    );
    assert!(suppressed(&s.app, &d_sk).await.is_empty());
    s.app.clock.advance_secs(31);
    let ev = s.event("ses", "later@example.com", "ses-later", false, 32);
    let (st, v) = s.post("ses", &d, ev).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(suppressed(&s.app, &d_sk).await.len(), 1);
    assert_eq!(ses.caller_identities(), 2);

    // A key STS does not know verifies nothing, and is not asked about again at once.
    let mut wrong = ses.settings("primary");
    wrong["access_key_id"] = json!("AKIDUNKNOWN000000000");
    let r = s.app.put("/v1/tenant/providers/email", &d_sk, wrong).await;
    assert_eq!(r.status(), StatusCode::OK);
    for n in [33, 34] {
        let ev = s.event("ses", "third@example.com", "ses-third", true, n);
        let (st, _) = s.post("ses", &d, ev).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sts_calls(), 4);
    assert_eq!(suppressed(&s.app, &d_sk).await.len(), 1);
}

/// A burst of SNS messages that arrive before STS's first answer makes one STS call (the
/// rest read the account it kept); a tenant that fixes its SES secret under the same key id
/// is asked about again at its next message, not after the 30 s a refusal is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_before_sts_answers_makes_one_call_and_a_fixed_secret_is_asked_at_once() {
    let s = setup().await;
    let ses = &s.fakes[4];
    let sts_calls = || ses.rx.requests().iter().filter(|r| r.path == "/").count();
    let (c, c_sk) = s.tenant(ses).await;
    ses.rx.set_delay(std::time::Duration::from_millis(300));
    let burst = (0..6u32).map(|n| {
        let (to, msg) = (format!("burst{n}@example.com"), format!("ses-burst-{n}"));
        let ev = s.event("ses", &to, &msg, true, 40 + n);
        s.post("ses", &c, ev)
    });
    for (st, v) in futures_util::future::join_all(burst).await {
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    ses.rx.set_delay(std::time::Duration::ZERO);
    assert_eq!(sts_calls(), 1, "one STS call for the burst");
    assert_eq!(suppressed(&s.app, &c_sk).await.len(), 6);

    // The same key id with a wrong secret: STS refuses it (401), and is not asked again for
    // the next message; the secret fixed, the next message is asked about and verifies.
    let (d, d_sk) = s.tenant(ses).await;
    let mut wrong = ses.settings("primary");
    wrong["secret_access_key"] = json!("not-the-secret-of-this-key-0000000000000");
    let r = s.app.put("/v1/tenant/providers/email", &d_sk, wrong).await;
    assert_eq!(r.status(), StatusCode::OK);
    for n in [50, 51] {
        let ev = s.event("ses", "fixed@example.com", "ses-fixed", true, n);
        let (st, _) = s.post("ses", &d, ev).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sts_calls(), 2, "a refused key is not asked again at once");
    let r = s
        .app
        .put("/v1/tenant/providers/email", &d_sk, ses.settings("primary"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let ev = s.event("ses", "fixed@example.com", "ses-fixed", true, 52);
    let (st, v) = s.post("ses", &d, ev).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(sts_calls(), 3);
    assert_eq!(suppressed(&s.app, &d_sk).await.len(), 1);
    assert!(ses.problems().is_empty(), "{:?}", ses.problems());
}
