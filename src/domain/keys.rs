//! Identifiers and bearer secrets: TenantId, SecretKey, ShareableKey. Secrets have redacted Debug.

use super::named::named_enum;
use std::fmt;

use rand::{rngs::OsRng, RngCore};
use secrecy::{ExposeSecret, SecretString};

const BASE62: [char; 62] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I',
    'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'a', 'b',
    'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u',
    'v', 'w', 'x', 'y', 'z',
];

/// Random bytes for nanoid, from the OS CSPRNG.
fn os_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

/// `n` characters of `alphabet`, uniformly (nanoid's masking, no modulo bias), from the OS
/// CSPRNG: the one constructor of every random identifier.
fn random_from(alphabet: &[char], n: usize) -> String {
    nanoid::format(os_bytes, alphabet, n)
}

/// `n` random base62 characters from the OS CSPRNG.
pub fn random_id(n: usize) -> String {
    random_alnum(n)
}

fn random_alnum(n: usize) -> String {
    random_from(&BASE62, n)
}

fn random_letters(n: usize) -> String {
    random_from(&BASE62[10..], n)
}

/// `tnt_` + 20 base62 characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn generate() -> TenantId {
        TenantId(format!("tnt_{}", random_alnum(20)))
    }
    pub fn parse(s: &str) -> Option<TenantId> {
        let rest = s.strip_prefix("tnt_")?;
        (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| TenantId(s.to_string()))
    }
    /// From the store, which only holds ids it made.
    pub fn from_trusted(s: String) -> TenantId {
        TenantId(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's bearer secret: `sk_` + 32 base62 characters (190 bits), or an imported
/// OtpMint key. Only its HMAC digest is stored.
pub struct SecretKey(SecretString);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    pub fn generate() -> SecretKey {
        SecretKey(SecretString::from(format!("sk_{}", random_alnum(32))))
    }
    /// A test tenant's key (API.md §13.2): `sk_test_` and as many random characters.
    pub fn generate_test() -> SecretKey {
        SecretKey(SecretString::from(format!("sk_test_{}", random_alnum(32))))
    }
    /// A key of the kind a tenant's mode calls for.
    pub fn generate_for(test: bool) -> SecretKey {
        if test {
            SecretKey::generate_test()
        } else {
            SecretKey::generate()
        }
    }
    /// Any presented bearer value (it is only ever hashed and looked up).
    pub fn presented(s: &str) -> SecretKey {
        SecretKey(SecretString::from(s.to_string()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// Whether a key chosen by a client (OtpMint's `secretKey`) can be sent back as a bearer
    /// token: an HTTP header carries printable ASCII, and drops spaces at either end.
    pub fn fits_a_header(s: &str) -> bool {
        s.chars().all(|c| matches!(c, ' '..='~')) && s.trim() == s
    }
}

named_enum! {
    /// The kind of code a shareable key names: native `/v1` or OtpMint-compatible.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CodeApi {
        Native = "native",
        Compat = "compat",
    }
}

/// The handle of one code: `otp_` + 22 base62 (131 bits), or 10 letters for compat.
pub struct ShareableKey(SecretString);

impl fmt::Debug for ShareableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareableKey(<redacted>)")
    }
}

impl ShareableKey {
    pub fn generate(flavor: CodeApi) -> ShareableKey {
        let s = match flavor {
            CodeApi::Native => format!("otp_{}", random_alnum(22)),
            CodeApi::Compat => random_letters(10),
        };
        ShareableKey(SecretString::from(s))
    }
    /// Parse a presented key of the given flavor; `None` for anything malformed.
    pub fn parse(s: &str, flavor: CodeApi) -> Option<ShareableKey> {
        let ok = match flavor {
            CodeApi::Native => s
                .strip_prefix("otp_")
                .is_some_and(|r| r.len() == 22 && r.bytes().all(|b| b.is_ascii_alphanumeric())),
            CodeApi::Compat => s.len() == 10 && s.bytes().all(|b| b.is_ascii_alphabetic()),
        };
        ok.then(|| ShareableKey(SecretString::from(s.to_string())))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_are_distinct() {
        let a = ShareableKey::generate(CodeApi::Native);
        let b = ShareableKey::generate(CodeApi::Native);
        assert_ne!(a.expose(), b.expose());
        assert!(ShareableKey::parse(a.expose(), CodeApi::Native).is_some());
        assert!(ShareableKey::parse(a.expose(), CodeApi::Compat).is_none());
        let c = ShareableKey::generate(CodeApi::Compat);
        assert_eq!(c.expose().len(), 10);
        assert!(c.expose().bytes().all(|b| b.is_ascii_alphabetic()));
        assert!(ShareableKey::parse(c.expose(), CodeApi::Native).is_none());
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "otp_",
            "otp_short",
            "otp_!!!!!!!!!!!!!!!!!!!!!!",
            "xyz_aaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(ShareableKey::parse(bad, CodeApi::Native).is_none(), "{bad}");
        }
        assert!(ShareableKey::parse("abcdefghi1", CodeApi::Compat).is_none());
        assert!(TenantId::parse("tnt_x").is_none());
        assert!(TenantId::parse(TenantId::generate().as_str()).is_some());
    }

    #[test]
    fn secret_key_has_prefix_and_debug_is_redacted() {
        let k = SecretKey::generate();
        assert!(k.expose().starts_with("sk_"));
        assert_eq!(k.expose().len(), 35);
        assert!(!format!("{k:?}").contains(k.expose()));
    }
}
