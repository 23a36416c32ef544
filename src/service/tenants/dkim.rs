//! DKIM per tenant (API.md §16.3): make a key pair (the private key sealed, bound to the
//! tenant, re-sealed by data-key rotation with the tenant's other secrets), show the record
//! to publish, remove every key; and the signer a message from an aligned sender is signed
//! with.

use std::collections::BTreeMap;

use secrecy::SecretString;

use crate::domain::dkim::{
    generate, keys_to_stored, next_selector, parse_domain, parse_selector, sender_domain,
    signing_key_for, DkimAlgorithm, DkimKey, MAX_KEYS,
};
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::mailer::DkimSigner;
use crate::service::core::seals::Seal;
use crate::service::{Delivery, ServiceError, Tenants};
use crate::storage::TenantChanges;

/// A key to make.
#[derive(Debug, Clone)]
pub struct NewDkimKey {
    pub domain: String,
    pub selector: Option<String>,
    pub algorithm: DkimAlgorithm,
}

impl Tenants {
    fn open_dkim_sync(&self, t: &Tenant) -> Result<BTreeMap<String, String>, ServiceError> {
        if t.dkim_sealed.is_empty() {
            return Ok(BTreeMap::new());
        }
        let plain = Seal::Dkim { tenant: &t.id }.open(&self.core.keyring.get(), &t.dkim_sealed)?;
        serde_json::from_slice(&plain)
            .map_err(|_| ServiceError::Internal("unreadable DKIM keys".into()))
    }

    /// Make a key; answers the key (its record).
    pub async fn create_dkim_key(
        &self,
        id: &TenantId,
        k: NewDkimKey,
    ) -> Result<DkimKey, ServiceError> {
        let domain = parse_domain(&k.domain).map_err(|e| ServiceError::Invalid(vec![e]))?;
        let chosen = k
            .selector
            .as_deref()
            .map(parse_selector)
            .transpose()
            .map_err(|e| ServiceError::Invalid(vec![e]))?;
        let algorithm = k.algorithm;
        // RSA-2048 takes a moment: off the async workers.
        let (public, private) = tokio::task::spawn_blocking(move || generate(algorithm))
            .await
            .map_err(|e| ServiceError::Internal(format!("key generation: {e}")))?
            .map_err(ServiceError::Internal)?;
        let now = self.core.now();
        // Opened once here, so a data key another process rotated in is loaded before the
        // change below opens the keys again.
        let t = self.core.tenant(id.as_str()).await?;
        if !t.dkim_sealed.is_empty() {
            self.core
                .open(&Seal::Dkim { tenant: &t.id }, &t.dkim_sealed)
                .await?;
        }
        let made = std::sync::Mutex::new(None);
        self.change_tenant(id, |current| {
            if current.dkim.len() >= MAX_KEYS {
                return Err(ServiceError::rule(
                    "selector",
                    format!("a tenant holds at most {MAX_KEYS} DKIM keys: DELETE them and make one again"),
                ));
            }
            let selector = chosen.clone().unwrap_or_else(|| next_selector(&current.dkim));
            if current.dkim.iter().any(|x| x.selector == selector) {
                return Err(ServiceError::Conflict(
                    "a DKIM key with this selector exists: choose another selector to rotate",
                ));
            }
            let key = DkimKey {
                domain: domain.clone(),
                selector: selector.clone(),
                algorithm,
                public_key: public.clone(),
                // Strictly newer than every key, so the newest signs.
                created_at: current
                    .dkim
                    .iter()
                    .map(|x| x.created_at + 1)
                    .max()
                    .unwrap_or(now)
                    .max(now),
            };
            let mut private_keys = self.open_dkim_sync(current)?;
            private_keys.insert(selector, private.clone());
            let json = serde_json::to_vec(&private_keys)
                .map_err(|e| ServiceError::Internal(format!("DKIM keys encoding: {e}")))?;
            let sealed = self.core.seal(&Seal::Dkim { tenant: &current.id }, &json)?;
            let mut keys = current.dkim.clone();
            keys.push(key.clone());
            if let Ok(mut m) = made.lock() {
                *m = Some(key);
            }
            Ok(TenantChanges {
                dkim: Some((keys_to_stored(&keys), sealed)),
                ..TenantChanges::default()
            })
        })
        .await?;
        made.into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| ServiceError::Internal("no DKIM key made".into()))
    }

    /// Remove every key: messages are no longer signed.
    pub async fn delete_dkim_keys(&self, id: &TenantId) -> Result<(), ServiceError> {
        let t = self.core.tenant(id.as_str()).await?;
        if t.dkim.is_empty() {
            return Err(ServiceError::DkimNotFound);
        }
        self.change_tenant(id, |_| {
            Ok(TenantChanges {
                dkim: Some((String::new(), Vec::new())),
                ..TenantChanges::default()
            })
        })
        .await?;
        Ok(())
    }
}

impl Delivery {
    /// The key a message from `from` is signed with: the newest of those the sender's
    /// domain aligns with. A key that cannot be opened here now (the database away, or a
    /// keyring this instance's master key does not open) is `Unavailable`: the message
    /// waits rather than leave unsigned. One that cannot be decrypted at all signs nothing
    /// (logged).
    pub(crate) async fn dkim_signer(
        &self,
        tenant: &Tenant,
        from: &str,
    ) -> Result<Option<DkimSigner>, ServiceError> {
        let Some(key) = sender_domain(from).and_then(|d| signing_key_for(&tenant.dkim, &d)) else {
            return Ok(None);
        };
        let plain = match self
            .core
            .open(&Seal::Dkim { tenant: &tenant.id }, &tenant.dkim_sealed)
            .await
        {
            Ok(p) => p,
            Err(e @ ServiceError::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::error!(tenant_id = %tenant.id, error = %e, "the tenant's DKIM keys cannot be decrypted; the message goes unsigned");
                return Ok(None);
            }
        };
        let Ok(mut keys) = serde_json::from_slice::<BTreeMap<String, String>>(&plain) else {
            return Ok(None);
        };
        Ok(keys.remove(&key.selector).map(|private| DkimSigner {
            domain: key.domain.clone(),
            selector: key.selector.clone(),
            algorithm: key.algorithm,
            private: SecretString::from(private),
        }))
    }
}
