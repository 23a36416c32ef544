//! DKIM per tenant (API.md §16.3): keys otpmint makes (Ed25519 or RSA-2048), the TXT record
//! to publish, which key signs (the newest), and relaxed alignment of the sender's domain.
//! The private keys are sealed by the service; here they are only made.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::named::named_enum;
use super::policy::FieldError;
use super::Millis;

/// Keys (selectors) a tenant may hold at once: the signing one and those rotated out.
pub const MAX_KEYS: usize = 4;

named_enum! {
    /// A key pair's algorithm.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DkimAlgorithm {
        Ed25519 = "ed25519",
        Rsa2048 = "rsa2048",
    }
}

impl DkimAlgorithm {
    /// The record's `k=`.
    pub fn k(self) -> &'static str {
        match self {
            DkimAlgorithm::Ed25519 => "ed25519",
            DkimAlgorithm::Rsa2048 => "rsa",
        }
    }
}

/// A key's public part, as kept on the tenant (the private part is sealed beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// The record's `p=`: base64 of the raw Ed25519 key, or of the RSA key's
    /// SubjectPublicKeyInfo.
    pub public_key: String,
    pub created_at: Millis,
}

impl DkimKey {
    /// The TXT record's name: `{selector}._domainkey.{domain}`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record's value.
    pub fn record_value(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm.k(), self.public_key)
    }
}

/// The keys as stored (JSON), newest last.
pub fn keys_to_stored(keys: &[DkimKey]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".into())
}

pub fn keys_from_stored(s: &str) -> Vec<DkimKey> {
    if s.is_empty() {
        return Vec::new();
    }
    serde_json::from_str(s).unwrap_or_default()
}

/// The newest key (what `GET /v1/tenant/dkim` shows first).
pub fn signing_key(keys: &[DkimKey]) -> Option<&DkimKey> {
    keys.iter().max_by_key(|k| k.created_at)
}

/// The key shown as signing for a sender of `from_domain` (`GET /v1/tenant/dkim`, the
/// domain check): the one that signs its mail, else — none aligned — the newest, whose
/// domain the advice then names.
pub fn shown_key<'a>(keys: &'a [DkimKey], from_domain: Option<&str>) -> Option<&'a DkimKey> {
    from_domain
        .and_then(|d| signing_key_for(keys, d))
        .or_else(|| signing_key(keys))
}

/// The key that signs mail from `from_domain` (API.md §16.3): the newest of those whose
/// domain it aligns with — a newer key for another domain does not stop it signing.
pub fn signing_key_for<'a>(keys: &'a [DkimKey], from_domain: &str) -> Option<&'a DkimKey> {
    keys.iter()
        .filter(|k| aligned(from_domain, &k.domain))
        .max_by_key(|k| k.created_at)
}

/// The domain of a sender in its ASCII (A-label) form, as DNS and DKIM's `d=` name it
/// (`Acme <no-reply@Acme.example>` → `acme.example`; `codes@bücher.example` →
/// `xn--bcher-kva.example`).
pub fn sender_domain(from: &str) -> Option<String> {
    let addr = from
        .rsplit_once('<')
        .map_or(from, |(_, a)| a.trim_end_matches('>'));
    let (_, d) = addr.rsplit_once('@')?;
    let d = d.trim().trim_end_matches('.');
    idna::domain_to_ascii(d).ok().filter(|d| !d.is_empty())
}

/// Whether mail from `from_domain` aligns with a key of `key_domain` (relaxed: the same
/// domain or a subdomain of it).
pub fn aligned(from_domain: &str, key_domain: &str) -> bool {
    let (f, k) = (
        from_domain.to_ascii_lowercase(),
        key_domain.to_ascii_lowercase(),
    );
    f == k || f.ends_with(&format!(".{k}"))
}

/// A domain name as stored (lower case, ASCII — an internationalized name in its A-label
/// form, as DNS holds it —, no trailing dot), or what is wrong with it.
pub fn parse_domain(s: &str) -> Result<String, FieldError> {
    let ascii = if s.is_ascii() {
        Some(s.to_string())
    } else {
        idna::domain_to_ascii_strict(s.strip_suffix('.').unwrap_or(s)).ok()
    };
    ascii
        .as_deref()
        .and_then(super::dns_name)
        .ok_or_else(|| FieldError::new("domain", "must be a domain name, like acme.example"))
}

/// A selector (one or more DNS labels), or what is wrong with it.
pub fn parse_selector(s: &str) -> Result<String, FieldError> {
    let ok = super::grammar::DKIM_SELECTOR.matches(s);
    ok.then(|| s.to_ascii_lowercase()).ok_or_else(|| {
        FieldError::new(
            "selector",
            "must be 1 to 63 letters, digits, hyphens and dots, like otpmint1",
        )
    })
}

