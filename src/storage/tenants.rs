//! The tenant aggregate: tenants, their secret keys (as digests) and their templates.

use std::collections::BTreeMap;

use super::cells::{template_from, tenant_from};
use super::engine::{args, Engine, Exec};
use super::sql::{self, step, Arg, Step};
use super::StoreError;
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::policy::Policy;
use crate::domain::provider::Provider;
use crate::domain::recipient::Channel;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{SmtpAccount, Tenant, TenantName, TransportUse};
use crate::domain::Millis;

/// Changes to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    pub name: Option<TenantName>,
    pub enabled: Option<bool>,
    pub smtp: Option<SmtpAccount>,
    pub policy: Option<Policy>,
    pub delivery: Option<DeliveryMode>,
    pub default_locale: Option<Locale>,
    pub test: Option<bool>,
    /// `Some(None)` removes the fallback relay.
    pub smtp_fallback: Option<Option<SmtpAccount>>,
    pub allowed_return_urls: Option<Vec<String>>,
    /// `#RRGGBB`, or empty for the default.
    pub brand_color: Option<String>,
    /// A channel's new provider (API.md §15.2); `None` removes it, a channel not named
    /// keeps its own.
    pub providers: BTreeMap<Channel, Option<Provider>>,
    /// Whether mints to suppressed recipients are refused (API.md §16.1).
    pub suppression: Option<bool>,
    /// Its pages approved under open registration (API.md §17.6).
    pub pages_approved: Option<bool>,
    /// Its SMS fraud guard settings (API.md §17.1).
    pub sms: Option<crate::domain::sms_guard::SmsSettings>,
    /// Its DKIM keys (public parts as stored JSON, and the sealed private keys; empty:
    /// none), API.md §16.3.
    pub dkim: Option<(String, Vec<u8>)>,
    /// A new secret key's digest that replaces every other at once (a test tenant made
    /// live: its `sk_test_` key stops, API.md §17.4).
    pub new_secret: Option<Vec<u8>>,
}

impl TenantChanges {
    /// Whether the change touches how the tenant's messages leave (its relays and
    /// providers): pooled sessions, windows and breakers of the old ones are forgotten.
    pub fn transports_changed(&self) -> bool {
        self.smtp.is_some() || self.smtp_fallback.is_some() || !self.providers.is_empty()
    }
}

impl TenantChanges {
    /// The statements that apply these changes, in order, once the version check
    /// ([`sql::tenants::CLAIM_VERSION`]) has passed in the same transaction. Both backends
    /// run this list as it is: a column is written here once.
    pub(crate) fn steps(&self, id: &TenantId, now: Millis) -> Vec<Step> {
        use sql::tenants as q;
        let id = || Arg::from(id.as_str());
        let mut s = Vec::new();
        if let Some(name) = &self.name {
            s.push(step(q::SET_NAME, [id(), name.as_str().into()]));
        }
        if let Some(enabled) = self.enabled {
            s.push(step(q::SET_ENABLED, [id(), enabled.into()]));
        }
        if let Some(a) = &self.smtp {
            s.push(relay_step(id(), Some(a)));
        }
        if let Some(f) = &self.smtp_fallback {
            s.push(fallback_step(id(), f.as_ref()));
        }
        for (channel, p) in &self.providers {
            s.push(provider_step(id(), *channel, p.as_ref()));
        }
        if self.smtp_fallback.is_some() || !self.providers.is_empty() {
            s.push(step(q::BUMP_TRANSPORTS, [id()]));
        }
        if let Some(ok) = self.pages_approved {
            s.push(step(q::SET_PAGES_APPROVED, [id(), ok.into()]));
        }
        if let Some((keys, private)) = &self.dkim {
            let private = (!private.is_empty()).then(|| private.clone());
            s.push(step(
                q::SET_DKIM,
                [id(), keys.clone().into(), private.into()],
            ));
        }
        if let Some(sms) = &self.sms {
            s.push(step(
                q::SET_SMS,
                [
                    id(),
                    crate::domain::sms_guard::countries_to_stored(&sms.allowed_countries).into(),
                    sms.trusted_days.into(),
                    sms.allow_fixed_line.into(),
                ],
            ));
        }
        if let Some(on) = self.suppression {
            s.push(step(q::SET_SUPPRESSION_OFF, [id(), (!on).into()]));
        }
        if let Some(color) = &self.brand_color {
            s.push(step(q::SET_BRAND_COLOR, [id(), color.clone().into()]));
        }
        if let Some(urls) = &self.allowed_return_urls {
            s.push(step(
                q::SET_ALLOWED_RETURN_URLS,
                [id(), urls.join("\n").into()],
            ));
        }
        if let Some(d) = self.delivery {
            s.push(step(q::SET_DELIVERY, [id(), d.as_str().into()]));
        }
        if let Some(p) = &self.policy {
            s.push(step(
                q::SET_POLICY,
                [
                    id(),
                    p.code_length.into(),
                    p.ttl_seconds.into(),
                    p.max_attempts.into(),
                ],
            ));
        }
        if let Some(l) = &self.default_locale {
            s.push(step(q::SET_DEFAULT_LOCALE, [id(), l.as_str().into()]));
        }
        if let Some(test) = self.test {
            s.push(step(q::SET_TEST, [id(), test.into()]));
        }
        // A live tenant keeps no test key (API.md §17.4), whatever was read before this
        // transaction; after `test`, the new key is a live one.
        if self.test == Some(false) {
            s.push(step(q::DROP_TEST_SECRETS, [id()]));
        }
        if let Some(digest) = &self.new_secret {
            s.push(step(
                q::ADD_SECRET,
                [digest.clone().into(), id(), now.into()],
            ));
        }
        s
    }
}

