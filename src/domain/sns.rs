//! SES events arrive through SNS (API.md §16.2): an SNS message parsed, its signature
//! (SignatureVersion 1, SNS's default, SHA1withRSA; or 2, SHA256withRSA) checked with the
//! certificate the service fetched, its age and topic, and the hosts a certificate or
//! subscription URL may be fetched from.

use serde_json::Value;

use super::provider_event::{b64, text, EventKind, ProviderEvent, Refused, TOLERANCE_SECS};

/// An SNS message (SES notifications arrive through SNS), its signature to be checked
/// against the certificate at `signing_cert_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsMessage {
    pub kind: SnsType,
    /// The topic it was published to (signed).
    pub topic_arn: String,
    /// When SNS sent it (signed; RFC 3339).
    pub timestamp: String,
    pub message_id: String,
    pub message: String,
    pub signing_cert_url: String,
    pub subscribe_url: Option<String>,
    signature: Vec<u8>,
    /// SignatureVersion 1 (SHA1withRSA) rather than 2 (SHA256withRSA).
    sha1: bool,
    string_to_sign: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl SnsMessage {
    /// Parse an SNS POST body (SignatureVersion 1 or 2).
    pub fn parse(body: &[u8]) -> Result<SnsMessage, Refused> {
        let v: Value = serde_json::from_slice(body).map_err(|_| Refused::Unverified)?;
        let field = |n: &str| v.get(n).and_then(Value::as_str);
        let kind = match field("Type") {
            Some("Notification") => SnsType::Notification,
            Some("SubscriptionConfirmation") => SnsType::SubscriptionConfirmation,
            Some("UnsubscribeConfirmation") => SnsType::UnsubscribeConfirmation,
            _ => return Err(Refused::Unverified),
        };
        let sha1 = match field("SignatureVersion") {
            Some("1") => true,
            Some("2") => false,
            _ => return Err(Refused::Unverified),
        };
        let names: &[&str] = match kind {
            SnsType::Notification => &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ],
            _ => &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ],
        };
        let mut string_to_sign = String::new();
        for n in names {
            match field(n) {
                Some(val) => {
                    string_to_sign.push_str(n);
                    string_to_sign.push('\n');
                    string_to_sign.push_str(val);
                    string_to_sign.push('\n');
                }
                // Only a notification's Subject is optional.
                None if *n == "Subject" => {}
                None => return Err(Refused::Unverified),
            }
        }
        let (Some(sig), Some(cert), Some(id), Some(message)) = (
            field("Signature").and_then(b64),
            field("SigningCertURL"),
            field("MessageId"),
            field("Message"),
        ) else {
            return Err(Refused::Unverified);
        };
        Ok(SnsMessage {
            kind,
            topic_arn: field("TopicArn").unwrap_or_default().to_string(),
            timestamp: field("Timestamp").unwrap_or_default().to_string(),
            message_id: id.to_string(),
            message: message.to_string(),
            signing_cert_url: cert.to_string(),
            subscribe_url: field("SubscribeURL").map(str::to_string),
            signature: sig,
            sha1,
            string_to_sign,
        })
    }

    /// Whether it was sent recently: within the last hour, at most 5 minutes ahead (a
    /// replay after its duplicate record is purged is refused).
    pub fn fresh(&self, now_ms: i64) -> bool {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp).is_ok_and(|t| {
            let at = t.timestamp_millis();
            at >= now_ms - 3_600_000 && at <= now_ms + TOLERANCE_SECS * 1000
        })
    }

    /// Whether the signature verifies with the certificate (PEM) fetched from
    /// `signing_cert_url`.
    pub fn verify(&self, cert_pem: &[u8]) -> Result<(), Refused> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem)
            .map_err(|_| Refused::Unverified)?;
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|_| Refused::Unverified)?;
        let alg: &dyn rustls_pki_types::SignatureVerificationAlgorithm = if self.sha1 {
            &RsaSha1
        } else {
            webpki::ring::RSA_PKCS1_2048_8192_SHA256
        };
        cert.verify_signature(alg, self.string_to_sign.as_bytes(), &self.signature)
            .map_err(|_| Refused::Unverified)
    }

    /// The events of a verified SES notification (its `Message` is SES's JSON).
    pub fn ses_events(&self) -> Result<Vec<ProviderEvent>, Refused> {
        if self.kind != SnsType::Notification {
            return Ok(Vec::new());
        }
        let m: Value = serde_json::from_str(&self.message)
            .map_err(|_| Refused::Malformed("the SNS Message is not SES's JSON"))?;
        let of = |n: &str| m.get(n).and_then(Value::as_str);
        let (kind, list) = match of("notificationType").or_else(|| of("eventType")) {
            Some("Bounce") => (
                match m.pointer("/bounce/bounceType").and_then(Value::as_str) {
                    Some("Permanent") => EventKind::HardBounce,
                    _ => EventKind::SoftBounce,
                },
                m.pointer("/bounce/bouncedRecipients"),
            ),
            Some("Complaint") => (
                EventKind::Complaint,
                m.pointer("/complaint/complainedRecipients"),
            ),
            Some(_) => return Ok(Vec::new()),
            None => return Err(Refused::Malformed("an SES notification needs its type")),
        };
        let Some(Value::Array(list)) = list else {
            return Err(Refused::Malformed(
                "an SES notification names its recipients",
            ));
        };
        let message_id = text(&m, "/mail/messageId");
        Ok(list
            .iter()
            .filter_map(|r| r.get("emailAddress").and_then(Value::as_str))
            .enumerate()
            .map(|(i, r)| ProviderEvent {
                id: format!("{}#{i}", self.message_id),
                recipient: r.to_string(),
                kind,
                message_id: message_id.clone(),
            })
            .collect())
    }
}

