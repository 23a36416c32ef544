//! A tenant row: its columns, listed once, and the mapper that reads them by name, with
//! the JSON its relays' OAuth2 settings and its providers are stored as.

use std::collections::BTreeMap;

use super::*;
use crate::domain::recipient::Channel;

columns!(
    /// A tenant row's columns, for queries that name the table `t` (read by [`tenant_from`]).
    /// The webhook subscription is read from `webhooks` (its one home), not kept on the tenant.
    TENANT_COLS,
    TENANT = [
        "t.id",
        "t.name",
        "t.enabled",
        "t.origin",
        "t.created_at",
        "t.smtp_host",
        "t.smtp_port",
        "t.smtp_username",
        "t.smtp_password",
        "t.smtp_from",
        "t.smtp_tls",
        "t.smtp_version",
        "t.code_length",
        "t.ttl_seconds",
        "t.max_attempts",
        "t.smtp_max_connections",
        "t.delivery",
        "t.default_locale",
        "t.templates_version",
        "COALESCE((SELECT w.events FROM webhooks w WHERE w.tenant_id = t.id), '') AS webhook_events",
        "t.row_version",
        "t.test",
        "t.test_version",
        "t.fallback_host",
        "t.fallback_port",
        "t.fallback_username",
        "t.fallback_password",
        "t.fallback_from",
        "t.fallback_tls",
        "t.fallback_max_connections",
        "t.http_url",
        "t.http_use",
        "t.http_secret",
        "t.allowed_return_urls",
        "t.brand_color",
        "t.smtp_oauth2",
        "t.fallback_oauth2",
        "t.email_provider",
        "t.email_provider_secrets",
        "t.sms_provider",
        "t.sms_provider_secrets",
        "t.suppression_off",
        "t.suppressed",
        "t.pages_approved",
        "t.sms_allowed_countries",
        "t.sms_trusted_days",
        "t.sms_allow_fixed_line",
        "t.dkim_keys",
        "t.dkim_private",
    ]
);

/// A tenant from the columns of [`TENANT_COLS`].
pub(crate) fn tenant_from(r: &(impl Cells + ?Sized)) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: TenantId::from_trusted(r.text(at!(TENANT, "t.id"))?),
        name: TenantName::from_stored(r.text(at!(TENANT, "t.name"))?),
        enabled: r.flag(at!(TENANT, "t.enabled"))?,
        origin: one_of(
            Origin::parse(&r.text(at!(TENANT, "t.origin"))?),
            "a tenant origin",
        )?,
        created_at: r.int(at!(TENANT, "t.created_at"))?,
        // A tenant without a relay keeps an empty host (the columns are NOT NULL); so did a
        // test tenant created without one before (its placeholder host).
        smtp: match r.text(at!(TENANT, "t.smtp_host"))? {
            h if h.is_empty() || h == NO_RELAY_BEFORE => None,
            h => Some(SmtpAccount {
                host: SmtpHost::from_stored(h),
                port: u16::try_from(r.int(at!(TENANT, "t.smtp_port"))?)
                    .map_err(|_| corrupt("a port"))?,
                username: r.text(at!(TENANT, "t.smtp_username"))?,
                password: r.bytes(at!(TENANT, "t.smtp_password"))?,
                from: Sender::from_stored(r.text(at!(TENANT, "t.smtp_from"))?),
                tls: one_of(
                    TlsMode::parse(&r.text(at!(TENANT, "t.smtp_tls"))?),
                    "a TLS mode",
                )?,
                max_connections: r.count(at!(TENANT, "t.smtp_max_connections"))?,
                oauth2: oauth2_from(r.opt_text(at!(TENANT, "t.smtp_oauth2"))?)?,
            }),
        },
        smtp_version: r.int(at!(TENANT, "t.smtp_version"))?,
        policy: Policy {
            code_length: r.count(at!(TENANT, "t.code_length"))?,
            ttl_seconds: r.count(at!(TENANT, "t.ttl_seconds"))?,
            max_attempts: r.count(at!(TENANT, "t.max_attempts"))?,
        },
        delivery: delivery_mode_from(&r.text(at!(TENANT, "t.delivery"))?)?,
        default_locale: one_of(
            Locale::parse(&r.text(at!(TENANT, "t.default_locale"))?),
            "a locale",
        )?,
        templates_version: r.int(at!(TENANT, "t.templates_version"))?,
        webhook_events: r.text(at!(TENANT, "webhook_events"))?,
        row_version: r.int(at!(TENANT, "t.row_version"))?,
        test: r.flag(at!(TENANT, "t.test"))?,
        test_version: r.int(at!(TENANT, "t.test_version"))?,
        smtp_fallback: fallback_from(r)?,
        http: match r.opt_text(at!(TENANT, "t.http_url"))? {
            None => None,
            Some(url) => Some(HttpTransport {
                url,
                use_as: one_of(
                    r.opt_text(at!(TENANT, "t.http_use"))?
                        .as_deref()
                        .and_then(TransportUse::parse),
                    "an HTTP transport's use",
                )?,
                secret: r
                    .opt_bytes(at!(TENANT, "t.http_secret"))?
                    .unwrap_or_default(),
            }),
        },
        allowed_return_urls: r
            .text(at!(TENANT, "t.allowed_return_urls"))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        brand_color: r.text(at!(TENANT, "t.brand_color"))?,
        providers: providers_from(r)?,
        suppression: !r.flag(at!(TENANT, "t.suppression_off"))?,
        suppressed: r.int(at!(TENANT, "t.suppressed"))?,
        pages_approved: r.flag(at!(TENANT, "t.pages_approved"))?,
        sms: SmsSettings {
            allowed_countries: countries_from_stored(
                &r.text(at!(TENANT, "t.sms_allowed_countries"))?,
            ),
            trusted_days: r.count(at!(TENANT, "t.sms_trusted_days"))?,
            allow_fixed_line: r.flag(at!(TENANT, "t.sms_allow_fixed_line"))?,
        },
        dkim: crate::domain::dkim::keys_from_stored(&r.text(at!(TENANT, "t.dkim_keys"))?),
        dkim_sealed: r
            .opt_bytes(at!(TENANT, "t.dkim_private"))?
            .unwrap_or_default(),
    })
}