/// The statements that store a new tenant, all but its secret (see [`insert_tenant_row`]).
pub(crate) fn insert_steps(t: &Tenant) -> Vec<Step> {
    use sql::tenants as q;
    let id = || Arg::from(t.id.as_str());
    let r = RelayCells::of(t.smtp.as_ref());
    let mut s = vec![
        step(
            q::INSERT_TENANT,
            [
                id(),
                t.name.as_str().into(),
                t.enabled.into(),
                t.origin.as_str().into(),
                t.created_at.into(),
                r.host.into(),
                r.port.into(),
                r.username.into(),
                r.password.into(),
                r.from.into(),
                r.tls.into(),
                t.smtp_version.into(),
                t.policy.code_length.into(),
                t.policy.ttl_seconds.into(),
                t.policy.max_attempts.into(),
                r.max_connections.into(),
                t.delivery.as_str().into(),
                t.default_locale.as_str().into(),
                t.test.into(),
                r.oauth2.into(),
            ],
        ),
        step(q::SET_PAGES_APPROVED, [id(), t.pages_approved.into()]),
    ];
    if let Some(f) = &t.smtp_fallback {
        s.push(fallback_step(id(), Some(f)));
    }
    for (channel, p) in &t.providers {
        s.push(provider_step(id(), *channel, Some(p)));
    }
    s
}

/// Set a tenant's relay (none: empty columns), a new relay version.
fn relay_step(id: Arg, a: Option<&SmtpAccount>) -> Step {
    let c = RelayCells::of(a);
    step(
        sql::tenants::SET_RELAY,
        [
            id,
            c.host.into(),
            c.port.into(),
            c.username.into(),
            c.password.into(),
            c.from.into(),
            c.tls.into(),
            c.max_connections.into(),
            c.oauth2.into(),
        ],
    )
}

/// Set or remove a tenant's fallback relay (none: every column NULL).
fn fallback_step(id: Arg, f: Option<&SmtpAccount>) -> Step {
    let c = f.map(|f| RelayCells::of(Some(f)));
    step(
        sql::tenants::SET_FALLBACK,
        [
            id,
            c.as_ref().map(|c| c.host.clone()).into(),
            c.as_ref().map(|c| c.port).into(),
            c.as_ref().map(|c| c.username.clone()).into(),
            c.as_ref().map(|c| c.password.clone()).into(),
            c.as_ref().map(|c| c.from.clone()).into(),
            c.as_ref().map(|c| c.tls.to_string()).into(),
            c.as_ref().map(|c| c.max_connections).into(),
            c.and_then(|c| c.oauth2).into(),
        ],
    )
}

/// Set or remove a tenant's provider of a channel.
fn provider_step(id: Arg, channel: Channel, p: Option<&Provider>) -> Step {
    let (json, sealed) = super::cells::provider_json(p);
    let set = super::cells::provider_columns(channel).set;
    step(set, [id, json.into(), sealed.into()])
}

