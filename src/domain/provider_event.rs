//! Bounce and complaint events from email providers (API.md §16.2): each provider's
//! signature checked exactly as that provider signs (Resend: Standard Webhooks; SendGrid:
//! ECDSA P-256; Mailgun: HMAC-SHA256; Postmark: HTTP Basic; SES: the SNS message signature,
//! in `domain/sns.rs`) and its body parsed strictly into what otpmint acts on. Pure: the SNS
//! certificate is fetched by the service.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::provider::ProviderKind;
pub use super::sns::{sns_cert_url_allowed, sns_url_allowed, SnsMessage, SnsType};

/// How far a signed timestamp may be from now (seconds), either way.
pub const TOLERANCE_SECS: i64 = 300;
/// The largest event body read.
pub const BODY_MAX: usize = 1024 * 1024;
/// Events one request may carry. SendGrid batches up to 768 KB of events (several
/// thousand); a batch past this is refused whole.
pub const EVENTS_MAX: usize = 10_000;

/// What an event reports about a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    HardBounce,
    /// A temporary failure: recorded nowhere, never suppresses.
    SoftBounce,
    Complaint,
    /// Anything else the provider sends (deliveries, opens): accepted and ignored.
    Other,
}

/// One event, as otpmint acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's id of the event (duplicates are recognised by it).
    pub id: String,
    /// The address as the provider names it.
    pub recipient: String,
    pub kind: EventKind,
    /// The provider's id of the message, as its send API answered it (to find the code).
    pub message_id: Option<String>,
}

/// Why an event is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The signature (or credentials) did not verify: 401, nothing changes.
    Unverified,
    /// Verified but not a body of this provider: 400.
    Malformed(&'static str),
}

/// The verification material of a tenant's email provider (from its settings). Its
/// `Debug` names which parts are set, never a secret's value.
#[derive(Clone, Default)]
pub struct EventKeys {
    /// Resend's `whsec_…` signing secret, or Mailgun's webhook signing key.
    pub secret: Option<String>,
    /// SendGrid's public key: base64 of its DER SubjectPublicKeyInfo.
    pub public_key: Option<String>,
    /// The Basic credentials on Postmark's webhook URL.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for EventKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("EventKeys")
            .field("secret", &set(&self.secret))
            .field("public_key", &self.public_key)
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .finish()
    }
}

/// A request's header by (lower-case) name.
pub type Header<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