/// The host a test tenant created without a relay was given before tenants could have none.
const NO_RELAY_BEFORE: &str = "test.invalid";

pub(crate) fn oauth2_from(json: Option<String>) -> Result<Option<OAuth2>, StoreError> {
    let Some(json) = json else { return Ok(None) };
    let o = serde_json::from_str(&json).map_err(|_| corrupt("a relay's OAuth2 settings"))?;
    Ok(Some(o))
}

/// The stored form of a relay's OAuth2 settings (`None`: a password login).
pub(crate) fn oauth2_json(o: Option<&OAuth2>) -> Option<String> {
    serde_json::to_string(o?).ok()
}

/// A provider as stored (JSON): its kind, use and the settings that are not secret.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredProvider {
    kind: String,
    #[serde(rename = "use")]
    use_as: String,
    settings: std::collections::BTreeMap<String, String>,
}

pub(crate) fn provider_from(
    json: Option<String>,
    sealed: Option<Vec<u8>>,
) -> Result<Option<Provider>, StoreError> {
    let Some(json) = json else { return Ok(None) };
    let s: StoredProvider =
        serde_json::from_str(&json).map_err(|_| corrupt("a provider's settings"))?;
    Ok(Some(Provider {
        kind: one_of(ProviderKind::parse(&s.kind), "a provider kind")?,
        use_as: one_of(TransportUse::parse(&s.use_as), "a provider's use")?,
        settings: s.settings,
        sealed: sealed.unwrap_or_default(),
    }))
}

/// Where a channel's provider is stored: its settings column and the column of its sealed
/// secrets (their places in [`TENANT`] found at compile time), and the statement that sets
/// both. A channel is one entry here.
pub(crate) struct ProviderColumns {
    pub channel: Channel,
    /// The column of its sealed secrets (what a key rotation reseals).
    pub secrets: &'static str,
    settings_at: usize,
    secrets_at: usize,
    pub set: crate::storage::sql::Shared,
}

pub(crate) const PROVIDER_COLUMNS: [ProviderColumns; 2] = [
    ProviderColumns {
        channel: Channel::Email,
        secrets: "email_provider_secrets",
        settings_at: at!(TENANT, "t.email_provider"),
        secrets_at: at!(TENANT, "t.email_provider_secrets"),
        set: crate::storage::sql::tenants::SET_EMAIL_PROVIDER,
    },
    ProviderColumns {
        channel: Channel::Sms,
        secrets: "sms_provider_secrets",
        settings_at: at!(TENANT, "t.sms_provider"),
        secrets_at: at!(TENANT, "t.sms_provider_secrets"),
        set: crate::storage::sql::tenants::SET_SMS_PROVIDER,
    },
];

/// The columns of a channel's provider (a new channel does not build until it has its
/// entry here).
pub(crate) fn provider_columns(channel: Channel) -> &'static ProviderColumns {
    match channel {
        Channel::Email => &PROVIDER_COLUMNS[0],
        Channel::Sms => &PROVIDER_COLUMNS[1],
    }
}

/// Every channel's provider, from its columns.
fn providers_from(r: &(impl Cells + ?Sized)) -> Result<BTreeMap<Channel, Provider>, StoreError> {
    let mut out = BTreeMap::new();
    for c in &PROVIDER_COLUMNS {
        let stored = (r.opt_text(c.settings_at)?, r.opt_bytes(c.secrets_at)?);
        if let Some(p) = provider_from(stored.0, stored.1)? {
            out.insert(c.channel, p);
        }
    }
    Ok(out)
}

