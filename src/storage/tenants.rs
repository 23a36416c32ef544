//! The tenant aggregate: tenants, their secret keys (as digests) and their templates.

use super::StoreError;
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::policy::Policy;
use crate::domain::provider::Provider;
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
    /// `Some(None)` removes the email provider (API.md §15.2).
    pub email_provider: Option<Option<Provider>>,
    /// `Some(None)` removes the SMS provider.
    pub sms_provider: Option<Option<Provider>>,
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
        self.smtp.is_some()
            || self.smtp_fallback.is_some()
            || self.email_provider.is_some()
            || self.sms_provider.is_some()
    }
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
