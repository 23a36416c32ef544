//! Each provider's signature verified as it signs, and every forgery refused.

use super::*;
use crate::testkit::provider_events::{
    basic, mailgun_body, resend_headers, sns_message, SendgridKey, SNS_TEST_CERT, SNS_TOPIC,
};
use serde_json::json;

const NOW: i64 = 1_790_000_000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn headers(list: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    move |n: &str| {
        list.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    }
}

fn keys_secret(s: &str) -> EventKeys {
    EventKeys {
        secret: Some(s.into()),
        ..EventKeys::default()
    }
}

#[test]
fn a_resend_bounce_verifies_with_its_secret_and_forgeries_do_not() {
    let body = json!({"type": "email.bounced", "created_at": "2026-11-24T12:00:00Z",
        "data": {"email_id": "em_1", "to": ["ada@example.com"], "bounce": {"type": "Permanent"}}})
    .to_string();
    let h = headers(resend_headers(SECRET, "msg_1", NOW, body.as_bytes()));
    let resend = |secret: &str, body: &str, now: i64| {
        verify_and_parse(
            ProviderKind::Resend,
            &keys_secret(secret),
            &h,
            body.as_bytes(),
            now,
        )
    };
    assert_eq!(
        resend(SECRET, &body, NOW).unwrap(),
        vec![ProviderEvent {
            id: "msg_1".into(),
            recipient: "ada@example.com".into(),
            kind: EventKind::HardBounce,
            message_id: Some("em_1".into()),
        }]
    );
    // Only a bounce called permanent is hard: `Transient`, `Undetermined`, a type Resend may
    // add later, or none, are not.
    for bounce in [
        json!({"type": "Transient"}),
        json!({"type": "Undetermined"}),
        json!({"type": "Later"}),
        json!({}),
    ] {
        let body = json!({"type": "email.bounced", "data": {"email_id": "em_4", "to": ["ada@example.com"], "bounce": bounce}}).to_string();
        let h4 = headers(resend_headers(SECRET, "msg_4", NOW, body.as_bytes()));
        let e = verify_and_parse(
            ProviderKind::Resend,
            &keys_secret(SECRET),
            &h4,
            body.as_bytes(),
            NOW,
        );
        assert_eq!(e.unwrap()[0].kind, EventKind::SoftBounce, "{bounce}");
    }
    // A message to several recipients: which of them bounced is not said, so none is.
    let several = json!({"type": "email.bounced",
        "data": {"email_id": "em_3", "to": ["ada@example.com", "bob@example.com"], "bounce": {"type": "Permanent"}}})
    .to_string();
    let h3 = headers(resend_headers(SECRET, "msg_3", NOW, several.as_bytes()));
    assert_eq!(
        verify_and_parse(
            ProviderKind::Resend,
            &keys_secret(SECRET),
            &h3,
            several.as_bytes(),
            NOW
        ),
        Ok(Vec::new())
    );
    // Another secret, a changed body, an old timestamp: refused.
    let other = "whsec_b3RoZXItc2VjcmV0LW9mLWFub3RoZXItdGVuYW50";
    assert_eq!(resend(other, &body, NOW), Err(Refused::Unverified));
    let changed = body.replace("ada@", "eve@");
    assert_eq!(resend(SECRET, &changed, NOW), Err(Refused::Unverified));
    assert_eq!(resend(SECRET, &body, NOW + 301), Err(Refused::Unverified));
    // webhook-* headers are taken too; a complaint.
    let body = json!({"type": "email.complained", "data": {"email_id": "em_2", "to": ["bob@example.com"]}}).to_string();
    let list: Vec<(String, String)> = resend_headers(SECRET, "msg_2", NOW, body.as_bytes())
        .into_iter()
        .map(|(k, v)| (k.replace("svix-", "webhook-"), v))
        .collect();
    let e = verify_and_parse(
        ProviderKind::Resend,
        &keys_secret(SECRET),
        &headers(list),
        body.as_bytes(),
        NOW,
    )
    .unwrap();
    assert_eq!(e[0].kind, EventKind::Complaint);
}

