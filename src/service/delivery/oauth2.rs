//! OAuth2 access tokens for SMTP relays (API.md §15.1): one cache entry per relay, one
//! request to the token endpoint at a time per relay (many messages waiting for a token
//! share one), a token kept until 60 s before it expires, fetched anew once after an AUTH
//! refusal, and a refresh token the provider rotates stored sealed at once — also when a
//! data-key rotation re-sealed the relay's secrets meanwhile — and used from memory, and
//! stored again, while a stored copy still holds a token the provider replaced. The token endpoint is reached through the
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
}

#[derive(Default)]
struct Entry {
    /// The relay's settings version the entry is for.
    version: i64,
    token: Option<(SecretString, Instant)>,
    /// When that token came.
    fetched: Option<Instant>,
    /// The refresh tokens the provider rotated while this process used the relay.
    rotated: Option<Rotated>,
}

/// A relay's refresh tokens as this process saw the provider rotate them: the newest, and
/// those it replaced. A stored copy that holds one of the replaced ones is behind — its
/// store failed, or was lost to a concurrent change — so the newest is used instead, and
/// stored again. Matched by the tokens themselves, not by their sealed bytes, which a
/// data-key rotation changes.
struct Rotated {
    /// Oldest first.
    retired: Vec<SecretString>,
    newest: SecretString,
}

