//! Key operations for admins: re-wrap the keyring under a new master key, rotate the data
//! key (re-encrypting every sealed credential), and back up the database.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::crypto::cipher::{blob_version, decrypt_record, encrypt_record};
use crate::crypto::keyring::{KeyError, Keyring, WrappedKey, KIND_DATA};
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::service::core::seals::tenant_seals;
use crate::service::{Admin, ServiceError};
use crate::storage::{StoreError, TenantSeal};

/// What `keys rotate` did, per master key id.
#[derive(Debug, Default)]
pub struct RewrapReport {
    /// key id → rows re-wrapped from it to the active key
    pub rewrapped: BTreeMap<String, usize>,
    /// rows that were already under the active key
    pub already_active: usize,
    pub active_id: String,
}

#[derive(Debug, Default)]
pub struct DataKeyReport {
    pub active_version: u32,
    pub started_new: bool,
    pub reencrypted: usize,
    pub already_current: usize,
    /// Sealed values of tenants that could not be decrypted (left as they were): the
    /// tenant and which value.
    pub undecryptable: Vec<(String, TenantSeal)>,
    /// Webhook secrets re-encrypted under the active data key.
    pub webhook_secrets_reencrypted: usize,
    /// Tenants whose webhook secret could not be decrypted (left as it was).
    pub webhook_secrets_undecryptable: Vec<String>,
}

impl Admin {
    /// Re-wrap every keyring row that is under a previous master key with the active one.
    /// Each row is one atomic compare-and-swap, so an interrupted run simply resumes.
    pub async fn rotate_master_key(&self) -> Result<RewrapReport, ServiceError> {
        let rows = self.core.db(|s| s.keyring()).await?;
        let keys = &self.core.keyring;
        let (active, previous) = (keys.master(), keys.previous());
        let mut report = RewrapReport {
            active_id: active.id(),
            ..Default::default()
        };
        for row in rows {
            if row.kek_id == report.active_id {
                report.already_active += 1;
                continue;
            }
            let old = previous
                .iter()
                .find(|k| k.id() == row.kek_id)
                .ok_or_else(|| {
                    ServiceError::Internal(format!(
                        "key id {} is not in crypto.previous_master_keys",
                        row.kek_id
                    ))
                })?;
            let material = old.unwrap_key(&row.kind, row.version, &row.wrapped)?;
            let (old_id, was) = (row.kek_id.clone(), row.kek_id.clone());
            let rewrapped = WrappedKey {
                wrapped: active.wrap(&row.kind, row.version, &material)?,
                kek_id: report.active_id.clone(),
                ..row
            };
            if self
                .core
                .db(move |s| s.rewrap_key(&rewrapped, &old_id))
                .await?
            {
                *report.rewrapped.entry(was).or_default() += 1;
            } else {
                report.already_active += 1;
            }
        }
        Ok(report)
    }

    /// Start (or resume) a data-key rotation: a new data key becomes active and every sealed
    /// credential of a tenant (relay passwords and OAuth2 secrets, provider secrets, signing
    /// secrets) and every webhook secret is re-encrypted under it, one compare-and-swap each.
    ///
    /// Running servers load a new data key within a second (their keyring refresh): until
    /// then they may still seal a changed credential under the old one. So after adding a
    /// key the rotation waits that long before it reads, and reads again after each pass
    /// that lost a compare-and-swap to such a change (at most [`PASSES`] passes).
    pub async fn rotate_data_key(&self) -> Result<DataKeyReport, ServiceError> {
        let mut ring = self
            .core
            .keyring
            .reopen(&self.core.db(|s| s.keyring()).await?)?;
        let (tenants, secrets) = self.sealed_values().await?;
        let mut report = DataKeyReport::default();
        // A blob sealed under an older data key that still opens needs re-encrypting; one
        // that cannot be decrypted at all does not hold a rotation open (it is reported).
        let stale = tenants
            .iter()
            .flat_map(tenant_seals)
            .filter(|(_, blob, seal)| is_old(&ring, blob) && seal.open(&ring, blob).is_ok())
            .count()
            + secrets
                .iter()
                .filter(|(id, s)| is_old(&ring, s) && open_webhook_secret(&ring, id, s).is_ok())
                .count();
        if stale == 0 {
            let rows = self.core.db(|s| s.keyring()).await?;
            let next = rows
                .iter()
                .filter(|r| r.kind == KIND_DATA)
                .map(|r| r.version)
                .max()
                .unwrap_or(0)
                + 1;
            let row = Keyring::new_data_key(&self.core.keyring.master(), next)?;
            let now = self.core.now();
            // Another rotation run at the same moment may have added this version first:
            // then this run resumes that one's rotation.
            report.started_new = match self.core.db(move |s| Ok(s.add_data_key(&row, now))).await? {
                Ok(()) => true,
                Err(StoreError::Conflict(_)) => false,
                Err(e) => return Err(e.into()),
            };
            ring = self
                .core
                .keyring
                .reopen(&self.core.db(|s| s.keyring()).await?)?;
            tokio::time::sleep(KEYRING_SETTLE).await;
        }
        report.active_version = ring.active_data_version();
        let mut read = if report.started_new {
            self.sealed_values().await?
        } else {
            (tenants, secrets)
        };
        for pass in 0..PASSES {
            let lost = self
                .reseal_pass(&ring, &read, &mut report, pass == 0)
                .await?;
            if lost == 0 {
                break;
            }
            read = self.sealed_values().await?;
        }
        Ok(report)
    }