#[test]
fn a_sendgrid_batch_verifies_with_its_public_key_and_forgeries_do_not() {
    let key = SendgridKey::new();
    let keys = EventKeys {
        public_key: Some(key.public_key()),
        ..EventKeys::default()
    };
    let body = json!([
        {"email": "ada@example.com", "event": "bounce", "type": "bounce", "sg_event_id": "e1", "sg_message_id": "abc.filter1.x"},
        {"email": "bob@example.com", "event": "bounce", "type": "blocked", "sg_event_id": "e2"},
        {"email": "cy@example.com", "event": "spamreport", "sg_event_id": "e3"},
        {"email": "di@example.com", "event": "delivered", "sg_event_id": "e4"},
        // An account event: no recipient, passed over (the batch is not refused for it).
        {"event": "account_status_change", "type": "compliance_suspend", "sg_event_id": "e5", "timestamp": NOW},
        // The older form (no type) is a bounce; a type SendGrid may add later is not.
        {"email": "ed@example.com", "event": "bounce", "sg_event_id": "e7"},
        {"email": "fay@example.com", "event": "bounce", "type": "expired", "sg_event_id": "e8"}
    ])
    .to_string();
    let h = headers(key.headers(NOW, body.as_bytes()));
    let sendgrid = |keys: &EventKeys, body: &str, now: i64| {
        verify_and_parse(ProviderKind::Sendgrid, keys, &h, body.as_bytes(), now)
    };
    let e = sendgrid(&keys, &body, NOW).unwrap();
    let kinds: Vec<EventKind> = e.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::HardBounce,
            EventKind::SoftBounce,
            EventKind::Complaint,
            EventKind::Other,
            EventKind::HardBounce,
            EventKind::SoftBounce
        ]
    );
    assert_eq!(e[0].message_id.as_deref(), Some("abc"));
    // A bounce without its recipient is still malformed.
    let bad = json!([{"event": "bounce", "type": "bounce", "sg_event_id": "e6"}]).to_string();
    let h = headers(key.headers(NOW, bad.as_bytes()));
    assert!(matches!(
        verify_and_parse(ProviderKind::Sendgrid, &keys, &h, bad.as_bytes(), NOW),
        Err(Refused::Malformed(_))
    ));
    let other = EventKeys {
        public_key: Some(SendgridKey::new().public_key()),
        ..EventKeys::default()
    };
    assert_eq!(sendgrid(&other, &body, NOW), Err(Refused::Unverified));
    let changed = body.replace("e1", "e9");
    assert_eq!(sendgrid(&keys, &changed, NOW), Err(Refused::Unverified));
    assert_eq!(sendgrid(&keys, &body, NOW - 400), Err(Refused::Unverified));
}

/// SendGrid posts batches of several thousand events (up to 768 KB): a batch that size is
/// taken whole; one past [`EVENTS_MAX`] is refused.
#[test]
fn a_large_sendgrid_batch_is_taken_whole() {
    let key = SendgridKey::new();
    let keys = EventKeys {
        public_key: Some(key.public_key()),
        ..EventKeys::default()
    };
    for (n, ok) in [(5000, true), (EVENTS_MAX + 1, false)] {
        let list: Vec<_> = (0..n)
            .map(|i| json!({"email": format!("u{i}@example.com"), "event": "delivered", "sg_event_id": format!("e{i}")}))
            .collect();
        let body = serde_json::Value::Array(list).to_string();
        let h = headers(key.headers(NOW, body.as_bytes()));
        let got = verify_and_parse(ProviderKind::Sendgrid, &keys, &h, body.as_bytes(), NOW);
        assert_eq!(got.map(|e| e.len()).ok(), ok.then_some(n), "{n} events");
    }
}

/// A Mailgun body checked with signing key `key` (Mailgun signs in the body, not headers).
fn mailgun(key: &str, body: &[u8]) -> Result<Vec<ProviderEvent>, Refused> {
    verify_and_parse(
        ProviderKind::Mailgun,
        &keys_secret(key),
        &|_: &str| None,
        body,
        NOW,
    )
}

#[test]
fn a_mailgun_failure_verifies_with_its_signing_key_and_forgeries_do_not() {
    let data = json!({"event": "failed", "severity": "permanent", "id": "ev1",
        "recipient": "ada@example.com", "message": {"headers": {"message-id": "2026.1@mg.acme.example"}}});
    let body = mailgun_body("key-1", NOW, "tok-1", data.clone());
    let e = mailgun("key-1", &body).unwrap();
    assert_eq!(e[0].kind, EventKind::HardBounce);
    assert_eq!(e[0].message_id.as_deref(), Some("<2026.1@mg.acme.example>"));
    assert_eq!(mailgun("key-2", &body), Err(Refused::Unverified));
    let old = mailgun_body("key-1", NOW - 3600, "tok-1", data);
    assert_eq!(mailgun("key-1", &old), Err(Refused::Unverified));
    let temp = mailgun_body(
        "key-1",
        NOW,
        "tok-2",
        json!({"event": "failed", "severity": "temporary", "id": "ev2", "recipient": "ada@example.com"}),
    );
    let e = mailgun("key-1", &temp).unwrap();
    assert_eq!(e[0].kind, EventKind::SoftBounce);
}

