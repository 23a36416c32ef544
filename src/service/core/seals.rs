//! Every secret a tenant row keeps sealed, in one place: what each is bound to (its AAD),
//! how it is sealed and opened — through the one helper that reloads the keyring when a
//! blob is under a data key this process has not loaded — and the list a data-key rotation
//! walks to re-seal them all.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use crate::crypto::cipher::{
    decrypt_password, decrypt_record, encrypt_password, encrypt_record, PasswordContext,
};
use crate::crypto::keyring::{KeyError, Keyring};
use crate::domain::keys::TenantId;
use crate::domain::oauth2::{OAuth2, OAuth2Secrets};
use crate::domain::provider::{Provider, ProviderKind};
use crate::domain::recipient::Channel;
use crate::domain::tenant::{SmtpAccount, Tenant};
use crate::service::{Core, ServiceError};
use crate::storage::TenantSeal;

/// The id a relay's secret is sealed under (bound into its AAD): the tenant's, or for its
/// fallback relay the tenant's marked as such, so the two blobs cannot stand in for each other.
pub(crate) fn sealed_as(id: &TenantId, fallback: bool) -> String {
    if fallback {
        format!("{}/fallback", id.as_str())
    } else {
        id.as_str().to_string()
    }
}

/// The kind an HTTP transport's signing secret is sealed as.
pub(crate) const HTTP_SECRET: &str = "http-transport-secret";
const OAUTH2: &str = "smtp-oauth2";
const PROVIDER: &str = "provider-secrets";
const DKIM: &str = "dkim-private-keys";

