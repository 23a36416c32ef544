//! Tenant use cases: register, read, change, rotate secrets, delete, authenticate.

use std::sync::Arc;

use crate::crypto::lookup_digest;
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::{SecretKey, TenantId};
use crate::domain::links::{allowed_entry_refusal, ALLOWED_RETURN_URLS_MAX};
use crate::domain::locale::Locale;
use crate::domain::policy::{FieldError, Policy, PolicyPatch};
use crate::domain::sms_guard::SmsPatch;
use crate::domain::tenant::{Origin, Tenant, TenantName};
use crate::service::{ServiceError, Tenants};
use crate::storage::{StoreError, TenantChanges, Updated};

use crate::service::tenants::change_turns::{before_try, CHANGE_TRIES};
use crate::service::tenants::relay_accounts::take;
pub use crate::service::tenants::relay_accounts::{SmtpInput, SmtpPatch};

pub const SECRET_LABEL: &str = "secret-key";
#[derive(Debug)]
pub struct NewTenant {
    pub name: String,
    /// The relay; a tenant may have none (API.md §15.3).
    pub smtp: Option<SmtpInput>,
    pub policy: PolicyPatch,
    pub delivery: Option<DeliveryMode>,
    pub default_locale: Option<Locale>,
    pub origin: Origin,
    /// An existing secret to keep (OtpMint keys); otherwise one is generated.
    pub secret: Option<SecretKey>,
    /// A test tenant (API.md §13.2): sends nothing to any relay.
    pub test: bool,
    /// A second relay (API.md §12.1).
    pub smtp_fallback: Option<SmtpInput>,
    /// Its hosted pages and links may be used under open registration (API.md §17.6):
    /// false for a tenant that registered itself.
    pub pages_approved: bool,
    /// Check the relay before saving (API.md §18.8), counted in the share of relay checks
    /// and test messages in flight of this name: the client's, so the creates of one client
    /// share its four (a tenant being created has no share of its own yet).
    pub check_relay: Option<String>,
}

#[derive(Debug, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub smtp: Option<SmtpPatch>,
    pub policy: Option<PolicyPatch>,
    pub delivery: Option<DeliveryMode>,
    pub default_locale: Option<Locale>,
    /// Admin only.
    pub test: Option<bool>,
    /// `Some(None)` removes the fallback relay; `Some(Some(_))` changes it (or sets it: then
    /// every field but `tls` and `max_connections` is required).
    pub smtp_fallback: Option<Option<SmtpPatch>>,
    /// The prefixes magic links may return to (replaces the list).
    pub allowed_return_urls: Option<Vec<String>>,
    /// The hosted pages' colour: `Some(None)` back to the default.
    pub brand_color: Option<Option<String>>,
    /// `"on"` (mints to suppressed recipients are refused) or `"off"` (only recorded).
    pub suppression: Option<bool>,
    /// Admin only: approve the tenant's pages and links under open registration.
    pub pages_approved: Option<bool>,
    /// Connect, TLS and AUTH to the relay as changed before saving (API.md §18.8).
    pub check_relay: bool,
    /// The SMS fraud guard's settings to change (API.md §17.1).
    pub sms: Option<SmsPatch>,
}

impl Tenants {
    pub(crate) fn secret_digest(&self, key: &str) -> Vec<u8> {
        lookup_digest(self.core.keyring.get().pepper(), SECRET_LABEL, key)
    }