impl Rotated {
    /// Whether a stored copy's refresh token is one the provider replaced.
    fn retires(&self, stored: Option<&str>) -> bool {
        stored.is_some_and(|t| self.retired.iter().any(|r| r.expose_secret() == t))
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

/// The refresh token to send: the stored one, unless it is one the provider replaced (then
/// the newest this process saw; `true`: the stored copy is behind).
fn newest_refresh(e: &Entry, stored: Option<&str>) -> (bool, Option<String>) {
    match e.rotated.as_ref().filter(|r| r.retires(stored)) {
        Some(r) => (true, Some(r.newest.expose_secret().to_string())),
        None => (false, stored.map(str::to_string)),
    }
}

/// The relay's replaced refresh tokens after a request that sent `sent` and was answered
/// `answered`: `None` when nothing is to be stored (no rotation, and the stored copy was not
/// behind). The chain goes on from the token sent (the newest this process saw), so a read
/// older than the last rotation is still known to be behind; the newest
/// [`RETIRED_KEPT`] are kept.
fn advance(
    e: &Entry,
    sent: Option<&str>,
    answered: Option<String>,
    behind: bool,
) -> Option<Rotated> {
    let sent = sent?;
    let newest = answered.unwrap_or_else(|| sent.to_string());
    let rotated_now = newest != sent;
    if !rotated_now && !behind {
        return None;
    }
    let mut retired = match &e.rotated {
        Some(r) if behind || r.newest.expose_secret() == sent => r.retired.clone(),
        _ => Vec::new(),
    };
    if rotated_now {
        retired.push(SecretString::from(sent.to_string()));
    }
    let over = retired.len().saturating_sub(RETIRED_KEPT);
    retired.drain(..over);
    Some(Rotated {
        retired,
        newest: SecretString::from(newest),
    })
}

impl Tokens {
    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut map = self.by_relay.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key.to_string()).or_default())
    }

    /// Forget the tokens of a tenant's relays (its settings changed, it was deleted).
    pub fn forget(&self, tenant: &str) {
        let own = format!("{tenant}/");
        self.by_relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| k != tenant && !k.starts_with(&own));
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
            let e = entry.lock().await;
            if let Some((token, until)) = &e.token {
                if e.version == tenant.smtp_version && Instant::now() < *until {
                    return Ok(token.clone());
                }
            }
        }
        let (this, tenant, account, o, key) = (
            self.clone(),
            tenant.clone(),
            account.clone(),
            o.clone(),
            key.to_string(),
        );
        // A fresh token asked for now: one that comes after this moment will do (several
        // messages refused at AUTH together need one new token, not one each).
        let asked = fresh.then(Instant::now);
        let request = tokio::spawn(async move {
            this.fetch_oauth2_token(&tenant, &account, &o, (&key, fallback), asked)
                .await
        });
        request.await.unwrap_or_else(|_| {
            Err(token_failed(
                FailureKind::Transient,
                "the token request ended before its answer",
                "oauth2_unavailable",
            ))
        })
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
        // A read of the relay older than the entry's (a message read before a change) uses
        // no token of the entry, nor leaves its own there. The rotated refresh tokens stay
        // across versions: they are known by the tokens themselves.
        let stale = tenant.smtp_version < e.version;
        if tenant.smtp_version > e.version {
            e.version = tenant.smtp_version;
            (e.token, e.fetched) = (None, None);
        }
        if let Some((token, until)) = e.token.as_ref().filter(|_| !stale) {
            let new_enough = match fresh_after {
                None => true,
                Some(asked) => e.fetched.is_some_and(|at| at > asked),
            };
            if new_enough && Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let secrets = self
            .core.open_oauth2_secrets(tenant, account, o, fallback)
            .await
            .map_err(|err| {
                tracing::error!(tenant_id = %tenant.id, error = %err, "a relay's OAuth2 secrets cannot be decrypted");
                DeliveryError::new(
                    DeliveryReason::Auth,
                    FailureKind::Unusable,
                    "the relay's OAuth2 secrets cannot be decrypted",
                )
            })?;
        let (behind, refresh) = newest_refresh(&e, secrets.refresh_token.as_deref());
        let answer = self
            .request_token(tenant, o, &secrets.client_secret, refresh.as_deref())
            .await?;
        let until = Instant::now() + Duration::from_secs(answer.lifetime).saturating_sub(EARLY);
        if !stale {
            e.token = Some((answer.access.clone(), until));
            e.fetched = Some(Instant::now());
        }
        // A new refresh token replaces the old one at once (the old one may stop working),
        // and a stored copy that is behind is brought up to the newest.
        if let Some(rotated) = advance(&e, refresh.as_deref(), answer.refresh, behind) {
            let newest = OAuth2Secrets {
                client_secret: secrets.client_secret.clone(),
                refresh_token: Some(rotated.newest.expose_secret().to_string()),
            };
            self.store_refresh(tenant, (account, o, fallback), &rotated.retired, &newest)
                .await;
            e.rotated = Some(rotated);
        }
        Ok(answer.access)
    }

    /// An access token for a relay as a check would save it (`check_relay`, API.md §18.8),
    /// and the refresh token to save with it when the provider rotated the one sent (or the
    /// one the relay holds is one it replaced). Taken in turn with the relay's requests in
    /// use (`key`: its pool key), whose replaced refresh tokens it knows and extends; it
    /// neither caches its access token nor stores anything: the caller saves the relay with
    /// the refresh token answered.
    pub(crate) async fn check_oauth2_token(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        o: &OAuth2,
        (key, fallback): (&str, bool),
    ) -> Result<(SecretString, Option<SecretString>), DeliveryError> {
        let entry = self.outbox.tokens().entry(key);
        let mut e = entry.lock().await;
        let secrets = self
            .core
            .open_oauth2_secrets(tenant, account, o, fallback)
            .await
            .map_err(|err| {
                tracing::error!(tenant_id = %tenant.id, error = %err, "a relay's OAuth2 secrets cannot be decrypted");
                DeliveryError::new(
                    DeliveryReason::Auth,
                    FailureKind::Unusable,
                    "the relay's OAuth2 secrets cannot be decrypted",
                )
            })?;
        let (behind, refresh) = newest_refresh(&e, secrets.refresh_token.as_deref());
        let answer = self
            .request_token(tenant, o, &secrets.client_secret, refresh.as_deref())
            .await?;
        let save = advance(&e, refresh.as_deref(), answer.refresh, behind).map(|rotated| {
            let newest = rotated.newest.clone();
            e.rotated = Some(rotated);
            newest
        });
        Ok((answer.access, save))
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
    /// token the provider replaced (`retired`), the swap is made on that blob, with the
    /// client secret it holds (a new client secret keeps the client's refresh tokens),
    /// three times at most. A relay the tenant changed, or one holding a token this
    /// process never saw, is left alone; the newest token then lives in memory only.
    async fn store_refresh(
        &self,
        tenant: &Tenant,
        (account, o, fallback): (&SmtpAccount, &OAuth2, bool),
        retired: &[SecretString],
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
                            let behind = open.ok().filter(|s| {
                                retired
                                    .iter()
                                    .any(|r| s.refresh_token.as_deref() == Some(r.expose_secret()))
                            });
                            behind.map(|s| (now, a, fresh, s.client_secret))
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
