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
use crate::service::Delivery;
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
        if e.version != tenant.smtp_version {
            *e = Entry {
                version: tenant.smtp_version,
                ..Entry::default()
            };
        }
        if let Some((token, until)) = &e.token {
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
        // The newest refresh token: the stored one, unless it is one the provider replaced
        // (then the newest this process saw).
        let behind = e
            .rotated
            .as_ref()
            .filter(|r| r.retires(secrets.refresh_token.as_deref()))
            .map(|r| r.newest.expose_secret().to_string());
        let refresh = behind.clone().or_else(|| secrets.refresh_token.clone());
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            match &refresh {
                Some(rt) => form
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", rt),
                None => form.append_pair("grant_type", "client_credentials"),
            };
            form.append_pair("client_id", &o.client_id)
                .append_pair("client_secret", &secrets.client_secret);
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
        let token = SecretString::from(token.to_string());
        let lifetime = v
            .get("expires_in")
            .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
            .unwrap_or(3600)
            // The endpoint's word, bounded: no token is kept longer than a day (and a
            // lifetime past the clock's end cannot overflow it).
            .min(LONGEST_KEPT_SECS);
        let until = Instant::now() + Duration::from_secs(lifetime).saturating_sub(EARLY);
        e.token = Some((token.clone(), until));
        e.fetched = Some(Instant::now());
        // A new refresh token replaces the old one at once (the old one may stop working),
        // and a stored copy that is behind is brought up to the newest.
        if let Some(sent) = &refresh {
            // (An empty token is no token.)
            let answered = v
                .get("refresh_token")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty());
            let newest = answered.unwrap_or(sent);
            let rotated_now = newest != sent;
            if rotated_now || behind.is_some() {
                // The chain goes on from the token sent (the newest this process saw), so
                // a read older than the last rotation is still known to be behind.
                let mut retired = match &e.rotated {
                    Some(r) if behind.is_some() || r.newest.expose_secret() == sent => {
                        r.retired.clone()
                    }
                    _ => Vec::new(),
                };
                if rotated_now {
                    retired.push(SecretString::from(sent.clone()));
                }
                let over = retired.len().saturating_sub(RETIRED_KEPT);
                retired.drain(..over);
                let newest = OAuth2Secrets {
                    client_secret: secrets.client_secret.clone(),
                    refresh_token: Some(newest.to_string()),
                };
                self.store_refresh(tenant, (account, o, fallback), &retired, &newest)
                    .await;
                e.rotated = Some(Rotated {
                    retired,
                    newest: SecretString::from(newest.refresh_token.unwrap_or_default()),
                });
            }
        }
        Ok(token)
    }

    /// Store the newest refresh token (`newest`, with the client secret the request
    /// used), sealed, as a compare-and-swap on the sealed blob the tenant read here holds
    /// (`account.password`). When another blob is stored — re-sealed by a data-key rotation
    /// meanwhile, or stored since the read — the relay is read again and, while it is the
    /// same relay (the same host, port, user, token endpoint and client), with the same
    /// client secret and a refresh token the provider replaced (`retired`), the swap is
    /// made on that blob, three times at most. A relay the tenant changed, or one holding
    /// a token this process never saw, is left alone; the newest token then lives in
    /// memory only.
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
        for _ in 0..3 {
            let blob = match self
                .core
                .seal_oauth2_secrets(&tenant, &account, &o, fallback, newest)
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
                            let behind = open.is_ok_and(|s| {
                                s.client_secret == newest.client_secret
                                    && retired.iter().any(|r| {
                                        s.refresh_token.as_deref() == Some(r.expose_secret())
                                    })
                            });
                            behind.then_some((now, a, fresh))
                        }
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            let Some((now, a, fresh)) = again else {
                tracing::warn!(tenant_id = %tenant.id, "a rotated OAuth2 refresh token was not stored: the relay changed meanwhile; it is kept in memory");
                return;
            };
            (tenant, account, o) = (now, a, fresh);
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