    pub async fn create_tenant(&self, t: NewTenant) -> Result<(Tenant, SecretKey), ServiceError> {
        let mut errs = Vec::new();
        let name = take(TenantName::parse(&t.name), &mut errs);
        t.policy.validate(&mut errs);
        let id = TenantId::generate();
        // A tenant may have no relay (API.md §15.3): it sends through a provider or its
        // HTTP transport, or it is a test tenant. A relay given is checked whatever the mode.
        let mut relays = [None, None];
        for (i, (input, fallback)) in [(&t.smtp, false), (&t.smtp_fallback, true)]
            .into_iter()
            .enumerate()
        {
            if let Some(input) = input {
                relays[i] = self
                    .account_change((&id, fallback), None, &SmtpPatch::from(input), &mut errs)
                    .await?;
            }
        }
        let (Some(name), true) = (name, errs.is_empty()) else {
            return Err(ServiceError::Invalid(errs));
        };
        let [smtp, smtp_fallback] = relays;
        let defaults = Policy {
            code_length: self.core.settings.load().otp.code_length,
            ttl_seconds: self.core.settings.load().otp.ttl_seconds,
            max_attempts: self.core.settings.load().otp.max_attempts,
        };
        let now = self.core.now();
        let mut row = Tenant {
            delivery: t.delivery.unwrap_or(DeliveryMode::Sync),
            default_locale: t.default_locale.unwrap_or_else(Locale::english),
            test: t.test,
            smtp_fallback,
            pages_approved: t.pages_approved,
            ..Tenant::new(id, name, t.origin, now, smtp, t.policy.apply(defaults))
        };
        // What a check leaves in memory (its relays' replaced refresh tokens) goes if the
        // tenant is not created.
        let not_created = |e: ServiceError| {
            self.delivery.outbox.forget_deleted(row.id.as_str());
            e
        };
        if let Some(share) = &t.check_relay {
            let checked = self
                .delivery
                .check_relays(&row, share)
                .await
                .map_err(not_created)?;
            // A refresh token the provider rotated for the check is the one saved.
            let (smtp, smtp_fallback) = (checked.smtp, checked.smtp_fallback);
            row.smtp = smtp.or(row.smtp);
            row.smtp_fallback = smtp_fallback.or(row.smtp_fallback);
        }
        let secret = t.secret.unwrap_or_else(|| SecretKey::generate_for(t.test));
        let digest = self.secret_digest(secret.expose());
        let stored = row.clone();
        self.store_insert(stored, digest, now)
            .await
            .map_err(not_created)?;
        Ok((row, secret))
    }

    async fn store_insert(
        &self,
        row: Tenant,
        digest: Vec<u8>,
        now: i64,
    ) -> Result<(), ServiceError> {
        // The store's own answer is kept whole: its conflict is a taken secret key.
        self.core
            .db(move |s| Ok(s.insert_tenant(&row, &digest, now)))
            .await?
            .map_err(|e| match e {
                StoreError::Conflict(_) => ServiceError::SecretTaken,
                other => other.into(),
            })
    }

    /// Apply a change. `by_tenant` limits it to name and SMTP.
    pub async fn update_tenant(
        &self,
        id: &str,
        p: TenantPatch,
        by_tenant: bool,
    ) -> Result<(Tenant, Option<SecretKey>), ServiceError> {
        if by_tenant
            && (p.policy.is_some()
                || p.enabled.is_some()
                || p.test.is_some()
                || p.pages_approved.is_some())
        {
            let field = if p.policy.is_some() {
                "policy"
            } else if p.enabled.is_some() {
                "enabled"
            } else if p.test.is_some() {
                "test"
            } else {
                "pages_approved"
            };
            return Err(ServiceError::field(field, "only the admin can change this"));
        }
        let applied = self.apply_patch(id, &p).await;
        if p.check_relay {
            // The check may have logged in with a refresh token its provider replaced, for a
            // relay the change did not touch, or for a change not saved: the relay's stored
            // copy is brought up to the newest (otherwise only this process would know it),
            // on a task of its own (a client that leaves does not cut it off).
            let (core, delivery) = (Arc::clone(&self.core), Arc::clone(&self.delivery));
            let (saved, id) = (
                applied.as_ref().ok().map(|(t, _)| t.clone()),
                id.to_string(),
            );
            let store = tokio::spawn(async move {
                let stands = match saved {
                    Some(t) => Some(t),
                    None => core.tenant(&id).await.ok(),
                };
                if let Some(t) = stands {
                    delivery.store_replaced_refresh_tokens(&t).await;
                }
            });
            let _ = store.await;
        }
        applied
    }

