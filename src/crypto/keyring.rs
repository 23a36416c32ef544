//! The envelope keyring: a master key (never stored) wraps the data keys and the pepper,
//! which live in the database.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use sha2::Sha256;

const WRAP_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a master key must be base64 of exactly 32 bytes")]
    BadMasterKey,
    #[error(
        "the master key does not match this database's keyring (the keyring was wrapped by key id {stored}, the configured key is {configured}); if that key was replaced, list the old one in crypto.previous_master_keys (and run `otpmint keys rotate`)"
    )]
    WrongMasterKey { stored: String, configured: String },
    #[error("the stored keyring is damaged or was wrapped by another key")]
    Unwrap,
    #[error("the keyring has no active {0}")]
    Missing(&'static str),
    #[error("encryption failed")]
    Encrypt,
}

/// A 32-byte key-encryption key. Debug shows only its id.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    pub fn from_base64(s: &str) -> Result<MasterKey, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| KeyError::BadMasterKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadMasterKey)?;
        Ok(MasterKey(arr))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A public identifier of this key (HMAC of a fixed label), stored beside what it wraps.
    pub fn id(&self) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(b"otpmint master key id v1");
        let out = mac.finalize().into_bytes();
        hex::encode(&out[..8])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }

    /// Wrap 32 bytes of key material; the AAD names what it is.
    pub fn wrap(&self, kind: &str, version: u32, material: &[u8]) -> Result<Vec<u8>, KeyError> {
        seal(
            &self.cipher(),
            &wrap_aad(kind, version),
            material,
            &[WRAP_VERSION],
        )
    }

    pub fn unwrap_key(&self, kind: &str, version: u32, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
        match blob.split_first() {
            Some((&WRAP_VERSION, rest)) => {
                open(&self.cipher(), &wrap_aad(kind, version), rest).ok_or(KeyError::Unwrap)
            }
            _ => Err(KeyError::Unwrap),
        }
    }
}

fn wrap_aad(kind: &str, version: u32) -> Vec<u8> {
    format!("otpmint-keyring|{kind}|{version}").into_bytes()
}

/// `prefix ‖ nonce ‖ ciphertext ‖ tag`, fresh 96-bit nonce.
pub(crate) fn seal(
    cipher: &Aes256Gcm,
    aad: &[u8],
    plaintext: &[u8],
    prefix: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| KeyError::Encrypt)?;
    let mut out = Vec::with_capacity(prefix.len() + 12 + ct.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Inverse of [`seal`] once the prefix is stripped.
pub(crate) fn open(cipher: &Aes256Gcm, aad: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
    if blob.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = blob.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// A row of the stored keyring.
#[derive(Debug, Clone)]
pub struct WrappedKey {
    pub kind: String,
    pub version: u32,
    pub wrapped: Vec<u8>,
    pub kek_id: String,
    pub active: bool,
}

pub const KIND_DATA: &str = "data";
pub const KIND_PEPPER: &str = "pepper";

/// The unwrapped keyring held in memory.
pub struct Keyring {
    data_keys: BTreeMap<u32, Aes256Gcm>,
    active_data: u32,
    pepper: [u8; 32],
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keyring(data keys {:?}, active {})",
            self.data_keys.keys(),
            self.active_data
        )
    }
}

impl Keyring {
    /// Fresh material for an empty database, wrapped by `master`.
    pub fn generate(master: &MasterKey) -> Result<(Keyring, Vec<WrappedKey>), KeyError> {
        let mut data = [0u8; 32];
        let mut pepper = [0u8; 32];
        OsRng.fill_bytes(&mut data);
        OsRng.fill_bytes(&mut pepper);
        let rows = vec![
            WrappedKey {
                kind: KIND_DATA.into(),
                version: 1,
                wrapped: master.wrap(KIND_DATA, 1, &data)?,
                kek_id: master.id(),
                active: true,
            },
            WrappedKey {
                kind: KIND_PEPPER.into(),
                version: 1,
                wrapped: master.wrap(KIND_PEPPER, 1, &pepper)?,
                kek_id: master.id(),
                active: true,
            },
        ];
        let mut data_keys = BTreeMap::new();
        data_keys.insert(1, Aes256Gcm::new((&data).into()));
        Ok((
            Keyring {
                data_keys,
                active_data: 1,
                pepper,
            },
            rows,
        ))
    }

