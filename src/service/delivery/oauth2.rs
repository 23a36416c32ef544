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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::oauth2::{OAuth2, OAuth2Secrets};
use crate::domain::tenant::{SmtpAccount, Tenant};
use crate::outbound::ApiRequest;
use crate::service::core::seals::sealed_as;
use crate::service::{Delivery, ServiceError};
use crate::storage::TenantSeal;

/// A token is used until this long before it expires.
const EARLY: Duration = Duration::from_secs(60);
/// The longest an access token is kept, whatever lifetime its endpoint gave it.
const LONGEST_KEPT_SECS: u64 = 86_400;
/// How many replaced refresh tokens of a relay are remembered (the newest ones).
const RETIRED_KEPT: usize = 16;

/// This process's tokens, by relay.
#[derive(Default)]
pub(crate) struct Tokens {
    by_relay: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    /// The refresh tokens the provider replaced, by relay. Kept when the relay's settings
    /// change (a message read before the change still holds the old copy), dropped with
    /// the tenant.
    replaced: Mutex<HashMap<String, Replaced>>,
}

/// A relay's access tokens: that of the newest settings version read, and that of the
/// version before it (messages read before a change still send with those settings).
#[derive(Default)]
struct Entry {
    newest: Option<Cached>,
    previous: Option<Cached>,
}

/// An access token, for the relay's settings version it was fetched with.
struct Cached {
    version: i64,
    token: SecretString,
    /// Used until then.
    until: Instant,
    fetched: Instant,
}

impl Entry {
    /// A token for `version` still good (and, for a fresh one, fetched after
    /// `fresh_after`).
    fn usable(&self, version: i64, fresh_after: Option<Instant>) -> Option<SecretString> {
        [&self.newest, &self.previous]
            .into_iter()
            .flatten()
            .find(|c| c.version == version)
            .filter(|c| Instant::now() < c.until && fresh_after.is_none_or(|a| c.fetched > a))
            .map(|c| c.token.clone())
    }

    /// Keep a token fetched: the newest version's replaces the previous one's as the
    /// previous; one older than both is not kept.
    fn keep(&mut self, c: Cached) {
        match self.newest.as_ref().map(|n| n.version) {
            Some(v) if c.version > v => self.previous = self.newest.replace(c),
            Some(v) if c.version < v => {
                if self
                    .previous
                    .as_ref()
                    .is_none_or(|p| p.version <= c.version)
                {
                    self.previous = Some(c);
                }
            }
            _ => self.newest = Some(c),
        }
    }
}

/// A relay's refresh tokens the provider replaced while this process used it, each with
/// the token that replaced it (oldest first). A stored copy holding a replaced token is
/// behind — its store failed, or was lost to a concurrent change, or the copy was read
/// before it — so the newest its chain leads to is sent instead, and stored again. Matched
/// by the tokens themselves, not by their sealed bytes, which a data-key rotation changes;
/// chains of different logins (a check of new settings) stand side by side.
#[derive(Default)]
struct Replaced(Vec<(SecretString, SecretString)>);

impl Replaced {
    /// The newest token the replacements lead to from `token` (`token` itself when none
    /// replaced it).
    fn newest(&self, token: &str) -> String {
        let mut t = token.to_string();
        // (No token is replaced twice, and none that is live again stays replaced: the
        // chain has no cycle, and no more steps than pairs.)
        for _ in 0..self.0.len() {
            match self.0.iter().find(|(old, _)| old.expose_secret() == t) {
                Some((_, new)) => t = new.expose_secret().to_string(),
                None => break,
            }
        }
        t
    }

    /// The provider answered `new` to a request that sent `old`.
    fn record(&mut self, old: &str, new: &str) {
        // A token answered is live, whatever it replaced before.
        self.0
            .retain(|(o, _)| o.expose_secret() != old && o.expose_secret() != new);
        self.0.push((
            SecretString::from(old.to_string()),
            SecretString::from(new.to_string()),
        ));
        let over = self.0.len().saturating_sub(RETIRED_KEPT);
        self.0.drain(..over);
    }
}

/// What a token endpoint answered.
struct TokenAnswer {
    access: SecretString,
    /// Seconds, bounded by [`LONGEST_KEPT_SECS`].
    lifetime: u64,
    /// A new refresh token (never an empty one).
    refresh: Option<String>,
}