    /// [`Tenants::update_tenant`]'s change, applied to the latest stored tenant: a
    /// concurrent change (another PATCH, a data-key rotation re-encrypting the password)
    /// moves its version on, and this change is made again on what it wrote (API.md §6.30).
    async fn apply_patch(
        &self,
        id: &str,
        p: &TenantPatch,
    ) -> Result<(Tenant, Option<SecretKey>), ServiceError> {
        let _turn = self.changes.turn(id).await;
        for n in 0..CHANGE_TRIES {
            before_try(n).await;
            let current = self.core.tenant(id).await?;
            let mut changes = self.tenant_changes(&current, p).await?;
            if p.check_relay {
                let mut candidate = current.clone();
                if let Some(s) = &changes.smtp {
                    candidate.smtp = Some(s.clone());
                }
                if let Some(f) = &changes.smtp_fallback {
                    candidate.smtp_fallback = f.clone();
                }
                let checked = self
                    .delivery
                    .check_relays(&candidate, candidate.id.as_str())
                    .await?;
                // A refresh token the provider rotated for the check of a relay this change
                // sets is the one saved; one of a relay it leaves as it is is stored after
                // (`update_tenant`), as a re-seal, not as a change of the relay.
                if let (Some(a), Some(_)) = (checked.smtp, &changes.smtp) {
                    changes.smtp = Some(a);
                }
                if let (Some(a), Some(Some(_))) = (checked.smtp_fallback, &changes.smtp_fallback) {
                    changes.smtp_fallback = Some(Some(a));
                }
            }
            // A test tenant made live (API.md §17.4): its `sk_test_` keys stop in the same
            // change, and a new `sk_` key is shown once. A live tenant made a test tenant
            // gets an `sk_test_` key, shown once (API.md §13.2: its key starts `sk_test_`);
            // its live keys keep working, so its backend is not cut off.
            let going_live = current.test && p.test == Some(false) && {
                let tid = current.id.clone();
                self.core.db(move |s| s.has_test_secrets(&tid)).await?
            };
            let going_test = !current.test && p.test == Some(true);
            let secret = (going_live || going_test).then(|| SecretKey::generate_for(going_test));
            changes.new_secret = secret.as_ref().map(|s| self.secret_digest(s.expose()));
            if let Some(row) = self.store_change(&current, changes).await? {
                return Ok((row, secret));
            }
        }
        Err(ServiceError::Conflict(
            "the tenant changed under this request again and again; try again",
        ))
    }

    /// Apply a change computed by `f` from the latest stored tenant, made again on the
    /// latest when another change came first (API.md §6.30).
    pub(super) async fn change_tenant(
        &self,
        id: &TenantId,
        f: impl Fn(&Tenant) -> Result<TenantChanges, ServiceError>,
    ) -> Result<Tenant, ServiceError> {
        let _turn = self.changes.turn(id.as_str()).await;
        for n in 0..CHANGE_TRIES {
            before_try(n).await;
            let current = self.core.tenant(id.as_str()).await?;
            if let Some(row) = self.store_change(&current, f(&current)?).await? {
                return Ok(row);
            }
        }
        Err(ServiceError::Conflict(
            "the tenant changed under this request again and again; try again",
        ))
    }

    /// Store a change of `current` if it is still the stored version (`None`: it is not);
    /// pooled sessions, breakers and tokens of transports it replaced are forgotten.
    async fn store_change(
        &self,
        current: &Tenant,
        changes: TenantChanges,
    ) -> Result<Option<Tenant>, ServiceError> {
        let transports = changes.transports_changed();
        let (tid, version, now) = (current.id.clone(), current.row_version, self.core.now());
        match self
            .core
            .db(move |s| s.update_tenant(&tid, &changes, version, now))
            .await?
        {
            Updated::Done(row) => {
                if transports {
                    self.core.mailer.forget(row.id.as_str());
                    self.delivery.outbox.forget(row.id.as_str());
                }
                Ok(Some(*row))
            }
            Updated::Missing => Err(ServiceError::TenantNotFound),
            Updated::Stale => Ok(None),
        }
    }