#[test]
fn a_postmark_bounce_verifies_with_its_basic_credentials_only() {
    let keys = EventKeys {
        username: Some("hook".into()),
        password: Some("s3cret".into()),
        ..EventKeys::default()
    };
    let body = json!({"RecordType": "Bounce", "Type": "HardBounce", "ID": 42, "Email": "ada@example.com", "MessageID": "pm-1"}).to_string();
    let good = headers(vec![("authorization".into(), basic("hook", "s3cret"))]);
    let e = verify_and_parse(ProviderKind::Postmark, &keys, &good, body.as_bytes(), NOW).unwrap();
    assert_eq!(e[0].id, "Bounce:42");
    assert_eq!(e[0].kind, EventKind::HardBounce);
    // The scheme's name in any case (RFC 9110 §11.1).
    let lower = basic("hook", "s3cret").replacen("Basic", "basic", 1);
    let h = headers(vec![("authorization".into(), lower)]);
    assert!(verify_and_parse(ProviderKind::Postmark, &keys, &h, body.as_bytes(), NOW).is_ok());
    for bad in [
        basic("hook", "wrong"),
        basic("other", "s3cret"),
        "Bearer x".into(),
        basic("hook", "s3cret").replacen("Basic ", "Basicx ", 1),
    ] {
        let h = headers(vec![("authorization".into(), bad)]);
        assert_eq!(
            verify_and_parse(ProviderKind::Postmark, &keys, &h, body.as_bytes(), NOW),
            Err(Refused::Unverified)
        );
    }
    assert_eq!(
        verify_and_parse(
            ProviderKind::Postmark,
            &keys,
            &|_: &str| None,
            body.as_bytes(),
            NOW
        ),
        Err(Refused::Unverified)
    );
    let soft =
        json!({"RecordType": "Bounce", "Type": "SoftBounce", "ID": 43, "Email": "ada@example.com"})
            .to_string();
    let e = verify_and_parse(ProviderKind::Postmark, &keys, &good, soft.as_bytes(), NOW).unwrap();
    assert_eq!(e[0].kind, EventKind::SoftBounce);
}

#[test]
fn an_sns_notification_verifies_with_its_certificate_and_names_ses_recipients() {
    let ses = json!({"notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "ada@example.com"}]},
        "mail": {"messageId": "ses-1"}})
    .to_string();
    let body = sns_message(
        2,
        SNS_TOPIC,
        "Notification",
        "sns-1",
        &ses,
        "https://sns.eu-west-1.amazonaws.com/x.pem",
        "",
    );
    let m = SnsMessage::parse(&body).unwrap();
    m.verify(SNS_TEST_CERT.as_bytes()).unwrap();
    assert_eq!(m.topic_arn, "arn:aws:sns:eu-west-1:123456789012:ses-events");
    let sent = chrono::DateTime::parse_from_rfc3339(&m.timestamp)
        .unwrap()
        .timestamp_millis();
    assert!(m.fresh(sent + 60_000));
    assert!(!m.fresh(sent + 2 * 3_600_000));
    let e = m.ses_events().unwrap();
    assert_eq!(e[0].recipient, "ada@example.com");
    assert_eq!(e[0].kind, EventKind::HardBounce);
    assert_eq!(e[0].message_id.as_deref(), Some("ses-1"));
    // A changed message does not verify.
    let forged = String::from_utf8(body)
        .unwrap()
        .replace("ada@example.com", "eve@example.com");
    let m = SnsMessage::parse(forged.as_bytes()).unwrap();
    assert_eq!(m.verify(SNS_TEST_CERT.as_bytes()), Err(Refused::Unverified));
}

