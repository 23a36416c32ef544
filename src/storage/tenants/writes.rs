//! A tenant's writes as statements with their values, built once for both backends
//! (`sql::Step`): a change (`TenantChanges::steps`), a new tenant (`insert_steps`), and the
//! relay, fallback and provider columns they set.

use std::collections::BTreeMap;

use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::policy::Policy;
use crate::domain::provider::Provider;
use crate::domain::recipient::Channel;
use crate::domain::tenant::{SmtpAccount, Tenant, TenantName};
use crate::domain::Millis;
use crate::storage::engine::{args, Exec};
use crate::storage::sql::{self, step, Arg, Step};
use crate::storage::StoreError;

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
fn insert_steps(t: &Tenant) -> Vec<Step> {
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
    let (json, sealed) = crate::storage::cells::provider_json(p);
    let set = crate::storage::cells::provider_columns(channel).set;
    step(set, [id, json.into(), sealed.into()])
}

/// A relay's columns as stored: a tenant without a relay keeps empty values (the columns
/// are NOT NULL).
struct RelayCells {
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
                oauth2: crate::storage::cells::oauth2_json(a.oauth2.as_ref()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::Policy;
    use crate::domain::provider::ProviderKind;
    use crate::domain::tenant::TransportUse;

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
