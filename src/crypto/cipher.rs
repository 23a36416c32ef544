//! AES-256-GCM under the active data key for what the database keeps secret: SMTP passwords
//! (AAD = tenant id ‖ host ‖ port ‖ username, so a blob moved to another row or host fails)
//! and queued messages, which hold a code (AAD = tenant id ‖ the code's key digest).
//! Blob = 0x01 ‖ data-key version ‖ nonce ‖ ciphertext ‖ tag.

use secrecy::SecretString;

use super::keyring::{open, seal, KeyError, Keyring};

const BLOB_VERSION: u8 = 1;

/// What a stored password is bound to.
pub struct PasswordContext<'a> {
    pub tenant_id: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub username: &'a str,
}

impl PasswordContext<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut out = b"otpmint-smtp-password-v1".to_vec();
        let port = self.port.to_string();
        for part in [self.tenant_id, self.host, port.as_str(), self.username] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

pub fn encrypt_password(
    ring: &Keyring,
    ctx: &PasswordContext<'_>,
    password: &str,
) -> Result<Vec<u8>, KeyError> {
    seal_active(ring, &ctx.aad(), password.as_bytes())
}

pub fn decrypt_password(
    ring: &Keyring,
    ctx: &PasswordContext<'_>,
    blob: &[u8],
) -> Result<SecretString, KeyError> {
    let plain = open_versioned(ring, &ctx.aad(), blob)?;
    String::from_utf8(plain)
        .map(SecretString::from)
        .map_err(|_| KeyError::Unwrap)
}

fn message_aad(tenant_id: &str, key_digest: &[u8]) -> Vec<u8> {
    let mut out = b"otpmint-outbox-message-v1".to_vec();
    out.extend_from_slice(&(tenant_id.len() as u32).to_be_bytes());
    out.extend_from_slice(tenant_id.as_bytes());
    out.extend_from_slice(key_digest);
    out
}

/// Seal a queued message (it holds a code) for its outbox row.
pub fn encrypt_message(
    ring: &Keyring,
    tenant_id: &str,
    key_digest: &[u8],
    message: &[u8],
) -> Result<Vec<u8>, KeyError> {
    seal_active(ring, &message_aad(tenant_id, key_digest), message)
}

pub fn decrypt_message(
    ring: &Keyring,
    tenant_id: &str,
    key_digest: &[u8],
    blob: &[u8],
) -> Result<Vec<u8>, KeyError> {
    open_versioned(ring, &message_aad(tenant_id, key_digest), blob)
}

fn record_aad(kind: &str, tenant_id: &str, id: &[u8]) -> Vec<u8> {
    let mut out = b"otpmint-record-v1".to_vec();
    for part in [kind.as_bytes(), tenant_id.as_bytes()] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(id);
    out
}

/// Seal a stored record of some `kind` (a webhook secret, a webhook event's body, a kept
/// idempotent answer) under the active data key, bound to its tenant and its id.
pub fn encrypt_record(
    ring: &Keyring,
    kind: &str,
    tenant_id: &str,
    id: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, KeyError> {
    seal_active(ring, &record_aad(kind, tenant_id, id), plain)
}

pub fn decrypt_record(
    ring: &Keyring,
    kind: &str,
    tenant_id: &str,
    id: &[u8],
    blob: &[u8],
) -> Result<Vec<u8>, KeyError> {
    open_versioned(ring, &record_aad(kind, tenant_id, id), blob)
}

/// Seal under the active data key: the blob names the key's version.
fn seal_active(ring: &Keyring, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    let version = ring.active_data_version();
    let cipher = ring
        .data_key(version)
        .ok_or(KeyError::Missing("data key"))?;
    let mut prefix = vec![BLOB_VERSION];
    prefix.extend_from_slice(&version.to_be_bytes());
    seal(cipher, aad, plain, &prefix)
}

/// Open a blob under the data key of the version it names.
fn open_versioned(ring: &Keyring, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (version, rest) = blob_version(blob).ok_or(KeyError::Unwrap)?;
    let cipher = ring.data_key(version).ok_or(KeyError::Unwrap)?;
    open(cipher, aad, rest).ok_or(KeyError::Unwrap)
}

/// The data-key version a blob was sealed with.
pub fn blob_version(blob: &[u8]) -> Option<(u32, &[u8])> {
    match blob.split_first() {
        Some((&BLOB_VERSION, rest)) if rest.len() >= 4 => {
            let (v, rest) = rest.split_at(4);
            Some((u32::from_be_bytes([v[0], v[1], v[2], v[3]]), rest))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::MasterKey;
    use secrecy::ExposeSecret;

    #[test]
    fn roundtrip_and_aad_binding() {
        let (ring, _) = Keyring::generate(&MasterKey::generate()).unwrap();
        let ctx = PasswordContext {
            tenant_id: "tnt_a",
            host: "smtp.example.com",
            port: 587,
            username: "u",
        };
        let blob = encrypt_password(&ring, &ctx, "hunter2").unwrap();
        assert!(!blob.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            decrypt_password(&ring, &ctx, &blob)
                .unwrap()
                .expose_secret(),
            "hunter2"
        );
        for other in [
            PasswordContext {
                tenant_id: "tnt_b",
                ..ctx
            },
            PasswordContext {
                host: "evil.example",
                ..ctx
            },
            PasswordContext { port: 25, ..ctx },
            PasswordContext {
                username: "v",
                ..ctx
            },
        ] {
            assert!(decrypt_password(&ring, &other, &blob).is_err());
        }
    }

    #[test]
    fn messages_are_bound_to_their_row() {
        let (ring, _) = Keyring::generate(&MasterKey::generate()).unwrap();
        let blob = encrypt_message(&ring, "tnt_a", b"digest-1", b"code 123456").unwrap();
        assert!(!blob.windows(6).any(|w| w == b"123456"));
        assert_eq!(
            decrypt_message(&ring, "tnt_a", b"digest-1", &blob).unwrap(),
            b"code 123456"
        );
        assert!(decrypt_message(&ring, "tnt_b", b"digest-1", &blob).is_err());
        assert!(decrypt_message(&ring, "tnt_a", b"digest-2", &blob).is_err());
    }
}
