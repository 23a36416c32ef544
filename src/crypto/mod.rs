//! Cryptography: the envelope keyring, AES-256-GCM for stored secrets, lookup digests, argon2id.

pub mod cipher;
pub mod hashing;
pub mod id_mask;
pub mod keyring;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 keyed with the pepper, with a domain label: the stored form of
/// secret keys and shareable keys (an index, useless without the pepper).
pub fn lookup_digest(pepper: &[u8], label: &str, value: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(pepper) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time equality of two secrets of possibly different lengths.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    ha.ct_eq(&hb).into()
}