/// A relay's columns as stored: a tenant without a relay keeps empty values (the columns
/// are NOT NULL).
pub(crate) struct RelayCells {
    pub host: String,
    pub port: i64,
    pub username: String,
    pub password: Vec<u8>,
    pub from: String,
    pub tls: &'static str,
    pub max_connections: i64,
    pub oauth2: Option<String>,
}

impl RelayCells {
    pub fn of(a: Option<&SmtpAccount>) -> RelayCells {
        match a {
            Some(a) => RelayCells {
                host: a.host.as_str().to_string(),
                port: i64::from(a.port),
                username: a.username.clone(),
                password: a.password.clone(),
                from: a.from.as_str().to_string(),
                tls: a.tls.as_str(),
                max_connections: i64::from(a.max_connections),
                oauth2: super::cells::oauth2_json(a.oauth2.as_ref()),
            },
            None => RelayCells {
                host: String::new(),
                port: 0,
                username: String::new(),
                password: Vec::new(),
                from: String::new(),
                tls: "starttls",
                max_connections: 0,
                oauth2: None,
            },
        }
    }
}

/// What a conditional tenant change came to.
#[derive(Debug, Clone)]
pub enum Updated {
    Done(Box<Tenant>),
    /// Changed by someone else since it was read: nothing was written.
    Stale,
    Missing,
}

/// What storing a template came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutTemplate {
    Stored,
    NoTenant,
    /// A new locale beyond the tenant's limit: nothing stored.
    Full,
}

pub trait TenantStore {
    /// A new tenant with its first secret; a secret already registered (to anyone) is a
    /// `Conflict`.
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError>;
    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Apply `c` if the tenant is still at `version` (every change bumps it).
    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        version: i64,
        now: Millis,
    ) -> Result<Updated, StoreError>;
    /// Store the tenant's HTTP transport (API.md §12.2), keeping the signing secret it has
    /// (`secret` is used only when it has none). `None`: no such tenant; `Some(true)`: the
    /// transport is new (its secret is `secret`).
    fn put_http(
        &self,
        id: &TenantId,
        url: &str,
        use_as: TransportUse,
        secret: &[u8],
    ) -> Result<Option<bool>, StoreError>;
    /// Remove the tenant's HTTP transport; false when it had none.
    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// A new sealed signing secret; false when the tenant has no HTTP transport.
    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError>;
    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// The enabled tenant whose current (or in-grace) secret has this digest.
    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError>;
    /// Whether the tenant has secret keys made while it was a test tenant (`sk_test_`).
    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// Replace the tenant's secret; older secrets stop at `old_until` (now: at once).
    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// The tenant's own templates, by locale.
    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError>;
    /// The locales the tenant has a template for (names only).
    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError>;
    /// One template of the tenant.
    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError>;
    /// Store (insert or replace) a template and bump the tenant's `templates_version` — a
    /// new locale only while the tenant has fewer than `max_locales` (API.md §6.29).
    fn put_template(
        &self,
        id: &TenantId,
        t: &TenantTemplate,
        max_locales: u32,
    ) -> Result<PutTemplate, StoreError>;
    /// Remove a template and bump `templates_version`; false when there was none.
    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError>;
}

/// A tenant and its current secret digest, inside the caller's transaction; `false` (and
/// nothing but the tenant's row written, which the caller rolls back) when the secret is
/// registered already, to anyone.
pub(crate) fn insert_tenant_row(
    tx: &mut dyn Exec,
    t: &Tenant,
    secret_digest: &[u8],
    now: Millis,
) -> Result<bool, StoreError> {
    run_steps(tx, &insert_steps(t))?;
    let first = args![secret_digest, t.id.as_str(), now];
    Ok(tx.exec(sql::tenants::ADD_FIRST_SECRET, first)? == 1)
}

/// Run steps in order, inside the caller's transaction.
pub(crate) fn run_steps(tx: &mut dyn Exec, steps: &[Step]) -> Result<(), StoreError> {
    for s in steps {
        tx.exec(s.sql, &s.args)?;
    }
    Ok(())
}

/// A new secret key; the tenant's others end at `old_until` (or keep an earlier end).
fn replace_secret(
    tx: &mut dyn Exec,
    id: &str,
    digest: &[u8],
    old_until: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    tx.exec(sql::tenants::END_SECRETS, args![id, old_until])?;
    tx.exec(sql::tenants::DROP_ENDED_SECRETS, args![id, now])?;
    tx.exec(sql::tenants::ADD_SECRET, args![digest, id, now])?;
    Ok(())
}

