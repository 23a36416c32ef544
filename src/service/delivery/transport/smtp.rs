//! A tenant's relay (API.md §4, §11, §15.1): the message rendered as MIME and sent through
//! the mailer's pooled sessions to the SSRF-checked address, logged in with the relay's
//! password or, for an OAuth2 relay, with SASL XOAUTH2 and a cached access token — fetched
//! anew once when the relay refuses it.

use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use super::{Accepted, Deadline, Outbound, Sending, Transport};
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind, AUTH_NEEDS_TLS};
use crate::domain::tenant::{SmtpAccount, Tenant};
use crate::mailer::{Outgoing, SmtpAuth, SmtpTarget};
use crate::service::core::seals::{sealed_as, Seal};
use crate::service::{Delivery, ServiceError};

/// The relays a check re-sealed with a refresh token their provider rotated for it (`None`:
/// save the relay as it was checked).
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub smtp: Option<SmtpAccount>,
    pub smtp_fallback: Option<SmtpAccount>,
}

/// A relay as the mailer sends to it (`pool`: its sessions' key).
fn target(tenant: &Tenant, account: &SmtpAccount, pool: String, auth: SmtpAuth) -> SmtpTarget {
    SmtpTarget {
        tenant_id: pool,
        version: tenant.smtp_version,
        host: account.host.as_str().to_string(),
        port: account.port,
        username: account.username.clone(),
        auth,
        from: account.from.as_str().to_string(),
        tls: account.tls,
    }
}

pub(crate) struct Relay<'a> {
    tenant: &'a Tenant,
    account: &'a SmtpAccount,
    fallback: bool,
    key: String,
}

impl<'a> Relay<'a> {
    pub fn new(tenant: &'a Tenant, account: &'a SmtpAccount, fallback: bool, key: String) -> Self {
        Relay {
            tenant,
            account,
            fallback,
            key,
        }
    }
}

impl Transport for Relay<'_> {
    fn name(&self) -> String {
        if self.fallback {
            "smtp_fallback"
        } else {
            "smtp"
        }
        .into()
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn ceiling(&self) -> u32 {
        self.account.max_connections
    }
    fn timeout(&self, s: &Delivery) -> Duration {
        s.core.mailer.timeout()
    }
    fn refused_at_once(&self) -> Option<DeliveryError> {
        self.account
            .logs_in_clear()
            .then(DeliveryError::login_in_clear)
    }
    fn send<'a>(
        &'a self,
        s: &'a Delivery,
        out: &'a Outbound<'a>,
        deadline: Deadline,
        sessions: usize,
    ) -> Sending<'a> {
        Box::pin(async move {
            let signer = s
                .dkim_signer(self.tenant, self.account.from.as_str())
                .await
                .map_err(|e| {
                    super::credentials_unopened(
                        &self.tenant.id,
                        "the tenant's DKIM key",
                        DeliveryReason::Auth,
                        &e,
                    )
                })?;
            let outgoing = Outgoing {
                to: out.to,
                subject: &out.msg.subject,
                text: &out.msg.text,
                html: out.msg.html.as_deref(),
                message_id: Some(&out.msg.message_id),
                dkim: signer.as_ref(),
                before_body: out.begin,
            };
            let bounds = (deadline.by, deadline.setup_by);
            s.send_through(
                self.tenant,
                self.account,
                self.fallback,
                &outgoing,
                bounds,
                sessions,
            )
            .await
            .map(|()| Accepted::default())
        })
    }
}