/// SHA1withRSA (PKCS #1 v1.5), what SNS signs with under SignatureVersion 1 — its default.
/// webpki offers no SHA-1 algorithm, so this one checks the certificate's RSA key with
/// ring's legacy verifier; nothing else in otpmint accepts SHA-1.
#[derive(Debug)]
struct RsaSha1;

impl rustls_pki_types::SignatureVerificationAlgorithm for RsaSha1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), rustls_pki_types::InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            public_key,
        )
        .verify(message, signature)
        .map_err(|_| rustls_pki_types::InvalidSignature)
    }

    fn public_key_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        rustls_pki_types::alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        // sha1WithRSAEncryption (1.2.840.113549.1.1.5), NULL parameters.
        rustls_pki_types::AlgorithmIdentifier::from_slice(&[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
        ])
    }
}

/// Whether an SNS URL (the signing certificate's, or a subscription's) may be fetched:
/// https on an SNS host — `sns.<region>.amazonaws.com` (default port), or a host of
/// `delivery.sns_certificate_hosts` (tests; any port).
pub fn sns_url_allowed(url: &str, extra_hosts: &[String]) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let Some(host) = u.host_str() else {
        return false;
    };
    if u.scheme() != "https" || !u.username().is_empty() || u.password().is_some() {
        return false;
    }
    if extra_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return true;
    }
    let aws = host
        .strip_prefix("sns.")
        .and_then(|r| r.strip_suffix(".amazonaws.com"))
        .is_some_and(is_region);
    aws && u.port().is_none()
}

/// An AWS region's name: two letters, words, a number (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`). Nothing else may stand between `sns.` and `.amazonaws.com`: other
/// labels there are other services' hosts — `sns.s3.amazonaws.com` is an S3 bucket's.
fn is_region(r: &str) -> bool {
    let mut parts = r.split('-');
    let first = parts.next().unwrap_or("");
    let parts: Vec<&str> = parts.collect();
    let Some((number, words)) = parts.split_last() else {
        return false;
    };
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !words.is_empty()
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a signing certificate URL may be fetched: an SNS URL ([`sns_url_allowed`]) and,
/// on SNS's own hosts, the path SNS serves its certificates at
/// (`/SimpleNotificationService-<hex>.pem`, no query) — so a forged body cannot make the
/// server fetch arbitrary documents from those hosts. Never with a fragment.
pub fn sns_cert_url_allowed(url: &str, extra_hosts: &[String]) -> bool {
    // (The certificates are kept by the URL as parsed: another spelling of the host or
    // port is the same entry, see `cert_key`.)
    if !sns_url_allowed(url, extra_hosts) {
        return false;
    }
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    // A fragment is not sent: the same certificate under another name.
    if u.fragment().is_some() {
        return false;
    }
    if u.host_str()
        .is_some_and(|h| extra_hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
    {
        return true;
    }
    u.query().is_none()
        && u.path()
            .strip_prefix("/SimpleNotificationService-")
            .and_then(|r| r.strip_suffix(".pem"))
            .is_some_and(|hexid| !hexid.is_empty() && hexid.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The one spelling of a certificate URL (host in lower case, default port dropped, path
/// normalised) that its kept copy is found by.
pub fn cert_key(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(String::from)
}