impl Tokens {
    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut map = self.by_relay.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key.to_string()).or_default())
    }

    /// The refresh token to send for a stored copy holding `stored`: the newest its
    /// replacements lead to (`true`: the copy is behind).
    fn newest(&self, key: &str, stored: Option<&str>) -> (bool, Option<String>) {
        let Some(stored) = stored else {
            return (false, None);
        };
        let map = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        let newest = map
            .get(key)
            .map_or_else(|| stored.to_string(), |r| r.newest(stored));
        (newest != stored, Some(newest))
    }

    /// Record a request's answer: `sent` replaced by `answered` when they differ. The
    /// refresh token to store, if any: the newest, when the provider replaced the one
    /// sent or the stored copy was `behind`.
    fn answered(
        &self,
        key: &str,
        sent: Option<&str>,
        answered: Option<&str>,
        behind: bool,
    ) -> Option<String> {
        let sent = sent?;
        let newest = answered.unwrap_or(sent);
        if newest != sent {
            let mut map = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().record(sent, newest);
        } else if !behind {
            return None;
        }
        Some(newest.to_string())
    }

    /// Whether a stored copy holding `stored` is behind `newest`: one of the tokens that
    /// led to it.
    fn behind(&self, key: &str, stored: Option<&str>, newest: &str) -> bool {
        let (behind, sent) = self.newest(key, stored);
        behind && sent.as_deref() == Some(newest)
    }

    /// Forget all of a deleted tenant's relays. (A change of a relay's settings needs no
    /// forgetting: its tokens are kept by settings version, and its replaced refresh
    /// tokens are still known to the messages read before the change.)
    pub fn forget(&self, tenant: &str) {
        let own = format!("{tenant}/");
        let theirs = |k: &String| k == tenant || k.starts_with(&own);
        self.by_relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !theirs(k));
        self.replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !theirs(k));
    }
}

/// The token endpoint's `error` codes kept as they are (RFC 6749 §5.2, and those of RFC 8628
/// and OpenID Connect that Microsoft and Google answer); any other value is `rejected`, so
/// an endpoint that echoes the request never puts a secret in a record or a log.
const OAUTH2_ERRORS: [&str; 12] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
    "interaction_required",
    "consent_required",
    "expired_token",
];