/// The stored form of a provider (`None`: none), with its sealed secrets.
pub(crate) fn provider_json(p: Option<&Provider>) -> (Option<String>, Option<Vec<u8>>) {
    let Some(p) = p else { return (None, None) };
    let json = serde_json::to_string(&StoredProvider {
        kind: p.kind.as_str().to_string(),
        use_as: p.use_as.as_str().to_string(),
        settings: p.settings.clone(),
    })
    .ok();
    (json, Some(p.sealed.clone()))
}

/// The fallback relay from its seven columns starting at `at` (all NULL without one).
fn fallback_from(r: &(impl Cells + ?Sized)) -> Result<Option<SmtpAccount>, StoreError> {
    let Some(host) = r.opt_text(at!(TENANT, "t.fallback_host"))? else {
        return Ok(None);
    };
    let need = |v: Option<i64>| v.ok_or_else(|| corrupt("a fallback relay"));
    Ok(Some(SmtpAccount {
        host: SmtpHost::from_stored(host),
        port: u16::try_from(need(r.opt_int(at!(TENANT, "t.fallback_port"))?)?)
            .map_err(|_| corrupt("a port"))?,
        username: r
            .opt_text(at!(TENANT, "t.fallback_username"))?
            .unwrap_or_default(),
        password: r
            .opt_bytes(at!(TENANT, "t.fallback_password"))?
            .unwrap_or_default(),
        from: Sender::from_stored(
            r.opt_text(at!(TENANT, "t.fallback_from"))?
                .unwrap_or_default(),
        ),
        tls: one_of(
            r.opt_text(at!(TENANT, "t.fallback_tls"))?
                .as_deref()
                .and_then(TlsMode::parse),
            "a TLS mode",
        )?,
        max_connections: u32::try_from(need(
            r.opt_int(at!(TENANT, "t.fallback_max_connections"))?,
        )?)
        .map_err(|_| corrupt("a count"))?,
        oauth2: oauth2_from(r.opt_text(at!(TENANT, "t.fallback_oauth2"))?)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_is_found_by_its_name_or_its_alias_and_the_list_is_the_names_joined() {
        assert_eq!(at!(TENANT, "t.id"), 0);
        assert_eq!(TENANT[at!(TENANT, "t.name")], "t.name");
        assert!(TENANT[at!(TENANT, "webhook_events")].ends_with(" AS webhook_events"));
        assert!(
            !names_it(b"t.fallback_host", b"host"),
            "a suffix is not a name"
        );
        assert_eq!(TENANT_COLS, TENANT.join(", "));
    }

    #[test]
    fn every_channel_has_its_provider_columns_once() {
        for ch in Channel::ALL {
            let c = provider_columns(ch);
            assert_eq!(c.channel, ch);
            assert_eq!(TENANT[c.secrets_at], format!("t.{}", c.secrets));
            assert!(TENANT[c.settings_at].ends_with("_provider"));
            assert!(c.set.pg.contains(c.secrets), "{}", c.set.pg);
        }
        assert_eq!(PROVIDER_COLUMNS.len(), Channel::ALL.len());
    }

    #[test]
    fn a_codes_view_compares_its_lease_with_the_clock_it_is_given() {
        let cols = view_cols("?4");
        assert!(cols.contains(
            "o.lease_until >= ?4 OR (o.leased_by IS NOT NULL AND NOT o.unstarted))) AS sending"
        ));
        assert!(!cols.contains("{now}"));
        assert_eq!(VIEW[at!(VIEW, "c.claimed_at")], "c.claimed_at");
        assert_eq!(VIEW_WIDTH, VIEW.len());
    }

    #[test]
    fn a_relays_oauth2_settings_keep_their_stored_json() {
        use crate::domain::oauth2::OAuth2Provider;
        let stored = r#"{"provider":"microsoft","token_url":"https://login.example/t","client_id":"c1","scope":"s","entra_tenant":"contoso","refresh_token":true}"#;
        let o = oauth2_from(Some(stored.into())).unwrap().unwrap();
        assert_eq!(o.provider, Some(OAuth2Provider::Microsoft));
        assert!(o.refresh_token);
        assert_eq!(oauth2_json(Some(&o)).as_deref(), Some(stored));
        // Written before a field existed: its default; an explicit token URL: no provider.
        let bare = r#"{"token_url":"https://login.example/t","client_id":"c1"}"#;
        let o = oauth2_from(Some(bare.into())).unwrap().unwrap();
        assert_eq!(
            (o.provider, o.scope.as_str(), o.refresh_token),
            (None, "", false)
        );
        assert_eq!(
            oauth2_json(Some(&o)).as_deref(),
            Some(
                r#"{"token_url":"https://login.example/t","client_id":"c1","scope":"","refresh_token":false}"#
            )
        );
        let google = stored.replace("microsoft", "google");
        let o = oauth2_from(Some(google.clone())).unwrap().unwrap();
        assert_eq!(o.provider, Some(OAuth2Provider::Google));
        assert_eq!(oauth2_json(Some(&o)), Some(google));
        let unknown = stored.replace("microsoft", "yahoo");
        assert!(matches!(
            oauth2_from(Some(unknown)),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(oauth2_from(None).unwrap(), None);
    }
}
