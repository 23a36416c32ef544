#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Signing provider events as each provider documents it (API.md §16.2), for tests on
//! loopback: Standard Webhooks (Resend), ECDSA P-256 (SendGrid), HMAC-SHA256 (Mailgun),
//! HTTP Basic (Postmark) and SNS SignatureVersion 2 (SES) with a test-only RSA key and its
//! self-signed certificate (made once with openssl; never trusted by anything else).

use base64::Engine;
use hmac::{Hmac, Mac};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use sha2::Sha256;

/// The test-only RSA key SNS messages are signed with here, and its certificate.
pub const SNS_TEST_KEY: &str = include_str!("data/sns_test_key.pem");
pub const SNS_TEST_CERT: &str = include_str!("data/sns_test_cert.pem");

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Resend's headers (Svix) for a body: `svix-id`, `svix-timestamp`, `svix-signature`.
pub fn resend_headers(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap_or_default();
    vec![
        ("svix-id".into(), id.into()),
        ("svix-timestamp".into(), ts.to_string()),
        (
            "svix-signature".into(),
            crate::outbound::signature(&key, id, ts, body),
        ),
    ]
}

/// A SendGrid signing key pair: its verification key as SendGrid shows it (base64 DER
/// SubjectPublicKeyInfo) and signatures over `timestamp || body`.
pub struct SendgridKey {
    pair: EcdsaKeyPair,
}

impl Default for SendgridKey {
    fn default() -> Self {
        Self::new()
    }
}

impl SendgridKey {
    pub fn new() -> SendgridKey {
        let rng = SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        SendgridKey {
            pair: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
        }
    }

    pub fn public_key(&self) -> String {
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(self.pair.public_key().as_ref());
        b64(&der)
    }

    /// The two headers SendGrid sends.
    pub fn headers(&self, ts: i64, body: &[u8]) -> Vec<(String, String)> {
        let mut msg = ts.to_string().into_bytes();
        msg.extend_from_slice(body);
        let sig = self.pair.sign(&SystemRandom::new(), &msg).unwrap();
        vec![
            (
                "x-twilio-email-event-webhook-signature".into(),
                b64(sig.as_ref()),
            ),
            (
                "x-twilio-email-event-webhook-timestamp".into(),
                ts.to_string(),
            ),
        ]
    }
}

/// A Mailgun webhook body: `signature` (HMAC-SHA256 hex of timestamp || token) and
/// `event-data`.
pub fn mailgun_body(key: &str, ts: i64, token: &str, event_data: Value) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(ts.to_string().as_bytes());
    mac.update(token.as_bytes());
    json!({
        "signature": {
            "timestamp": ts.to_string(),
            "token": token,
            "signature": hex::encode(mac.finalize().into_bytes()),
        },
        "event-data": event_data,
    })
    .to_string()
    .into_bytes()
}

/// `Authorization: Basic …` for Postmark's webhook credentials.
pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{pass}").as_bytes()))
}

/// The topic the tests' SNS messages are published on.
pub const SNS_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:ses-events";

/// An SNS message on `topic` (usually [`SNS_TOPIC`]), sent now and signed with the test key
/// under SignatureVersion `version`: 1 (SNS's default, SHA1withRSA) or 2 (SHA256withRSA);
/// `cert_url` names where the certificate is served. `kind`: `Notification` or
/// `SubscriptionConfirmation` (which carries `subscribe_url`).
pub fn sns_message(
    version: u8,
    topic: &str,
    kind: &str,
    id: &str,
    message: &str,
    cert_url: &str,
    subscribe_url: &str,
) -> Vec<u8> {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ts = ts.as_str();
    let token = "2336412f37fb687f5d51e6e2425f004aed2b9a9d5d8b2b7d8b2b7d8b";
    let fields: Vec<(&str, &str)> = if kind == "Notification" {
        vec![
            ("Message", message),
            ("MessageId", id),
            ("Timestamp", ts),
            ("TopicArn", topic),
            ("Type", kind),
        ]
    } else {
        vec![
            ("Message", message),
            ("MessageId", id),
            ("SubscribeURL", subscribe_url),
            ("Timestamp", ts),
            ("Token", token),
            ("TopicArn", topic),
            ("Type", kind),
        ]
    };
    let mut to_sign = String::new();
    for (k, v) in &fields {
        to_sign.push_str(&format!("{k}\n{v}\n"));
    }
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(SNS_TEST_KEY.as_bytes()).unwrap();
    let sig = if version == 1 {
        // ring signs no SHA-1: PKCS #1 v1.5 over SHA-1's DigestInfo, with the rsa crate.
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der()).unwrap();
        let digest =
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, to_sign.as_bytes());
        let mut info = vec![
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ];
        info.extend_from_slice(digest.as_ref());
        key.sign(rsa::Pkcs1v15Sign::new_unprefixed(), &info)
            .unwrap()
    } else {
        let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let mut sig = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            to_sign.as_bytes(),
            &mut sig,
        )
        .unwrap();
        sig
    };
    let mut v = json!({
        "SignatureVersion": version.to_string(),
        "Signature": b64(&sig),
        "SigningCertURL": cert_url,
    });
    for (k, val) in fields {
        v[k] = json!(val);
    }
    v.to_string().into_bytes()
}