/// A token endpoint's failure as a delivery failure (`smtp_auth`, with the OAuth2 error
/// in `detail_code`).
fn token_failed(kind: FailureKind, detail: &str, code: &str) -> DeliveryError {
    DeliveryError::new(
        DeliveryReason::Auth,
        kind,
        format!("OAuth2 token: {detail}"),
    )
    .with_code(code)
}

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

    /// A relay's OAuth2 secrets, opened.
    async fn open_secrets(
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
                tracing::error!(tenant_id = %tenant.id, error = %err, "a relay's OAuth2 secrets cannot be decrypted");
                DeliveryError::new(
                    DeliveryReason::Auth,
                    FailureKind::Unusable,
                    "the relay's OAuth2 secrets cannot be decrypted",
                )
            })
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

    /// One request to the relay's token endpoint: with `refresh`, the refresh token grant,
    /// else client credentials.
    async fn request_token(
        &self,
        tenant: &Tenant,
        o: &OAuth2,
        client_secret: &str,
        refresh: Option<&str>,
    ) -> Result<TokenAnswer, DeliveryError> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            match refresh {
                Some(rt) => form
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", rt),
                None => form.append_pair("grant_type", "client_credentials"),
            };
            form.append_pair("client_id", &o.client_id)
                .append_pair("client_secret", client_secret);
            if !o.scope.is_empty() {
                form.append_pair("scope", &o.scope);
            }
            form.finish().into_bytes()
        };
        let timeout = Duration::from_secs(self.core.settings.load().delivery.http_timeout_seconds);
        let answer = self
            .events
            .hooks
            .client()
            .api(ApiRequest {
                url: &o.token_url,
                content_type: "application/x-www-form-urlencoded",
                headers: Vec::new(),
                body,
                timeout,
            })
            .await;
        let outcome = |o: &str| crate::metrics::inc(|m| &m.oauth2_token_requests, &[o]);
        let a = match answer {
            Ok(a) => a,
            Err("host_not_allowed") => {
                outcome("failed");
                return Err(token_failed(
                    FailureKind::Permanent,
                    "the token endpoint's host is not allowed",
                    "oauth2_host_not_allowed",
                ));
            }
            Err(cause) => {
                outcome("failed");
                return Err(token_failed(
                    FailureKind::Transient,
                    crate::outbound::no_answer(cause).0,
                    "oauth2_unavailable",
                ));
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
        if !(200..300).contains(&a.status) {
            let error = v
                .get("error")
                .and_then(|e| e.as_str())
                .and_then(|e| OAUTH2_ERRORS.iter().copied().find(|k| *k == e))
                .unwrap_or("rejected");
            return Err(match a.status {
                408 | 429 | 500..=599 => {
                    outcome("failed");
                    token_failed(
                        FailureKind::Transient,
                        &format!("the token endpoint answered {}", a.status),
                        "oauth2_unavailable",
                    )
                    .with_retry_after(a.retry_after)
                }
                _ => {
                    outcome("refused");
                    tracing::warn!(tenant_id = %tenant.id, status = a.status, error, "the OAuth2 token endpoint refused the relay's credentials");
                    token_failed(
                        FailureKind::Permanent,
                        &format!("the token endpoint answered {} {error}", a.status),
                        &format!("oauth2_{error}"),
                    )
                }
            });
        }
        let Some(token) = v.get("access_token").and_then(|t| t.as_str()) else {
            outcome("failed");
            return Err(token_failed(
                FailureKind::Transient,
                "the token endpoint's answer has no access_token",
                "oauth2_unavailable",
            ));
        };
        outcome("ok");
        let access = SecretString::from(token.to_string());
        let lifetime = v
            .get("expires_in")
            .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
            .unwrap_or(3600)
            // The endpoint's word, bounded: no token is kept longer than a day (and a
            // lifetime past the clock's end cannot overflow it).
            .min(LONGEST_KEPT_SECS);
        // (An empty token is no token.)
        let refresh = v
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(TokenAnswer {
            access,
            lifetime,
            refresh,
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
    async fn store_refresh(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_of_replaced_tokens_leads_to_the_newest_and_keeps_no_cycle() {
        let mut r = Replaced::default();
        assert_eq!(r.newest("a"), "a");
        r.record("a", "b");
        r.record("b", "c");
        // Another login's chain beside it.
        r.record("x", "y");
        assert_eq!(
            (r.newest("a"), r.newest("b"), r.newest("c")),
            ("c".into(), "c".into(), "c".into())
        );
        assert_eq!(r.newest("x"), "y");
        // A token answered again is live again: no cycle, and it leads nowhere.
        r.record("c", "a");
        assert_eq!(
            (r.newest("a"), r.newest("b"), r.newest("c")),
            ("a".into(), "a".into(), "a".into())
        );
        // The newest RETIRED_KEPT pairs are kept: the oldest starts go first.
        let mut long = Replaced::default();
        for i in 0..RETIRED_KEPT + 2 {
            long.record(&format!("t{i}"), &format!("t{}", i + 1));
        }
        let last = format!("t{}", RETIRED_KEPT + 2);
        assert_eq!(long.newest("t0"), "t0");
        assert_eq!(long.newest("t1"), "t1");
        assert_eq!(long.newest("t2"), last);
    }

    #[test]
    fn an_entry_keeps_the_newest_settings_token_and_the_one_before() {
        let cached = |version, token: &str| Cached {
            version,
            token: SecretString::from(token.to_string()),
            until: Instant::now() + Duration::from_secs(600),
            fetched: Instant::now(),
        };
        let got = |e: &Entry, v| e.usable(v, None).map(|t| t.expose_secret().to_string());
        let mut e = Entry::default();
        e.keep(cached(3, "v3"));
        e.keep(cached(4, "v4"));
        assert_eq!(
            (got(&e, 3), got(&e, 4)),
            (Some("v3".into()), Some("v4".into()))
        );
        // A read older than both is not kept; one of the previous version replaces its token.
        e.keep(cached(2, "v2"));
        e.keep(cached(3, "v3b"));
        assert_eq!((got(&e, 2), got(&e, 3)), (None, Some("v3b".into())));
        // A newer version moves the newest to previous.
        e.keep(cached(5, "v5"));
        assert_eq!(
            (got(&e, 3), got(&e, 4), got(&e, 5)),
            (None, Some("v4".into()), Some("v5".into()))
        );
        // A fresh token is one fetched after it was asked for.
        let asked = Instant::now() + Duration::from_secs(1);
        assert!(e.usable(5, Some(asked)).is_none());
    }
}