/// A selector no key of the tenant uses: `otpmint1`, `otpmint2`, …
pub fn next_selector(keys: &[DkimKey]) -> String {
    (1..)
        .map(|n| format!("otpmint{n}"))
        .find(|s| keys.iter().all(|k| &k.selector != s))
        .unwrap_or_else(|| "otpmint".into())
}

/// A new key pair: its public part (for the record) and its private key as lettre takes it
/// (Ed25519: base64 of the 32-byte seed; RSA: PKCS#1 PEM). RSA-2048 takes a moment: call it
/// off the async workers.
pub fn generate(algorithm: DkimAlgorithm) -> Result<(String, String), String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match algorithm {
        DkimAlgorithm::Ed25519 => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|_| "ed25519 key".to_string())?;
            let public = ring::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec();
            Ok((b64(&public), b64(&seed)))
        }
        DkimAlgorithm::Rsa2048 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePublicKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| format!("rsa key: {e}"))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| format!("rsa public key: {e}"))?;
            let private = key
                .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .map_err(|e| format!("rsa private key: {e}"))?;
            Ok((b64(public.as_bytes()), private.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_is_the_newest_aligned_one() {
        let key = |domain: &str, selector: &str, created_at| DkimKey {
            domain: domain.into(),
            selector: selector.into(),
            algorithm: DkimAlgorithm::Ed25519,
            public_key: String::new(),
            created_at,
        };
        let keys = [
            key("acme.example", "a1", 1),
            key("acme.example", "a2", 2),
            key("other.example", "o1", 3),
        ];
        let for_ = |d| signing_key_for(&keys, d).map(|k| k.selector.as_str());
        assert_eq!(for_("acme.example"), Some("a2"));
        assert_eq!(for_("mail.acme.example"), Some("a2"));
        assert_eq!(for_("other.example"), Some("o1"));
        assert_eq!(for_("third.example"), None);
        assert_eq!(signing_key(&keys).map(|k| k.selector.as_str()), Some("o1"));
    }

    #[test]
    fn the_record_names_the_selector_and_the_key() {
        let (public, private) = generate(DkimAlgorithm::Ed25519).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&private)
                .unwrap()
                .len(),
            32
        );
        let k = DkimKey {
            domain: "acme.example".into(),
            selector: "otpmint1".into(),
            algorithm: DkimAlgorithm::Ed25519,
            public_key: public.clone(),
            created_at: 1,
        };
        assert_eq!(k.record_name(), "otpmint1._domainkey.acme.example");
        assert_eq!(k.record_value(), format!("v=DKIM1; k=ed25519; p={public}"));
        assert_eq!(
            keys_from_stored(&keys_to_stored(std::slice::from_ref(&k))),
            vec![k.clone()]
        );
        assert_eq!(next_selector(&[k]), "otpmint2");
    }

    #[test]
    fn alignment_is_relaxed_and_names_are_checked() {
        assert!(aligned("acme.example", "acme.example"));
        assert!(aligned("mail.Acme.example", "acme.example"));
        assert!(!aligned("acme.example.evil", "acme.example"));
        assert!(!aligned("notacme.example", "acme.example"));
        assert!(parse_domain("Acme.Example.").is_ok());
        assert!(parse_domain("localhost").is_err());
        // An internationalized name is stored, signed for and aligned in its A-label form.
        assert_eq!(
            parse_domain("Bücher.example.").unwrap(),
            "xn--bcher-kva.example"
        );
        assert!(parse_domain("bü cher.example").is_err());
        let from = sender_domain("Bücher <codes@Mail.Bücher.example>").unwrap();
        assert_eq!(from, "mail.xn--bcher-kva.example");
        assert!(aligned(&from, &parse_domain("bücher.example").unwrap()));
        assert_eq!(
            sender_domain("no-reply@Acme.example.").unwrap(),
            "acme.example"
        );
        assert_eq!(sender_domain("no domain"), None);
        assert!(parse_selector("s1.2026").is_ok());
        assert!(parse_selector("bad_selector").is_err());
    }

    #[test]
    fn an_rsa_key_is_2048_bits_and_its_record_holds_the_public_key_info() {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let (public, private) = generate(DkimAlgorithm::Rsa2048).unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(&private).unwrap();
        assert_eq!(key.size() * 8, 2048);
        let spki = base64::engine::general_purpose::STANDARD
            .decode(public)
            .unwrap();
        assert!(spki.len() > 256, "{}", spki.len());
    }
}