    /// Every tenant, and every webhook secret with its tenant, as stored now.
    async fn sealed_values(&self) -> Result<SealedValues, ServiceError> {
        let tenants = self.core.tenants().await?;
        let mut secrets = Vec::new();
        for t in &tenants {
            let id = t.id.clone();
            if let Some(w) = self.core.db(move |s| s.webhook(&id)).await? {
                secrets.push((t.id.clone(), w.secret));
            }
        }
        Ok((tenants, secrets))
    }

    /// Re-seal under the active data key what `read` holds under an older one. `first`: the
    /// pass whose counts of values already current and of undecryptable ones are reported
    /// (later passes only re-read what changed meanwhile). Returns how many
    /// compare-and-swaps found the value changed since it was read.
    async fn reseal_pass(
        &self,
        ring: &Keyring,
        (tenants, secrets): &SealedValues,
        report: &mut DataKeyReport,
        first: bool,
    ) -> Result<usize, ServiceError> {
        let mut lost = 0;
        for t in tenants {
            for (which, blob, seal) in tenant_seals(t) {
                // The HTTP transport's signing secret is counted with the webhook secrets;
                // relay and provider credentials with the passwords.
                let signing = which == TenantSeal::HttpSecret;
                if is_current(ring, blob) {
                    if !signing && first {
                        report.already_current += 1;
                    }
                    continue;
                }
                let Ok(plain) = seal.open(ring, blob) else {
                    if first {
                        report.undecryptable.push((t.id.to_string(), which));
                    }
                    continue;
                };
                let new = seal.seal(ring, &plain)?;
                let (id, old) = (t.id.clone(), blob.to_vec());
                if self
                    .core
                    .db(move |s| s.reseal_tenant_value(&id, which, &old, &new))
                    .await?
                {
                    if signing {
                        report.webhook_secrets_reencrypted += 1;
                    } else {
                        report.reencrypted += 1;
                    }
                } else {
                    lost += 1;
                }
            }
        }
        for (id, old) in secrets {
            if is_current(ring, old) {
                continue;
            }
            let Ok(plain) = open_webhook_secret(ring, id, old) else {
                if first {
                    report.webhook_secrets_undecryptable.push(id.to_string());
                }
                continue;
            };
            let kind = crate::service::events::webhooks::SECRET_KIND;
            let new = encrypt_record(ring, kind, id.as_str(), b"", &plain)?;
            let (id, old) = (id.clone(), old.clone());
            if self
                .core
                .db(move |s| s.reseal_webhook_secret(&id, &old, &new))
                .await?
            {
                report.webhook_secrets_reencrypted += 1;
            } else {
                lost += 1;
            }
        }
        Ok(lost)
    }

    /// Copy the live database to `path` with SQLite's `VACUUM INTO` (the live rows, one snapshot).
    pub async fn backup(&self, path: PathBuf) -> Result<(), ServiceError> {
        self.core.db_long(move |s| s.backup_to(&path)).await
    }
}

/// How long running servers take at most to load a data key another process added (their
/// keyring refresh runs every second), with a margin.
const KEYRING_SETTLE: std::time::Duration = std::time::Duration::from_millis(2_500);

/// Passes of a data-key rotation over fresh reads while values change under it.
const PASSES: usize = 3;

type SealedValues = (Vec<Tenant>, Vec<(TenantId, Vec<u8>)>);

/// Sealed under the active data key.
fn is_current(ring: &Keyring, blob: &[u8]) -> bool {
    blob_version(blob).map(|(v, _)| v) == Some(ring.active_data_version())
}

/// Sealed under a data key older than the active one (that the keyring still holds).
fn is_old(ring: &Keyring, blob: &[u8]) -> bool {
    blob_version(blob).is_some_and(|(v, _)| v != ring.active_data_version() && ring.has_data_key(v))
}

fn open_webhook_secret(ring: &Keyring, id: &TenantId, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
    let kind = crate::service::events::webhooks::SECRET_KIND;
    decrypt_record(ring, kind, id.as_str(), b"", blob)
}