impl Delivery {
    /// Send one message through a relay, its credentials opened within the attempt's time
    /// (the session's share of it, when another transport waits behind: `bounds.1`). An
    /// OAuth2 relay that refuses its token (revoked, or expired early) is tried once more
    /// with a fresh one before the attempt fails as smtp_auth (API.md §15.1).
    async fn send_through(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        fallback: bool,
        outgoing: &Outgoing<'_>,
        bounds: (Instant, Option<Instant>),
        sessions: usize,
    ) -> Result<(), DeliveryError> {
        // Opening the credentials (an OAuth2 token: the wait for the relay's one token
        // request included) counts against the attempt's time like the session does.
        let by = bounds.1.unwrap_or(bounds.0);
        let in_time = |fresh| {
            tokio::time::timeout_at(by, self.relay_target(tenant, account, fallback, fresh))
        };
        let late = || {
            DeliveryError::transient(
                DeliveryReason::Auth,
                "the relay's credentials were not ready in time",
            )
            .with_code("oauth2_unavailable")
        };
        // A login never sent (tls = "none"): failed before any token or session (a
        // route's attempt stops earlier, at `refused_at_once`; this is `smtp test`'s).
        if account.logs_in_clear() {
            return Err(DeliveryError::login_in_clear());
        }
        let target = in_time(false).await.map_err(|_| late())??;
        match self
            .core
            .mailer
            .send(&target, outgoing, bounds, sessions)
            .await
        {
            // A login the relay refused (not one never sent: tls = "none").
            Err(e)
                if account.oauth2.is_some()
                    && e.reason == DeliveryReason::Auth
                    && e.kind == FailureKind::Permanent
                    && e.detail_code.as_deref() != Some(AUTH_NEEDS_TLS) =>
            {
                tracing::info!(tenant_id = %tenant.id, "the relay refused its OAuth2 token; fetching a new one");
                let target = in_time(true).await.map_err(|_| late())??;
                self.core
                    .mailer
                    .send(&target, outgoing, bounds, sessions)
                    .await
            }
            sent => sent,
        }
    }

    /// A relay as the mailer sends to it, its credentials opened: the password (a blob
    /// sealed under a data key this process has not seen reloads the keyring once), or an
    /// OAuth2 access token (cached; `fresh`: fetched anew). Unreadable credentials make the
    /// relay unusable here (the next transport is tried).
    pub(crate) async fn relay_target(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        fallback: bool,
        fresh: bool,
    ) -> Result<SmtpTarget, DeliveryError> {
        // The pool's key: the fallback relay's sessions are its own.
        let pool = sealed_as(&tenant.id, fallback);
        let auth = match &account.oauth2 {
            Some(o) => SmtpAuth::Xoauth2(
                self.oauth2_token(tenant, account, o, (&pool, fallback), fresh)
                    .await?,
            ),
            None => self.password_auth(tenant, account, fallback).await?,
        };
        Ok(target(tenant, account, pool, auth))
    }

    /// A relay's password, opened.
    async fn password_auth(
        &self,
        tenant: &Tenant,
        account: &SmtpAccount,
        fallback: bool,
    ) -> Result<SmtpAuth, DeliveryError> {
        let plain = self
            .core
            .open(
                &Seal::relay(&tenant.id, fallback, account),
                &account.password,
            )
            .await
            .map_err(|e| {
                let what = match fallback {
                    true => "the fallback relay's password",
                    false => "the relay's password",
                };
                super::credentials_unopened(&tenant.id, what, DeliveryReason::Auth, &e)
            })?;
        Ok(SmtpAuth::Password(SecretString::from(
            String::from_utf8(plain).unwrap_or_default(),
        )))
    }