    /// A fresh data key of `version`, wrapped by `master` (for `keys rotate-data-key`).
    pub fn new_data_key(master: &MasterKey, version: u32) -> Result<WrappedKey, KeyError> {
        let mut data = [0u8; 32];
        OsRng.fill_bytes(&mut data);
        Ok(WrappedKey {
            kind: KIND_DATA.into(),
            version,
            wrapped: master.wrap(KIND_DATA, version, &data)?,
            kek_id: master.id(),
            active: true,
        })
    }

    /// Unwrap stored rows with the active master key or one of the previous ones.
    pub fn open(
        rows: &[WrappedKey],
        active: &MasterKey,
        previous: &[MasterKey],
    ) -> Result<Keyring, KeyError> {
        let find = |id: &str| -> Option<&MasterKey> {
            std::iter::once(active)
                .chain(previous.iter())
                .find(|k| k.id() == id)
        };
        let mut data_keys = BTreeMap::new();
        let mut active_data = None;
        let mut pepper = None;
        for row in rows {
            let kek = find(&row.kek_id).ok_or_else(|| KeyError::WrongMasterKey {
                stored: row.kek_id.clone(),
                configured: active.id(),
            })?;
            let material = kek.unwrap_key(&row.kind, row.version, &row.wrapped)?;
            let arr: [u8; 32] = material.try_into().map_err(|_| KeyError::Unwrap)?;
            match row.kind.as_str() {
                KIND_DATA => {
                    data_keys.insert(row.version, Aes256Gcm::new((&arr).into()));
                    if row.active {
                        active_data = Some(row.version);
                    }
                }
                KIND_PEPPER if row.active => pepper = Some(arr),
                _ => {}
            }
        }
        Ok(Keyring {
            data_keys,
            active_data: active_data.ok_or(KeyError::Missing("data key"))?,
            pepper: pepper.ok_or(KeyError::Missing("pepper"))?,
        })
    }

    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }

    pub fn active_data_version(&self) -> u32 {
        self.active_data
    }

    pub fn has_data_key(&self, version: u32) -> bool {
        self.data_keys.contains_key(&version)
    }

    pub(crate) fn data_key(&self, version: u32) -> Option<&Aes256Gcm> {
        self.data_keys.get(&version)
    }
}

/// Reads the configured master key again: its file, which an operator rotating the key
/// writes the new key into (`None`: no such file, or not a key).
pub type Reread = Box<dyn Fn() -> Option<MasterKey> + Send + Sync>;

/// The unlocked keyring of a running process, replaceable when another process (the CLI's
/// `keys rotate-data-key`) adds a data key, and its master keys, replaceable when the CLI's
/// `keys rotate` wrapped the keyring under the key its file holds now (API.md §7.3).
pub struct Keys {
    current: std::sync::RwLock<std::sync::Arc<Keyring>>,
    /// The active master key and the previous ones.
    masters: std::sync::RwLock<(MasterKey, Vec<MasterKey>)>,
    reread: Option<Reread>,
    /// The stored keyring was last found wrapped by a master key this process does not
    /// hold (rotated by the CLI or another instance), and its key file holds none that
    /// opens it: secrets sealed under its newer data keys cannot be opened here until the
    /// file holds that key, or a restart with it.
    locked_out: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({:?})", self.get())
    }
}

