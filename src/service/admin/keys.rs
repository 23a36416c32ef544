//! Key operations for admins: re-wrap the keyring under a new master key, rotate the data
//! key (re-encrypting every SMTP password), and back up the database.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::crypto::cipher::{blob_version, decrypt_record, encrypt_record};
use crate::crypto::keyring::{Keyring, WrappedKey, KIND_DATA};
use crate::service::core::seals::tenant_seals;
use crate::service::{Admin, ServiceError};
use crate::storage::TenantSeal;

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
    /// Tenants whose stored password could not be decrypted (left as they were).
    pub undecryptable: Vec<String>,
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
        let active = keys.master();
        let mut report = RewrapReport {
            active_id: active.id(),
            ..Default::default()
        };
        for row in rows {
            if row.kek_id == report.active_id {
                report.already_active += 1;
                continue;
            }
            let old = keys
                .previous()
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
    pub async fn rotate_data_key(&self) -> Result<DataKeyReport, ServiceError> {
        let mut ring = self
            .core
            .keyring
            .reopen(&self.core.db(|s| s.keyring()).await?)?;
        let tenants = self.core.tenants().await?;
        let mut secrets = Vec::new();
        for t in &tenants {
            let id = t.id.clone();
            if let Some(w) = self.core.db(move |s| s.webhook(&id)).await? {
                secrets.push((t.id.clone(), w.secret));
            }
        }
        // A blob sealed under an older data key still needs re-encrypting (one that cannot
        // be decrypted at all does not hold a rotation open).
        let stale = |ring: &Keyring| {
            let old = |blob: &[u8]| {
                blob_version(blob)
                    .is_some_and(|(v, _)| v != ring.active_data_version() && ring.has_data_key(v))
            };
            tenants
                .iter()
                .flat_map(tenant_seals)
                .filter(|(_, b, _)| old(b))
                .count()
                + secrets.iter().filter(|(_, s)| old(s)).count()
        };
        let mut report = DataKeyReport::default();
        if stale(&ring) == 0 {
            let rows = self.core.db(|s| s.keyring()).await?;
            let next = rows
                .iter()
                .filter(|r| r.kind == KIND_DATA)
                .map(|r| r.version)
                .max()
                .unwrap_or(0)
                + 1;
            let row = Keyring::new_data_key(self.core.keyring.master(), next)?;
            let now = self.core.now();
            self.core.db(move |s| s.add_data_key(&row, now)).await?;
            ring = self
                .core
                .keyring
                .reopen(&self.core.db(|s| s.keyring()).await?)?;
            report.started_new = true;
        }
        report.active_version = ring.active_data_version();
        for t in &tenants {
            for (which, blob, seal) in tenant_seals(t) {
                // The HTTP transport's signing secret is counted with the webhook secrets;
                // relay and provider credentials with the passwords.
                let signing = which == TenantSeal::HttpSecret;
                if blob_version(blob).map(|(v, _)| v) == Some(ring.active_data_version()) {
                    if !signing {
                        report.already_current += 1;
                    }
                    continue;
                }
                let Ok(plain) = seal.open(&ring, blob) else {
                    if signing {
                        report.webhook_secrets_undecryptable.push(t.id.to_string());
                    } else {
                        report.undecryptable.push(t.id.to_string());
                    }
                    continue;
                };
                let new = seal.seal(&ring, &plain)?;
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
                }
            }
        }
        for (id, old) in secrets {
            if blob_version(&old).map(|(v, _)| v) == Some(ring.active_data_version()) {
                continue;
            }
            let kind = crate::service::events::webhooks::SECRET_KIND;
            let Ok(plain) = decrypt_record(&ring, kind, id.as_str(), b"", &old) else {
                report.webhook_secrets_undecryptable.push(id.to_string());
                continue;
            };
            let new = encrypt_record(&ring, kind, id.as_str(), b"", &plain)?;
            if self
                .core
                .db(move |s| s.reseal_webhook_secret(&id, &old, &new))
                .await?
            {
                report.webhook_secrets_reencrypted += 1;
            }
        }
        Ok(report)
    }

    /// Copy the live database to `path` with SQLite's online backup API.
    pub async fn backup(&self, path: PathBuf) -> Result<(), ServiceError> {
        self.core.db_long(move |s| s.backup_to(&path)).await
    }
}