/// Whether the tenant exists, its row locked for the rest of the transaction.
fn lock_tenant(tx: &mut dyn Exec, id: &str) -> Result<bool, StoreError> {
    Ok(tx
        .row_opt(sql::tenants::TENANT_LOCKED, args![id], |_| Ok(()))?
        .is_some())
}

impl<E: Engine> TenantStore for E {
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        let (t, digest) = (t.clone(), secret_digest.to_vec());
        self.transact(move |tx| match insert_tenant_row(tx, &t, &digest, now)? {
            true => Ok(()),
            // Returned before commit: the tenant's row is rolled back.
            false => Err(StoreError::Conflict("secret key already registered")),
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.row_opt(sql::tenants::TENANT, args![id.as_str()], |r| tenant_from(r))
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.rows(sql::tenants::TENANTS, &[], |r| tenant_from(r))
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        version: i64,
        now: Millis,
    ) -> Result<Updated, StoreError> {
        let (steps, id) = (c.steps(id, now), id.to_string());
        self.transact(move |tx| {
            // Only the version that was read is changed; on PostgreSQL the row stays locked
            // for the rest of the change (a concurrent one waits, then finds the version
            // moved on).
            let claim = args![id.as_str(), now, version];
            if tx.exec(sql::tenants::CLAIM_VERSION, claim)? == 0 {
                let exists = args![id.as_str()];
                let exists = tx.row_opt(sql::integration::TENANT_EXISTS, exists, |r| r.flag(0))?;
                return Ok(match exists {
                    Some(true) => Updated::Stale,
                    _ => Updated::Missing,
                });
            }
            run_steps(tx, &steps)?;
            let t = tx.row_opt(sql::tenants::TENANT, args![id.as_str()], |r| tenant_from(r))?;
            Ok(t.map_or(Updated::Missing, |t| Updated::Done(Box::new(t))))
        })
    }

    fn put_http(
        &self,
        id: &TenantId,
        url: &str,
        use_as: TransportUse,
        secret: &[u8],
    ) -> Result<Option<bool>, StoreError> {
        let row = [
            id.as_str().into(),
            url.into(),
            use_as.as_str().into(),
            Arg::from(secret),
        ];
        self.transact(move |tx| tx.row_opt(sql::tenants::PUT_HTTP, &row, |r| r.flag(0)))
    }

    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = [Arg::from(id.as_str())];
        Ok(self.exec_one(sql::tenants::CLEAR_HTTP, &id)? > 0)
    }

    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError> {
        let row = [Arg::from(id.as_str()), sealed.into()];
        Ok(self.exec_one(sql::tenants::SET_HTTP_SECRET, &row)? > 0)
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = [Arg::from(id.as_str())];
        Ok(self.exec_one(sql::tenants::DELETE_TENANT, &id)? > 0)
    }

    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError> {
        let q = args![digest, now];
        self.row_opt(sql::tenants::TENANT_BY_SECRET, q, |r| tenant_from(r))
    }

    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError> {
        let q = args![id.as_str()];
        let has = self.row_opt(sql::tenants::HAS_TEST_SECRETS, q, |r| r.flag(0))?;
        Ok(has == Some(true))
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (id, digest) = (id.to_string(), new_digest.to_vec());
        self.transact(move |tx| {
            // Two rotations of one tenant take turns.
            if !lock_tenant(tx, &id)? {
                return Ok(false);
            }
            replace_secret(tx, &id, &digest, old_until, now)?;
            Ok(true)
        })
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError> {
        self.rows(sql::tenants::TEMPLATES, args![id.as_str()], |r| {
            template_from(r)
        })
    }

    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError> {
        self.rows(sql::tenants::TEMPLATE_LOCALES, args![id.as_str()], |r| {
            r.text(0)
        })
    }

    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError> {
        let q = args![id.as_str(), locale];
        self.row_opt(sql::tenants::TEMPLATE, q, |r| template_from(r))
    }

    fn put_template(
        &self,
        id: &TenantId,
        t: &TenantTemplate,
        max_locales: u32,
    ) -> Result<PutTemplate, StoreError> {
        let (id, t) = (id.to_string(), t.clone());
        self.transact(move |tx| {
            // The version bump comes first: on PostgreSQL it locks the tenant row, so the
            // template changes of one tenant take turns and the count below cannot be
            // overtaken.
            if tx.exec(sql::tenants::BUMP_TEMPLATES_VERSION, args![id.as_str()])? == 0 {
                return Ok(PutTemplate::NoTenant);
            }
            let counts = args![id.as_str(), t.locale.as_str()];
            let (others, exists) = tx
                .row_opt(sql::tenants::TEMPLATE_COUNTS, counts, |r| {
                    Ok((r.int(0)?, r.flag(1)?))
                })?
                .unwrap_or((0, false));
            if !exists && others >= i64::from(max_locales) {
                // Returned before commit: the version bump is rolled back with the rest.
                return Err(StoreError::Conflict("template limit"));
            }
            let row = args![
                id.as_str(),
                t.locale.as_str(),
                t.subject.clone(),
                t.text.clone(),
                t.html.clone(),
                t.updated_at,
                t.sms.clone(),
            ];
            tx.exec(sql::tenants::PUT_TEMPLATE, row)?;
            Ok(PutTemplate::Stored)
        })
        .or_else(|e| match e {
            StoreError::Conflict("template limit") => Ok(PutTemplate::Full),
            other => Err(other),
        })
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        let key = [Arg::from(id.as_str()), locale.into()];
        self.transact(move |tx| {
            let n = tx.exec(sql::tenants::DELETE_TEMPLATE, &key)?;
            if n > 0 {
                tx.exec(sql::tenants::BUMP_TEMPLATES_VERSION, &key[..1])?;
            }
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::Policy;
    use crate::domain::provider::ProviderKind;

    /// The highest `$n` a statement names.
    fn placeholders(text: &str) -> usize {
        let b = text.as_bytes();
        let mut most = 0;
        for (i, _) in text.match_indices('$') {
            let digits: String = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .map(|&c| char::from(c))
                .collect();
            most = most.max(digits.parse().unwrap_or(0));
        }
        most
    }

    #[test]
    fn every_step_binds_exactly_the_placeholders_its_statement_names() {
        let mut t = Tenant::sample();
        let provider = Provider {
            kind: ProviderKind::Postmark,
            use_as: TransportUse::Fallback,
            settings: Default::default(),
            sealed: vec![9],
        };
        t.smtp_fallback = t.smtp.clone();
        t.providers.insert(Channel::Email, provider.clone());
        let every = TenantChanges {
            name: Some(t.name.clone()),
            enabled: Some(false),
            smtp: t.smtp.clone(),
            policy: Some(Policy {
                code_length: 8,
                ttl_seconds: 60,
                max_attempts: 3,
            }),
            delivery: Some(t.delivery),
            default_locale: Some(t.default_locale.clone()),
            test: Some(false),
            smtp_fallback: Some(None),
            allowed_return_urls: Some(vec!["https://a.example/".into()]),
            brand_color: Some("#112233".into()),
            providers: [(Channel::Email, Some(provider)), (Channel::Sms, None)].into(),
            suppression: Some(true),
            pages_approved: Some(true),
            sms: Some(crate::domain::sms_guard::SmsSettings {
                allowed_countries: vec!["DE".into()],
                trusted_days: 30,
                allow_fixed_line: false,
            }),
            dkim: Some(("[]".into(), Vec::new())),
            new_secret: Some(vec![1; 32]),
        };
        let steps = every.steps(&t.id, 5);
        // One statement per field, the transports' version bump and the test keys' removal.
        assert_eq!(steps.len(), 19);
        for s in steps.iter().chain(&insert_steps(&t)) {
            assert_eq!(s.args.len(), placeholders(s.sql.pg), "{}", s.sql.pg);
        }
        assert_eq!(
            insert_steps(&t).len(),
            4,
            "row, pages, fallback, email provider"
        );
        assert!(TenantChanges::default().steps(&t.id, 5).is_empty());
        // A removed fallback relay is every column NULL, typed.
        let fallback = steps
            .iter()
            .find(|s| s.sql.pg == sql::tenants::SET_FALLBACK.pg)
            .map(|s| s.args[1..].to_vec());
        assert_eq!(
            fallback,
            Some(vec![
                Arg::Text(None),
                Arg::Int(None),
                Arg::Text(None),
                Arg::Blob(None),
                Arg::Text(None),
                Arg::Text(None),
                Arg::Int(None),
                Arg::Text(None),
            ])
        );
    }
}