/// What one sealed value is bound to.
pub(crate) enum Seal<'a> {
    /// A relay's password: the tenant (as its fallback for the second relay), host, port
    /// and user.
    RelayPassword {
        sealed_as: String,
        account: &'a SmtpAccount,
    },
    /// A relay's OAuth2 secrets: the same, and the token endpoint, client and Entra tenant.
    RelayOAuth2 {
        sealed_as: String,
        account: &'a SmtpAccount,
        oauth2: &'a OAuth2,
    },
    /// A provider's secrets: the tenant, the channel and the kind.
    Provider {
        tenant: &'a TenantId,
        channel: Channel,
        kind: ProviderKind,
    },
    /// The HTTP transport's signing secret: the tenant.
    HttpSecret { tenant: &'a TenantId },
    /// The DKIM private keys (API.md §16.3): the tenant.
    Dkim { tenant: &'a TenantId },
}

/// Length-prefixed parts, so no two lists of parts read the same.
fn parts(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in items {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

impl<'a> Seal<'a> {
    /// The seal of a relay's secret (its password, or its OAuth2 secrets).
    pub fn relay(id: &TenantId, fallback: bool, account: &'a SmtpAccount) -> Seal<'a> {
        let sealed_as = sealed_as(id, fallback);
        match &account.oauth2 {
            Some(oauth2) => Seal::RelayOAuth2 {
                sealed_as,
                account,
                oauth2,
            },
            None => Seal::RelayPassword { sealed_as, account },
        }
    }

    fn password_context<'c>(sealed_as: &'c str, a: &'c SmtpAccount) -> PasswordContext<'c> {
        PasswordContext {
            tenant_id: sealed_as,
            host: a.host.as_str(),
            port: a.port,
            username: &a.username,
        }
    }

    /// (kind, tenant, id) of a sealed record (a relay's password is sealed with its own
    /// context instead).
    fn record(&self) -> Option<(&'static str, String, Vec<u8>)> {
        Some(match self {
            Seal::RelayOAuth2 {
                sealed_as,
                account: a,
                oauth2: o,
            } => {
                let port = a.port.to_string();
                let entra = o.entra_tenant.as_deref().unwrap_or("");
                (
                    OAUTH2,
                    sealed_as.clone(),
                    parts(&[
                        a.host.as_str(),
                        &port,
                        &a.username,
                        &o.token_url,
                        &o.client_id,
                        entra,
                    ]),
                )
            }
            Seal::Provider {
                tenant,
                channel,
                kind,
            } => (
                PROVIDER,
                tenant.as_str().to_string(),
                parts(&[channel.as_str(), kind.as_str()]),
            ),
            Seal::HttpSecret { tenant } => (HTTP_SECRET, tenant.as_str().to_string(), Vec::new()),
            Seal::Dkim { tenant } => (DKIM, tenant.as_str().to_string(), Vec::new()),
            Seal::RelayPassword { .. } => return None,
        })
    }

    pub fn seal(&self, ring: &Keyring, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Seal::RelayPassword { sealed_as, account } => encrypt_password(
                ring,
                &Self::password_context(sealed_as, account),
                &String::from_utf8_lossy(plain),
            ),
            _ => match self.record() {
                Some((kind, tenant, id)) => encrypt_record(ring, kind, &tenant, &id, plain),
                None => Err(KeyError::Unwrap),
            },
        }
    }

    pub fn open(&self, ring: &Keyring, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Seal::RelayPassword { sealed_as, account } => {
                decrypt_password(ring, &Self::password_context(sealed_as, account), blob)
                    .map(|p| p.expose_secret().as_bytes().to_vec())
            }
            _ => match self.record() {
                Some((kind, tenant, id)) => decrypt_record(ring, kind, &tenant, &id, blob),
                None => Err(KeyError::Unwrap),
            },
        }
    }
}

/// Every sealed value of a tenant row: its column, its blob and what it is bound to.
pub(crate) fn tenant_seals(t: &Tenant) -> Vec<(TenantSeal, &[u8], Seal<'_>)> {
    let mut out = Vec::new();
    if let Some(a) = &t.smtp {
        out.push((
            TenantSeal::SmtpPassword,
            a.password.as_slice(),
            Seal::relay(&t.id, false, a),
        ));
    }
    if let Some(f) = &t.smtp_fallback {
        out.push((
            TenantSeal::FallbackPassword,
            f.password.as_slice(),
            Seal::relay(&t.id, true, f),
        ));
    }
    if let Some(h) = &t.http {
        out.push((
            TenantSeal::HttpSecret,
            h.secret.as_slice(),
            Seal::HttpSecret { tenant: &t.id },
        ));
    }
    for (&channel, p) in &t.providers {
        out.push((
            TenantSeal::ProviderSecrets(channel),
            p.sealed.as_slice(),
            Seal::Provider {
                tenant: &t.id,
                channel,
                kind: p.kind,
            },
        ));
    }
    if !t.dkim_sealed.is_empty() {
        out.push((
            TenantSeal::DkimPrivate,
            t.dkim_sealed.as_slice(),
            Seal::Dkim { tenant: &t.id },
        ));
    }
    out
}

impl Core {
    /// Seal under the active data key.
    pub(crate) fn seal(&self, seal: &Seal<'_>, plain: &[u8]) -> Result<Vec<u8>, ServiceError> {
        Ok(seal.seal(&self.keyring.get(), plain)?)
    }

    /// Open a sealed value (reloading the keyring once for an unknown data key).
    pub(crate) async fn open(&self, seal: &Seal<'_>, blob: &[u8]) -> Result<Vec<u8>, ServiceError> {
        self.open_with_keyring(blob, |ring| seal.open(ring, blob))
            .await
    }

    pub(crate) fn seal_oauth2_secrets(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        oauth2: &OAuth2,
        fallback: bool,
        secrets: &OAuth2Secrets,
    ) -> Result<Vec<u8>, ServiceError> {
        self.seal_oauth2_for(&tenant.id, fallback, account, oauth2, secrets)
    }

    /// Seal a relay's OAuth2 secrets for the relay as it will be stored.
    pub(crate) fn seal_oauth2_for(
        &self,
        id: &TenantId,
        fallback: bool,
        account: &SmtpAccount,
        oauth2: &OAuth2,
        secrets: &OAuth2Secrets,
    ) -> Result<Vec<u8>, ServiceError> {
        let json = serde_json::to_vec(secrets)
            .map_err(|e| ServiceError::Internal(format!("OAuth2 secrets encoding: {e}")))?;
        self.seal(
            &Seal::RelayOAuth2 {
                sealed_as: sealed_as(id, fallback),
                account,
                oauth2,
            },
            &json,
        )
    }

    pub(crate) async fn open_oauth2_secrets(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        oauth2: &OAuth2,
        fallback: bool,
    ) -> Result<OAuth2Secrets, ServiceError> {
        let seal = Seal::RelayOAuth2 {
            sealed_as: sealed_as(&tenant.id, fallback),
            account,
            oauth2,
        };
        let plain = self.open(&seal, &account.password).await?;
        serde_json::from_slice(&plain)
            .map_err(|_| ServiceError::Internal("unreadable OAuth2 secrets".into()))
    }

    pub(crate) fn seal_provider_secrets(
        &self,
        id: &TenantId,
        channel: Channel,
        kind: ProviderKind,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, ServiceError> {
        let json = serde_json::to_vec(secrets)
            .map_err(|e| ServiceError::Internal(format!("provider secrets encoding: {e}")))?;
        self.seal(
            &Seal::Provider {
                tenant: id,
                channel,
                kind,
            },
            &json,
        )
    }

    pub(crate) async fn open_provider_secrets(
        &self,
        id: &TenantId,
        p: &Provider,
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        let seal = Seal::Provider {
            tenant: id,
            channel: p.kind.channel(),
            kind: p.kind,
        };
        let plain = self.open(&seal, &p.sealed).await?;
        serde_json::from_slice(&plain)
            .map_err(|_| ServiceError::Internal("unreadable provider secrets".into()))
    }
}