fn fresh(ts: &str, now_secs: i64) -> bool {
    ts.trim()
        .parse::<i64>()
        .is_ok_and(|t| (now_secs - t).abs() <= TOLERANCE_SECS)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn json(body: &[u8]) -> Result<Value, Refused> {
    serde_json::from_slice(body).map_err(|_| Refused::Malformed("the body is not JSON"))
}

/// A provider's id (of an event, a message, Mailgun's token) as it is stored and looked up:
/// its first `max` characters, a NUL made U+FFFD. PostgreSQL's text holds no NUL (the write
/// failed, a 500 the provider retries for ever); ours never hold either, so such an id still
/// finds no message, on both backends alike, and a duplicate is still one.
pub fn stored_id(id: &str, max: usize) -> String {
    id.chars()
        .take(max)
        .map(|c| {
            if c == '\0' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

pub(super) fn text(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).map(str::to_string)
}

/// Verify and parse a request of one provider (every kind but SES, whose signature needs
/// its certificate: see [`SnsMessage`]).
pub fn verify_and_parse(
    kind: ProviderKind,
    keys: &EventKeys,
    header: Header<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<Vec<ProviderEvent>, Refused> {
    match kind {
        ProviderKind::Resend => {
            let id = verify_resend(keys, header, body, now_secs)?;
            parse_resend(&id, body)
        }
        ProviderKind::Sendgrid => {
            verify_sendgrid(keys, header, body, now_secs)?;
            parse_sendgrid(body)
        }
        ProviderKind::Mailgun => verify_and_parse_mailgun(keys, body, now_secs),
        ProviderKind::Postmark => {
            verify_postmark(keys, header)?;
            parse_postmark(body)
        }
        _ => Err(Refused::Unverified),
    }
}

/// Standard Webhooks (Svix headers, or `webhook-*`): `v1,<base64 HMAC-SHA256>` over
/// `id.timestamp.body`, keyed with the secret's base64 after `whsec_`. Answers the id.
fn verify_resend(
    keys: &EventKeys,
    header: Header<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<String, Refused> {
    let get = |n: &str| header(&format!("svix-{n}")).or_else(|| header(&format!("webhook-{n}")));
    let (Some(secret), Some(id), Some(ts), Some(sigs)) = (
        keys.secret.as_deref(),
        get("id"),
        get("timestamp"),
        get("signature"),
    ) else {
        return Err(Refused::Unverified);
    };
    let key = b64(secret.strip_prefix("whsec_").unwrap_or(secret)).ok_or(Refused::Unverified)?;
    if !fresh(&ts, now_secs) {
        return Err(Refused::Unverified);
    }
    let want = hmac(
        &key,
        &[id.as_bytes(), b".", ts.trim().as_bytes(), b".", body],
    );
    let ok = sigs.split_whitespace().any(|s| {
        s.strip_prefix("v1,")
            .and_then(b64)
            .is_some_and(|got| bool::from(got.ct_eq(&want)))
    });
    ok.then_some(id).ok_or(Refused::Unverified)
}

fn parse_resend(id: &str, body: &[u8]) -> Result<Vec<ProviderEvent>, Refused> {
    let v = json(body)?;
    let kind = match v.get("type").and_then(Value::as_str) {
        // Only a bounce Resend calls permanent suppresses (as SES's, whose types these are):
        // `Transient`, `Undetermined`, a type it may add later or none do not.
        Some("email.bounced") => match v.pointer("/data/bounce/type").and_then(Value::as_str) {
            Some("Permanent") => EventKind::HardBounce,
            _ => EventKind::SoftBounce,
        },
        Some("email.complained") => EventKind::Complaint,
        Some(_) => EventKind::Other,
        None => return Err(Refused::Malformed("an event needs its type")),
    };
    let message_id = text(&v, "/data/email_id");
    let to = match v.pointer("/data/to") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ if kind == EventKind::Other => Vec::new(),
        _ => return Err(Refused::Malformed("a bounce or complaint needs data.to")),
    };
    // Resend names the message's recipients, not which of them bounced or complained: an
    // event of a message to several (the tenant's other mail — otpmint sends each code to
    // one) says of none of them that it bounced, and suppresses nobody.
    if to.len() > 1 {
        return Ok(Vec::new());
    }
    Ok(to
        .into_iter()
        .enumerate()
        .map(|(i, recipient)| ProviderEvent {
            id: if i == 0 {
                id.to_string()
            } else {
                format!("{id}#{i}")
            },
            recipient,
            kind,
            message_id: message_id.clone(),
        })
        .collect())
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo, before its uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The uncompressed point of a SendGrid verification key (base64 DER SPKI, P-256), if it
/// is one.
pub fn sendgrid_point(key: &str) -> Option<Vec<u8>> {
    let der = b64(key)?;
    let point = der.strip_prefix(&P256_SPKI_PREFIX[..])?;
    (point.len() == 65 && point[0] == 4).then(|| point.to_vec())
}

/// ECDSA P-256 / SHA-256 (ASN.1 DER signature, base64) over `timestamp || body`.
fn verify_sendgrid(
    keys: &EventKeys,
    header: Header<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Refused> {
    let (Some(key), Some(sig), Some(ts)) = (
        keys.public_key.as_deref(),
        header("x-twilio-email-event-webhook-signature"),
        header("x-twilio-email-event-webhook-timestamp"),
    ) else {
        return Err(Refused::Unverified);
    };
    let point = sendgrid_point(key).ok_or(Refused::Unverified)?;
    let sig = b64(&sig).ok_or(Refused::Unverified)?;
    if !fresh(&ts, now_secs) {
        return Err(Refused::Unverified);
    }
    let mut msg = ts.trim().as_bytes().to_vec();
    msg.extend_from_slice(body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(&msg, &sig)
        .map_err(|_| Refused::Unverified)
}

fn parse_sendgrid(body: &[u8]) -> Result<Vec<ProviderEvent>, Refused> {
    let Value::Array(list) = json(body)? else {
        return Err(Refused::Malformed("SendGrid posts a JSON array of events"));
    };
    if list.len() > EVENTS_MAX {
        return Err(Refused::Malformed("too many events in one request"));
    }
    // Account events (`account_status_change`, …) carry no recipient: they are not about
    // a message and are passed over, so one of them does not turn the whole batch away.
    let mut events = Vec::with_capacity(list.len());
    for e in &list {
        let kind = match (
            e.get("event").and_then(Value::as_str),
            e.get("type").and_then(Value::as_str),
        ) {
            // A `bounce` is permanent (`blocked` is not); one without a type is SendGrid's
            // older form of the same; a type it may add later suppresses nothing.
            (Some("bounce"), Some("bounce") | None) => EventKind::HardBounce,
            (Some("bounce"), _) => EventKind::SoftBounce,
            (Some("deferred"), _) => EventKind::SoftBounce,
            (Some("spamreport"), _) => EventKind::Complaint,
            (Some(_), _) => EventKind::Other,
            (None, _) => return Err(Refused::Malformed("an event needs its event name")),
        };
        let (Some(id), Some(recipient)) = (text(e, "/sg_event_id"), text(e, "/email")) else {
            if kind == EventKind::Other {
                continue;
            }
            return Err(Refused::Malformed("an event needs sg_event_id and email"));
        };
        // The send API's X-Message-Id is the part before the first dot.
        let message_id =
            text(e, "/sg_message_id").map(|m| m.split('.').next().unwrap_or_default().to_string());
        events.push(ProviderEvent {
            id,
            recipient,
            kind,
            message_id,
        });
    }
    Ok(events)
}

/// HMAC-SHA256 (hex) over `timestamp || token`, keyed with the webhook signing key, in the
/// body's `signature` object.
fn verify_and_parse_mailgun(
    keys: &EventKeys,
    body: &[u8],
    now_secs: i64,
) -> Result<Vec<ProviderEvent>, Refused> {
    let Some(key) = keys.secret.as_deref() else {
        return Err(Refused::Unverified);
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| Refused::Unverified)?;
    let (Some(ts), Some(token), Some(sig)) = (
        text(&v, "/signature/timestamp"),
        text(&v, "/signature/token"),
        text(&v, "/signature/signature"),
    ) else {
        return Err(Refused::Unverified);
    };
    let want = hex::encode(hmac(key.as_bytes(), &[ts.as_bytes(), token.as_bytes()]));
    if !bool::from(want.as_bytes().ct_eq(sig.to_ascii_lowercase().as_bytes()))
        || !fresh(&ts, now_secs)
    {
        return Err(Refused::Unverified);
    }
    let Some(d) = v.get("event-data") else {
        return Err(Refused::Malformed("Mailgun posts event-data"));
    };
    let kind = match (
        d.get("event").and_then(Value::as_str),
        d.get("severity").and_then(Value::as_str),
    ) {
        (Some("failed"), Some("permanent")) => EventKind::HardBounce,
        (Some("failed"), _) => EventKind::SoftBounce,
        (Some("complained"), _) => EventKind::Complaint,
        (Some(_), _) => EventKind::Other,
        (None, _) => return Err(Refused::Malformed("event-data needs its event")),
    };
    let (Some(id), Some(recipient)) = (text(d, "/id"), text(d, "/recipient")) else {
        return Err(Refused::Malformed("event-data needs id and recipient"));
    };
    // The send API answers the Message-ID in angle brackets (kept so); events carry it
    // without.
    let message_id = text(d, "/message/headers/message-id")
        .map(|m| format!("<{}>", m.trim_matches(|c| c == '<' || c == '>')));
    Ok(vec![ProviderEvent {
        id,
        recipient,
        kind,
        message_id,
    }])
}

/// HTTP Basic credentials, as set on the webhook URL, compared in constant time.
fn verify_postmark(keys: &EventKeys, header: Header<'_>) -> Result<(), Refused> {
    let (Some(user), Some(pass), Some(auth)) = (
        keys.username.as_deref(),
        keys.password.as_deref(),
        header("authorization"),
    ) else {
        return Err(Refused::Unverified);
    };
    // The scheme's name is case-insensitive (RFC 9110 §11.1).
    let given = auth
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, creds)| b64(creds.trim_start()))
        .ok_or(Refused::Unverified)?;
    let want = format!("{user}:{pass}");
    bool::from(given.ct_eq(want.as_bytes()))
        .then_some(())
        .ok_or(Refused::Unverified)
}

fn parse_postmark(body: &[u8]) -> Result<Vec<ProviderEvent>, Refused> {
    let v = json(body)?;
    let record = v.get("RecordType").and_then(Value::as_str);
    let kind = match (record, v.get("Type").and_then(Value::as_str)) {
        (Some("Bounce"), Some("HardBounce" | "BadEmailAddress" | "ManuallyDeactivated")) => {
            EventKind::HardBounce
        }
        (Some("Bounce"), _) => EventKind::SoftBounce,
        (Some("SpamComplaint"), _) => EventKind::Complaint,
        (Some(_), _) => EventKind::Other,
        (None, _) => return Err(Refused::Malformed("Postmark posts a RecordType")),
    };
    let id = match v.get("ID") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => text(&v, "/MessageID").unwrap_or_default(),
    };
    let recipient = text(&v, "/Email").or_else(|| text(&v, "/Recipient"));
    let (false, Some(recipient)) = (id.is_empty(), recipient) else {
        return Err(Refused::Malformed("an event needs its ID and Email"));
    };
    Ok(vec![ProviderEvent {
        id: format!("{}:{id}", record.unwrap_or_default()),
        recipient,
        kind,
        message_id: text(&v, "/MessageID"),
    }])
}

#[cfg(test)]
#[path = "provider_event_tests.rs"]
mod tests;