impl Keys {
    pub fn new(ring: Keyring, master: MasterKey, previous: Vec<MasterKey>) -> Keys {
        Keys {
            current: std::sync::RwLock::new(std::sync::Arc::new(ring)),
            masters: std::sync::RwLock::new((master, previous)),
            reread: None,
            locked_out: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// With the master key read again by `reread` when the stored keyring is found wrapped
    /// by a key this process does not hold.
    pub fn rereading(self, reread: Reread) -> Keys {
        Keys {
            reread: Some(reread),
            ..self
        }
    }

    /// Whether the last reading of the stored keyring found it wrapped by a master key this
    /// process does not hold.
    pub fn locked_out(&self) -> bool {
        self.locked_out.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self) -> std::sync::Arc<Keyring> {
        match self.current.read() {
            Ok(g) => std::sync::Arc::clone(&g),
            Err(p) => std::sync::Arc::clone(&p.into_inner()),
        }
    }

    /// Unlock freshly read keyring rows and use them from now on. Rows wrapped by a master
    /// key this process does not hold (the CLI's `keys rotate`) are tried with the key its
    /// file holds now; if that opens them, it is the active key from then on (the one it
    /// replaces kept as a previous one, for rows a rotation has not reached yet).
    pub fn reopen(&self, rows: &[WrappedKey]) -> Result<std::sync::Arc<Keyring>, KeyError> {
        let (master, previous) = (self.master(), self.previous());
        let mut opened = Keyring::open(rows, &master, &previous);
        if matches!(opened, Err(KeyError::WrongMasterKey { .. })) {
            let reread = self.reread.as_ref().and_then(|read| read());
            if let Some(new) = reread.filter(|k| k.id() != master.id()) {
                let replaced = master.id();
                let mut older: Vec<MasterKey> = previous
                    .into_iter()
                    .filter(|k| k.id() != new.id())
                    .collect();
                if older.iter().all(|k| k.id() != replaced) {
                    older.push(master);
                }
                let again = Keyring::open(rows, &new, &older);
                if again.is_ok() {
                    if let Ok(mut g) = self.masters.write() {
                        // Unless another reopen took a key meanwhile.
                        if g.0.id() == replaced {
                            tracing::info!(key_id = %new.id(), "the master key file holds a new key, which opens the stored keyring: it is the active master key from now on");
                            *g = (new, older);
                        }
                    }
                    opened = again;
                }
            }
        }
        self.locked_out.store(
            matches!(opened, Err(KeyError::WrongMasterKey { .. })),
            std::sync::atomic::Ordering::Relaxed,
        );
        let ring = std::sync::Arc::new(opened?);
        if let Ok(mut g) = self.current.write() {
            *g = std::sync::Arc::clone(&ring);
        }
        Ok(ring)
    }

    /// The active master key.
    pub fn master(&self) -> MasterKey {
        match self.masters.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// The previous master keys (`crypto.previous_master_keys`, and one a new key file
    /// replaced).
    pub fn previous(&self) -> Vec<MasterKey> {
        match self.masters.read() {
            Ok(g) => g.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keyring_reopens_with_the_same_master_key_only() {
        let master = MasterKey::generate();
        let (ring, rows) = Keyring::generate(&master).unwrap();
        let again = Keyring::open(&rows, &master, &[]).unwrap();
        assert_eq!(ring.pepper(), again.pepper());
        let other = MasterKey::generate();
        assert!(matches!(
            Keyring::open(&rows, &other, &[]),
            Err(KeyError::WrongMasterKey { .. })
        ));
        // the old key as "previous" still opens it
        assert!(Keyring::open(&rows, &other, &[master]).is_ok());
    }

    /// Rows re-wrapped under a new master key open with the key the file holds now, which
    /// becomes the active one (the old one kept as previous); a file holding a key that does
    /// not open them leaves the process locked out, with the keys it had.
    #[test]
    fn a_keyring_rewrapped_elsewhere_opens_with_the_key_its_file_holds_now() {
        let (old, new, stray) = (
            MasterKey::generate(),
            MasterKey::generate(),
            MasterKey::generate(),
        );
        let (ring, rows) = Keyring::generate(&old).unwrap();
        let rewrapped: Vec<WrappedKey> = rows
            .iter()
            .map(|r| {
                let material = old.unwrap_key(&r.kind, r.version, &r.wrapped).unwrap();
                WrappedKey {
                    wrapped: new.wrap(&r.kind, r.version, &material).unwrap(),
                    kek_id: new.id(),
                    ..r.clone()
                }
            })
            .collect();
        let file = std::sync::Arc::new(std::sync::Mutex::new(stray.clone()));
        let read = std::sync::Arc::clone(&file);
        let keys = Keys::new(ring, old.clone(), vec![])
            .rereading(Box::new(move || Some(read.lock().unwrap().clone())));
        assert!(keys.reopen(&rewrapped).is_err());
        assert!(keys.locked_out());
        assert_eq!(keys.master().id(), old.id());
        *file.lock().unwrap() = new.clone();
        assert!(keys.reopen(&rewrapped).is_ok());
        assert!(!keys.locked_out());
        assert_eq!(keys.master().id(), new.id());
        assert_eq!(
            keys.previous()
                .iter()
                .map(MasterKey::id)
                .collect::<Vec<_>>(),
            [old.id()]
        );
        // Rows a rotation has not reached yet still open.
        assert!(keys.reopen(&rows).is_ok());
    }

    #[test]
    fn master_key_base64_roundtrip_and_rejects() {
        let k = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&k.to_base64()).unwrap().id(), k.id());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn a_blob_wrapped_for_one_kind_does_not_unwrap_as_another() {
        let k = MasterKey::generate();
        let blob = k.wrap(KIND_DATA, 1, &[7u8; 32]).unwrap();
        assert!(k.unwrap_key(KIND_PEPPER, 1, &blob).is_err());
        assert!(k.unwrap_key(KIND_DATA, 2, &blob).is_err());
        assert_eq!(k.unwrap_key(KIND_DATA, 1, &blob).unwrap(), vec![7u8; 32]);
    }
}
