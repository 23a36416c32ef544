//! Storing a relay's newest refresh token: a compare-and-swap on its sealed secrets, tried
//! again on a re-read of the same relay; and a relay re-sealed with a new refresh token.

use secrecy::{ExposeSecret, SecretString};

use crate::domain::oauth2::{OAuth2, OAuth2Secrets};
use crate::domain::tenant::{SmtpAccount, Tenant};
use crate::service::core::seals::sealed_as;
use crate::service::{Delivery, ServiceError};
use crate::storage::TenantSeal;

impl Delivery {
    /// Store the newest refresh token of each OAuth2 relay of `tenant` whose stored copy
    /// is behind (one the provider replaced): after a checked change, so that what is stored
    /// works in every process, not in this one's memory only. (A compare-and-swap, like a
    /// request's store: it takes no turn with the relay's requests.)
    pub(crate) async fn store_replaced_refresh_tokens(&self, tenant: &Tenant) {
        for (account, fallback) in [(&tenant.smtp, false), (&tenant.smtp_fallback, true)] {
            let Some((account, o)) = account.as_ref().and_then(|a| Some((a, a.oauth2.as_ref()?)))
            else {
                continue;
            };
            let key = sealed_as(&tenant.id, fallback);
            let Ok(secrets) = self.open_secrets(tenant, account, o, fallback).await else {
                continue;
            };
            let tokens = self.outbox.tokens();
            if let (true, Some(newest)) = tokens.newest(&key, secrets.refresh_token.as_deref()) {
                let newest = OAuth2Secrets {
                    client_secret: secrets.client_secret,
                    refresh_token: Some(newest),
                };
                self.store_refresh(tenant, (account, o, fallback), &key, &newest)
                    .await;
            }
        }
    }

    /// `account` (an OAuth2 relay of `tenant`) with its sealed secrets holding `refresh` as
    /// the refresh token.
    pub(crate) async fn with_refresh_token(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        fallback: bool,
        refresh: SecretString,
    ) -> Result<SmtpAccount, ServiceError> {
        let mut secrets = self
            .core
            .open_oauth2_secrets(tenant, account, o, fallback)
            .await?;
        secrets.refresh_token = Some(refresh.expose_secret().to_string());
        let password = self
            .core
            .seal_oauth2_secrets(tenant, account, o, fallback, &secrets)?;
        Ok(SmtpAccount {
            password,
            ..account.clone()
        })
    }

    /// Store the newest refresh token (`newest`, with the client secret the request
    /// used), sealed, as a compare-and-swap on the sealed blob the tenant read here holds
    /// (`account.password`). When another blob is stored — re-sealed by a data-key rotation
    /// meanwhile, or stored since the read — the relay is read again and, while it is the
    /// same relay (the same host, port, user, token endpoint and client) holding a refresh
    /// token the provider replaced on the way to `newest` (`key`: the relay's replaced
    /// tokens), the swap is made on that blob, with the
    /// client secret it holds (a new client secret keeps the client's refresh tokens),
    /// three times at most. A relay the tenant changed, or one holding a token this
    /// process never saw, is left alone; the newest token then lives in memory only.
    pub(super) async fn store_refresh(
        &self,
        tenant: &Tenant,
        (account, o, fallback): (&SmtpAccount, &OAuth2, bool),
        key: &str,
        newest: &OAuth2Secrets,
    ) {
        let which = if fallback {
            TenantSeal::FallbackPassword
        } else {
            TenantSeal::SmtpPassword
        };
        let (mut tenant, mut account, mut o) = (tenant.clone(), account.clone(), o.clone());
        let mut newest = newest.clone();
        for _ in 0..3 {
            let blob = match self
                .core
                .seal_oauth2_secrets(&tenant, &account, &o, fallback, &newest)
            {
                Ok(blob) => blob,
                Err(err) => {
                    tracing::error!(tenant_id = %tenant.id, error = %err, "a rotated OAuth2 refresh token could not be sealed; it is kept in memory");
                    return;
                }
            };
            let (id, stored) = (tenant.id.clone(), account.password.clone());
            match self
                .core
                .db(move |s| s.reseal_tenant_value(&id, which, &stored, &blob))
                .await
            {
                Ok(true) => {
                    tracing::info!(tenant_id = %tenant.id, "a rotated OAuth2 refresh token was stored");
                    return;
                }
                Err(err) => {
                    tracing::error!(tenant_id = %tenant.id, error = %err, "a rotated OAuth2 refresh token could not be stored; it is kept in memory");
                    return;
                }
                Ok(false) => {}
            }
            let again = match self.core.tenant(tenant.id.as_str()).await {
                Ok(now) => {
                    let relay = if fallback {
                        &now.smtp_fallback
                    } else {
                        &now.smtp
                    };
                    match relay.clone() {
                        Some(a) if same_relay(&a, &account) => {
                            let fresh = a.oauth2.clone().unwrap_or_else(|| o.clone());
                            let open = self
                                .core
                                .open_oauth2_secrets(&now, &a, &fresh, fallback)
                                .await;
                            let newest_rt = newest.refresh_token.as_deref().unwrap_or_default();
                            let tokens = self.outbox.tokens();
                            match open {
                                // Stored meanwhile, or a newer one on its chain (by
                                // another request): nothing to do.
                                Ok(s)
                                    if s.refresh_token.is_some()
                                        && tokens.newest(key, Some(newest_rt)).1
                                            == s.refresh_token =>
                                {
                                    return;
                                }
                                Ok(s)
                                    if tokens.behind(
                                        key,
                                        s.refresh_token.as_deref(),
                                        newest_rt,
                                    ) =>
                                {
                                    Some((now, a, fresh, s.client_secret))
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            let Some((now, a, fresh, client_secret)) = again else {
                tracing::warn!(tenant_id = %tenant.id, "a rotated OAuth2 refresh token was not stored: the relay changed meanwhile; it is kept in memory");
                return;
            };
            (tenant, account, o) = (now, a, fresh);
            newest.client_secret = client_secret;
        }
        tracing::warn!(tenant_id = %tenant.id, "a rotated OAuth2 refresh token was not stored: the relay's secrets kept changing; it is kept in memory");
    }
}

/// Whether two readings of a relay are the same relay, as its secrets are sealed for it:
/// the same host, port and user, and an OAuth2 login that did not move (the same token
/// endpoint, client and Entra tenant; a new scope keeps the secrets).
fn same_relay(a: &SmtpAccount, b: &SmtpAccount) -> bool {
    let same_login = match (&a.oauth2, &b.oauth2) {
        (Some(x), Some(y)) => !x.moved_from(y),
        _ => false,
    };
    a.host == b.host && a.port == b.port && a.username == b.username && same_login
}