    /// `check_relay` (API.md §18.8): connect, TLS and AUTH to the tenant's relay (and its
    /// fallback) as it would be saved, sending nothing; a failure is 422 with its reason.
    /// Each session counts in `delivery.max_sessions` and in the `share` of relay checks and
    /// test messages in flight (four: the tenant's, or a create's client's); the share full,
    /// or no session free within `smtp.timeout_seconds`, is 503 `overloaded`. An OAuth2 relay
    /// logs in with a token of its own (not cached, and not the relay's in use); when its
    /// provider rotated the refresh token for it, the answer holds the relay re-sealed with
    /// the new one, which is what must be saved.
    pub(crate) async fn check_relays(
        &self,
        tenant: &Tenant,
        share: &str,
    ) -> Result<Checked, ServiceError> {
        if tenant.smtp.is_none() {
            return Err(ServiceError::field(
                "check_relay",
                "there is no relay (smtp) to check",
            ));
        }
        // A login that would never be sent (tls = "none"): refused before any token
        // request, place or session.
        let relays = [&tenant.smtp, &tenant.smtp_fallback];
        if relays.into_iter().flatten().any(SmtpAccount::logs_in_clear) {
            tracing::warn!(tenant_id = %tenant.id, "the relay check failed: a relay set to tls = none has a username; nothing was saved");
            return Err(ServiceError::RelayCheck(
                DeliveryReason::Auth,
                Some(AUTH_NEEDS_TLS.into()),
            ));
        }
        let wait = Duration::from_secs(self.core.settings.load().smtp.timeout_seconds);
        let by = Instant::now() + wait;
        let Some(_place) = self.outbox.place_by(share, by).await else {
            tracing::warn!(tenant_id = %tenant.id, "no outbound session free for a relay check (the tenant's four, or delivery.max_sessions)");
            return Err(ServiceError::Overloaded);
        };
        let mut checked = Checked::default();
        let mut relays = [(&tenant.smtp, false), (&tenant.smtp_fallback, true)];
        // A relay whose check cannot spend anything (a password, client credentials) goes
        // first: a provider that rotates the refresh token on a login must not have done so
        // for a change that another relay's failed check then refuses.
        relays.sort_by_key(|(account, _)| {
            account
                .as_ref()
                .and_then(|a| a.oauth2.as_ref())
                .is_some_and(|o| o.refresh_token)
        });
        for (account, fallback) in relays {
            let Some(account) = account else { continue };
            let pool = sealed_as(&tenant.id, fallback);
            let auth = match &account.oauth2 {
                Some(o) => self
                    .check_oauth2_token(tenant, account, o, (&pool, fallback))
                    .await
                    .map(|(token, refresh)| (SmtpAuth::Xoauth2(token), refresh.map(|r| (o, r)))),
                None => self
                    .password_auth(tenant, account, fallback)
                    .await
                    .map(|a| (a, None)),
            };
            let rotated = match auth {
                Ok((auth, rotated)) => {
                    let target = target(tenant, account, pool, auth);
                    self.core.mailer.check(&target).await.map(|()| rotated)
                }
                Err(e) => Err(e),
            };
            let rotated = match rotated {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant.id, fallback, reason = e.reason.as_str(), detail = %e.detail, "the relay check failed; nothing was saved (a tenant being created is not, under this id)");
                    return Err(ServiceError::RelayCheck(e.reason, e.detail_code));
                }
            };
            if let Some((o, refresh)) = rotated {
                let resealed = self
                    .with_refresh_token(tenant, account, o, fallback, refresh)
                    .await?;
                if fallback {
                    checked.smtp_fallback = Some(resealed);
                } else {
                    checked.smtp = Some(resealed);
                }
            }
        }
        Ok(checked)
    }

    /// Send one test message through the tenant's relay (`otpmint smtp test`), OAuth2
    /// relays included; nothing is stored.
    pub async fn test_relay(&self, tenant: &Tenant, to: &str) -> Result<(), ServiceError> {
        let account = tenant
            .smtp
            .as_ref()
            .ok_or_else(|| ServiceError::field("smtp", "the tenant has no relay"))?;
        // The policy first, as saving the relay checks it: a refusal names the setting that
        // would allow it (API.md §18.8), which a failed send can only say in general.
        self.core
            .mailer
            .policy()
            .check(
                account.host.as_str(),
                account.port,
                account.tls == crate::mailer::TlsMode::None,
            )
            .await
            .map_err(ServiceError::SmtpPolicy)?;
        let signer = self.dkim_signer(tenant, account.from.as_str()).await?;
        let outgoing = Outgoing {
            to,
            subject: "otpmint SMTP test",
            text: "This is a test message from otpmint. No action is needed.\r\n",
            html: None,
            message_id: None,
            dkim: signer.as_ref(),
            before_body: None,
        };
        let by = Instant::now() + self.core.mailer.timeout();
        self.send_through(tenant, account, false, &outgoing, (by, None), 1)
            .await
            .map_err(|e| ServiceError::Delivery(e.reason, e.detail_code))
    }
}
