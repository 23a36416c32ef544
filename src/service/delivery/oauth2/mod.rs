//! OAuth2 access tokens for SMTP relays (API.md §15.1): one cache entry per relay, one
//! request to the token endpoint at a time per relay (many messages waiting for a token
//! share one), a token kept until 60 s before it expires, fetched anew once after an AUTH
//! refusal, and a refresh token the provider rotates stored sealed at once — also when a
//! data-key rotation re-sealed the relay's secrets meanwhile — and used from memory, and
//! stored again, while a stored copy still holds a token the provider replaced. A relay
//! check (`check_relay`) logs in with a token of its own and hands a rotated refresh
//! token to the change that saves the relay. The token endpoint is reached through the
//! webhooks' outbound client: their address policy, no redirects,
//! `delivery.http_timeout_seconds`.

mod endpoint;
mod store;
mod tokens;

use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::oauth2::{OAuth2, OAuth2Secrets};
use crate::domain::tenant::{SmtpAccount, Tenant};
use crate::service::delivery::transport::credentials_unopened;
use crate::service::Delivery;

use endpoint::token_failed;
use tokens::Cached;
pub(crate) use tokens::Tokens;

/// A token is used until this long before it expires.
const EARLY: Duration = Duration::from_secs(60);
/// The longest an access token is kept, whatever lifetime its endpoint gave it.
pub(super) const LONGEST_KEPT_SECS: u64 = 86_400;
/// Run a token request on a task of its own: a caller that stops waiting (its deadline
/// passed, its client left) does not cut it off between the endpoint issuing a new refresh
/// token — the old one may stop working then — and its being recorded and stored.
async fn on_own_task<T: Send + 'static>(
    request: impl std::future::Future<Output = Result<T, DeliveryError>> + Send + 'static,
) -> Result<T, DeliveryError> {
    tokio::spawn(request).await.unwrap_or_else(|_| {
        Err(token_failed(
            FailureKind::Transient,
            "the token request ended before its answer",
            "oauth2_unavailable",
        ))
    })
}

impl Delivery {
    /// An access token for the relay (`key`: its pool key), from the cache unless `fresh`.
    /// A request to the token endpoint runs on a task of its own: a caller that stops
    /// waiting (its deadline passed) does not cut it off between the endpoint issuing a new
    /// refresh token — the old one may stop working then — and its being stored. Such a
    /// request finishes outside `delivery.max_sessions` once its sender gave up (at most
    /// one per relay: requests of a relay take turns).
    pub(crate) async fn oauth2_token(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        (key, fallback): (&str, bool),
        fresh: bool,
    ) -> Result<SecretString, DeliveryError> {
        if !fresh {
            let entry = self.outbox.tokens().entry(key);
            let cached = entry.lock().await.usable(tenant.smtp_version, None);
            if let Some(token) = cached {
                return Ok(token);
            }
        }
        let (this, tenant, account, o, key) = self.owned(tenant, account, o, key);
        // A fresh token asked for now: one that comes after this moment will do (several
        // messages refused at AUTH together need one new token, not one each).
        let asked = fresh.then(Instant::now);
        on_own_task(async move {
            this.fetch_oauth2_token(&tenant, &account, &o, (&key, fallback), asked)
                .await
        })
        .await
    }

    /// Owned copies of a token request's parts, for a task of its own.
    fn owned(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        key: &str,
    ) -> (Delivery, Tenant, SmtpAccount, OAuth2, String) {
        (
            self.clone(),
            tenant.clone(),
            account.clone(),
            o.clone(),
            key.to_string(),
        )
    }

    /// [`Delivery::oauth2_token`]'s work: the cache (for a fresh token, one that came after
    /// `fresh_after`), else one request at a time per relay and what it rotates.
    async fn fetch_oauth2_token(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        (key, fallback): (&str, bool),
        fresh_after: Option<Instant>,
    ) -> Result<SecretString, DeliveryError> {
        let entry = self.outbox.tokens().entry(key);
        // One request per relay at a time: the others wait and take its token.
        let mut e = entry.lock().await;
        if let Some(token) = e.usable(tenant.smtp_version, fresh_after) {
            return Ok(token);
        }
        let secrets = self.open_secrets(tenant, account, o, fallback).await?;
        let tokens = self.outbox.tokens();
        let (behind, refresh) = tokens.newest(key, secrets.refresh_token.as_deref());
        let answer = self
            .request_token(tenant, o, &secrets.client_secret, refresh.as_deref())
            .await?;
        e.keep(Cached {
            version: tenant.smtp_version,
            token: answer.access.clone(),
            until: Instant::now() + Duration::from_secs(answer.lifetime).saturating_sub(EARLY),
            fetched: Instant::now(),
        });
        // A new refresh token replaces the old one at once (the old one may stop working),
        // and a stored copy that is behind is brought up to the newest.
        let answered = answer.refresh.as_deref();
        if let Some(newest) = tokens.answered(key, refresh.as_deref(), answered, behind) {
            let newest = OAuth2Secrets {
                client_secret: secrets.client_secret.clone(),
                refresh_token: Some(newest),
            };
            self.store_refresh(tenant, (account, o, fallback), key, &newest)
                .await;
        }
        Ok(answer.access)
    }

    /// An access token for a relay as a check would save it (`check_relay`, API.md §18.8),
    /// and the refresh token to save with it when the provider replaced the one sent (or
    /// the one the relay holds is one it replaced). Taken in turn with the relay's requests
    /// in use (`key`: its pool key), and on a task of its own, as theirs; the replacement is
    /// remembered with theirs, but the access token is not cached and nothing is stored:
    /// the caller saves the relay with the refresh token answered.
    pub(crate) async fn check_oauth2_token(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        (key, fallback): (&str, bool),
    ) -> Result<(SecretString, Option<SecretString>), DeliveryError> {
        let (this, tenant, account, o, key) = self.owned(tenant, account, o, key);
        on_own_task(async move {
            let entry = this.outbox.tokens().entry(&key);
            let _turn = entry.lock().await;
            let secrets = this.open_secrets(&tenant, &account, &o, fallback).await?;
            let tokens = this.outbox.tokens();
            let (behind, refresh) = tokens.newest(&key, secrets.refresh_token.as_deref());
            let answer = this
                .request_token(&tenant, &o, &secrets.client_secret, refresh.as_deref())
                .await?;
            let answered = answer.refresh.as_deref();
            let save = tokens.answered(&key, refresh.as_deref(), answered, behind);
            Ok((answer.access, save.map(SecretString::from)))
        })
        .await
    }

    /// A relay's OAuth2 secrets, opened.
    pub(super) async fn open_secrets(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        fallback: bool,
    ) -> Result<OAuth2Secrets, DeliveryError> {
        self.core
            .open_oauth2_secrets(tenant, account, o, fallback)
            .await
            .map_err(|err| {
                let what = "the relay's OAuth2 secrets";
                credentials_unopened(&tenant.id, what, DeliveryReason::Auth, &err)
            })
    }
}