    /// What a patch changes in `current` (the stored tenant it applies to).
    async fn tenant_changes(
        &self,
        current: &Tenant,
        p: &TenantPatch,
    ) -> Result<TenantChanges, ServiceError> {
        let mut errs = Vec::new();
        let name = p
            .name
            .as_deref()
            .and_then(|n| take(TenantName::parse(n), &mut errs));
        if let Some(pp) = &p.policy {
            pp.validate(&mut errs);
        }
        if let Some(Some(c)) = &p.brand_color {
            if !crate::domain::grammar::BRAND_COLOR.matches(c) {
                errs.push(FieldError::new("branding.color", "must be #RRGGBB"));
            }
        }
        if let Some(urls) = &p.allowed_return_urls {
            if urls.len() > ALLOWED_RETURN_URLS_MAX {
                errs.push(FieldError::new(
                    "allowed_return_urls",
                    format!("at most {ALLOWED_RETURN_URLS_MAX} entries"),
                ));
            }
            for (i, u) in urls.iter().enumerate() {
                if let Some(why) = allowed_entry_refusal(u) {
                    errs.push(FieldError::new(format!("allowed_return_urls[{i}]"), why));
                }
            }
        }
        let smtp_row = match &p.smtp {
            Some(sp) => {
                let Some(relay) = self
                    .account_change((&current.id, false), current.smtp.as_ref(), sp, &mut errs)
                    .await?
                else {
                    return Err(ServiceError::Invalid(errs));
                };
                Some(relay)
            }
            None => None,
        };
        let smtp_fallback = match &p.smtp_fallback {
            Some(Some(sp)) => {
                let Some(fallback) = self
                    .account_change(
                        (&current.id, true),
                        current.smtp_fallback.as_ref(),
                        sp,
                        &mut errs,
                    )
                    .await?
                    .map(Some)
                else {
                    return Err(ServiceError::Invalid(errs));
                };
                Some(fallback)
            }
            Some(None) => Some(None),
            None => None,
        };
        let sms = match &p.sms {
            Some(patch) => match patch.apply(&current.sms) {
                Ok(s) => Some(s),
                Err(e) => {
                    errs.extend(e);
                    None
                }
            },
            None => None,
        };
        if !errs.is_empty() {
            return Err(ServiceError::Invalid(errs));
        }
        // Leaving test mode: the relay it will use now must pass the host policy. A tenant
        // with no way to send may be live (API.md §15.3): its mints answer 422
        // `channel_not_configured` until it has one.
        if current.test && p.test == Some(false) {
            if let Some(relay) = smtp_row.as_ref().or(current.smtp.as_ref()) {
                self.check_host(&relay.host, relay.port, relay.tls).await?;
            }
        }
        let changes = TenantChanges {
            name,
            enabled: p.enabled,
            smtp: smtp_row,
            policy: p.policy.as_ref().map(|pp| pp.apply(current.policy)),
            delivery: p.delivery,
            default_locale: p.default_locale.clone(),
            test: p.test,
            smtp_fallback,
            // Stored as given (shown back so); compared normalised (`allowed_return`).
            // Each prefix once, in the order given.
            allowed_return_urls: p.allowed_return_urls.as_ref().map(|urls| {
                let mut seen = std::collections::HashSet::new();
                urls.iter()
                    .filter(|u| seen.insert(u.as_str()))
                    .cloned()
                    .collect()
            }),
            brand_color: p
                .brand_color
                .as_ref()
                .map(|c| c.as_deref().unwrap_or("").to_ascii_lowercase()),
            providers: Default::default(),
            suppression: p.suppression,
            pages_approved: p.pages_approved,
            sms,
            dkim: None,
            new_secret: None,
        };
        Ok(changes)
    }

    pub async fn delete_tenant(&self, id: &str) -> Result<(), ServiceError> {
        let id = TenantId::parse(id).ok_or(ServiceError::TenantNotFound)?;
        let key = id.as_str().to_string();
        if self.core.db(move |s| s.delete_tenant(&id)).await? {
            self.core.mailer.forget(&key);
            self.delivery.outbox.forget_deleted(&key);
            Ok(())
        } else {
            Err(ServiceError::TenantNotFound)
        }
    }

    /// New secret key; the old one keeps working for `grace_seconds` (0..=86400).
    pub async fn rotate_secret(
        &self,
        id: &str,
        grace_seconds: u64,
    ) -> Result<SecretKey, ServiceError> {
        if grace_seconds > 86_400 {
            return Err(ServiceError::field(
                "grace_seconds",
                "must be between 0 and 86400",
            ));
        }
        let mut test = self.core.tenant(id).await?.test;
        let id = TenantId::parse(id).ok_or(ServiceError::TenantNotFound)?;
        // A test tenant's keys start `sk_test_` (API.md §13.2); one that goes live (or back)
        // while the key is made is read again.
        for _ in 0..5 {
            let secret = SecretKey::generate_for(test);
            let digest = self.secret_digest(secret.expose());
            let now = self.core.now();
            let until = now + (grace_seconds as i64) * 1000;
            let tid = id.clone();
            match self
                .core
                .db(move |s| s.rotate_secret(&tid, &digest, test, until, now))
                .await?
            {
                Some(true) => return Ok(secret),
                Some(false) => test = !test,
                None => return Err(ServiceError::TenantNotFound),
            }
        }
        Err(ServiceError::Conflict(
            "the tenant kept changing while its key was rotated; try again",
        ))
    }

    /// The enabled tenant owning this bearer secret. One indexed lookup of its HMAC digest,
    /// the same work for unknown, malformed and disabled keys.
    pub async fn authenticate(&self, presented: &str) -> Result<Tenant, ServiceError> {
        let digest = self.secret_digest(presented);
        let now = self.core.now();
        self.core
            .db(move |s| s.tenant_by_secret(&digest, now))
            .await?
            .ok_or(ServiceError::Unauthorized)
    }
}