/// SNS signs with SignatureVersion 1 (SHA1withRSA) unless the topic was switched to 2: both
/// verify with the certificate, and a message changed after signing does not; another
/// version is refused.
#[test]
fn an_sns_message_signed_under_version_1_verifies_too() {
    let ses = json!({"notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "ada@example.com"}]},
        "mail": {"messageId": "ses-2"}})
    .to_string();
    let url = "https://sns.eu-west-1.amazonaws.com/x.pem";
    let body = sns_message(1, SNS_TOPIC, "Notification", "sns-2", &ses, url, "");
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.contains("\"SignatureVersion\":\"1\""), "{text}");
    let m = SnsMessage::parse(&body).unwrap();
    m.verify(SNS_TEST_CERT.as_bytes()).unwrap();
    assert_eq!(m.ses_events().unwrap()[0].kind, EventKind::Complaint);
    let forged = text.replace("ada@example.com", "eve@example.com");
    let m = SnsMessage::parse(forged.as_bytes()).unwrap();
    assert_eq!(m.verify(SNS_TEST_CERT.as_bytes()), Err(Refused::Unverified));
    // A version-2 signature presented as version 1 (and so checked as SHA-1) fails.
    let v2 = String::from_utf8(sns_message(
        2,
        SNS_TOPIC,
        "Notification",
        "sns-3",
        &ses,
        url,
        "",
    ))
    .unwrap();
    let relabelled = v2.replace("\"SignatureVersion\":\"2\"", "\"SignatureVersion\":\"1\"");
    let m = SnsMessage::parse(relabelled.as_bytes()).unwrap();
    assert_eq!(m.verify(SNS_TEST_CERT.as_bytes()), Err(Refused::Unverified));
    let v3 = v2.replace("\"SignatureVersion\":\"2\"", "\"SignatureVersion\":\"3\"");
    assert_eq!(
        SnsMessage::parse(v3.as_bytes()).err(),
        Some(Refused::Unverified)
    );
}

#[test]
fn sns_certificates_come_only_from_sns_hosts_over_https() {
    let none: Vec<String> = Vec::new();
    assert!(sns_url_allowed(
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        &none
    ));
    for bad in [
        "http://sns.eu-west-1.amazonaws.com/c.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/c.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/c.pem",
        "https://user@sns.eu-west-1.amazonaws.com/c.pem",
        "https://s3.amazonaws.com/c.pem",
        "https://127.0.0.1:4443/c.pem",
        // S3's virtual hosts of a bucket named `sns`: anyone's, not SNS's.
        "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.1-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    ] {
        assert!(!sns_url_allowed(bad, &none), "{bad}");
    }
    for region in [
        "us-east-1",
        "eu-central-2",
        "us-gov-west-1",
        "ap-southeast-4",
        "il-central-1",
        "mx-central-1",
        "ca-west-1",
        "us-isob-east-1",
    ] {
        let url = format!("https://sns.{region}.amazonaws.com/SimpleNotificationService-1.pem");
        assert!(sns_url_allowed(&url, &none), "{url}");
    }
    assert!(sns_url_allowed(
        "https://127.0.0.1:4443/c.pem",
        &["127.0.0.1".to_string()]
    ));
    assert!(sns_cert_url_allowed(
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a1b2c3.pem",
        &none
    ));
    for bad in [
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a1.pem?x=1",
        "https://sns.eu-west-1.amazonaws.com/other.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a1.pem#2",
    ] {
        assert!(!sns_cert_url_allowed(bad, &none), "{bad}");
    }
    let tests = ["127.0.0.1".to_string()];
    assert!(!sns_cert_url_allowed(
        "https://127.0.0.1:4443/c.pem#1",
        &tests
    ));
    // Spellings of one URL are one kept certificate.
    let key = crate::domain::sns::cert_key;
    let one = key("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a1.pem");
    assert!(one.is_some());
    for different in [
        "https://sns.eu-west-2.amazonaws.com/SimpleNotificationService-a1.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a2.pem",
    ] {
        assert_ne!(key(different), one, "{different}");
    }
    for other in [
        "https://SNS.EU-WEST-1.amazonaws.com/SimpleNotificationService-a1.pem",
        "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-a1.pem",
        "https://sns.eu-west-1.amazonaws.com/x/../SimpleNotificationService-a1.pem",
    ] {
        assert_eq!(key(other), one, "{other}");
    }
}

#[test]
fn event_keys_never_show_a_secret_when_debug_printed() {
    let keys = EventKeys {
        secret: Some(SECRET.into()),
        public_key: Some("MFkw".into()),
        username: Some("hooks".into()),
        password: Some("hunter2-password".into()),
    };
    let shown = format!("{keys:?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(
        shown.contains("<set>") && shown.contains("hooks"),
        "{shown}"
    );
    assert!(format!("{:?}", EventKeys::default()).contains("<none>"));
}
