//! Reading stored rows into domain types, once for both backends: the column lists the
//! queries select, a small `Cells` view of a row that both drivers' rows implement, and the
//! mappers of tenants and codes built on it.

use super::integration::EventJob;
use super::test_mode::InboxRow;
use super::{rules, StoreError};
use crate::crypto::keyring::WrappedKey;
use crate::domain::audit::AuditEvent;
use crate::domain::challenge::{ChallengeView, StoredStatus};
use crate::domain::claim::CodeChallenge;
use crate::domain::delivery::{DeliveryMode, DeliveryStatus, DeliveryView};
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::oauth2::{OAuth2, OAuth2Provider};
use crate::domain::policy::Policy;
use crate::domain::provider::{Provider, ProviderKind};
use crate::domain::sms_guard::{countries_from_stored, SmsSettings};
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{
    HttpTransport, Origin, Sender, SmtpAccount, SmtpHost, Tenant, TenantName, TlsMode, TransportUse,
};
use crate::domain::test_mode::{FixedCode, RecipientPattern, TestRecipient};
use crate::domain::webhook::{split_events, Disabled, Webhook, WebhookAttempt};

/// A tenant row's columns, for queries that name the table `t` (read by [`tenant_from`]).
/// The webhook subscription is read from `webhooks` (its one home), not kept on the tenant.
pub(crate) const TENANT_COLS: &str =
    "t.id, t.name, t.enabled, t.origin, t.created_at, t.smtp_host, t.smtp_port, t.smtp_username, \
     t.smtp_password, t.smtp_from, t.smtp_tls, t.smtp_version, t.code_length, t.ttl_seconds, \
     t.max_attempts, t.smtp_max_connections, t.delivery, t.default_locale, t.templates_version, \
     COALESCE((SELECT w.events FROM webhooks w WHERE w.tenant_id = t.id), ''), t.row_version, \
     t.test, t.test_version, t.fallback_host, t.fallback_port, t.fallback_username, \
     t.fallback_password, t.fallback_from, t.fallback_tls, t.fallback_max_connections, \
     t.http_url, t.http_use, t.http_secret, t.allowed_return_urls, t.brand_color, \
     t.smtp_oauth2, t.fallback_oauth2, t.email_provider, t.email_provider_secrets, \
     t.sms_provider, t.sms_provider_secrets, t.suppression_off, t.suppressed, \
     t.pages_approved, t.sms_allowed_countries, t.sms_trusted_days, t.sms_allow_fixed_line, t.dkim_keys, t.dkim_private";

/// A code's columns as `GET /v1/otp/{key}` shows it, for queries that name the table `c`
/// (read by [`view_from`]); `now` is the SQL of the current time its lease is compared with
/// (a lease that ran out no longer shows the message as `sending`).
pub(crate) fn view_cols(now: &str) -> String {
    format!(
        "c.status, c.email, c.email_canonical, c.purpose, c.attempts, c.max_attempts, c.code_length, \
         c.created_at, c.expires_at, c.verified_at, c.delivery_mode, c.delivery_status, \
         c.delivery_attempts, c.delivery_reason, c.sent_at, \
         EXISTS(SELECT 1 FROM outbox o WHERE o.key_digest = c.key_digest AND o.lease_until >= {now}), \
         c.resends, c.test, c.locale, c.channel, c.delivery_transport, c.verified_via, \
         c.provider_message_id, c.delivery_detail_code, c.code_challenge, c.claimed_at"
    )
}

/// How many columns [`view_cols`] selects (a query may select more after them).
pub(crate) const VIEW_WIDTH: usize = 26;

/// One row of either driver, read by column index.
pub(crate) trait Cells {
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
    fn flag(&self, i: usize) -> Result<bool, StoreError>;

    /// A count or setting stored as an integer that must fit a `u32`.
    fn count(&self, i: usize) -> Result<u32, StoreError> {
        u32::try_from(self.int(i)?).map_err(|_| corrupt("a count"))
    }
}

impl Cells for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.get(i)?)
    }
}

impl Cells for ::postgres::Row {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.try_get(i)?)
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} out of range"))
}

/// A stored value that must be one of a set.
fn one_of<T>(v: Option<T>, what: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| corrupt(what))
}

pub(crate) fn delivery_mode_from(s: &str) -> Result<DeliveryMode, StoreError> {
    one_of(DeliveryMode::parse(s), "a delivery mode")
}

pub(crate) fn channel_from(s: &str) -> Result<crate::domain::recipient::Channel, StoreError> {
    one_of(crate::domain::recipient::Channel::parse(s), "a channel")
}

pub(crate) fn status_from(s: &str) -> Result<StoredStatus, StoreError> {
    one_of(StoredStatus::parse(s), "a code status")
}

pub(crate) fn event_type_from(s: &str) -> Result<EventType, StoreError> {
    one_of(EventType::parse(s), "an event type")
}

/// A tenant from the columns of [`TENANT_COLS`].
pub(crate) fn tenant_from(r: &impl Cells) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: TenantId::from_trusted(r.text(0)?),
        name: TenantName::from_stored(r.text(1)?),
        enabled: r.flag(2)?,
        origin: one_of(Origin::parse(&r.text(3)?), "a tenant origin")?,
        created_at: r.int(4)?,
        // A tenant without a relay keeps an empty host (the columns are NOT NULL); so did a
        // test tenant created without one before (its placeholder host).
        smtp: match r.text(5)? {
            h if h.is_empty() || h == NO_RELAY_BEFORE => None,
            h => Some(SmtpAccount {
                host: SmtpHost::from_stored(h),
                port: u16::try_from(r.int(6)?).map_err(|_| corrupt("a port"))?,
                username: r.text(7)?,
                password: r.bytes(8)?,
                from: Sender::from_stored(r.text(9)?),
                tls: one_of(TlsMode::parse(&r.text(10)?), "a TLS mode")?,
                max_connections: r.count(15)?,
                oauth2: oauth2_from(r.opt_text(35)?)?,
            }),
        },
        smtp_version: r.int(11)?,
        policy: Policy {
            code_length: r.count(12)?,
            ttl_seconds: r.count(13)?,
            max_attempts: r.count(14)?,
        },
        delivery: delivery_mode_from(&r.text(16)?)?,
        default_locale: one_of(Locale::parse(&r.text(17)?), "a locale")?,
        templates_version: r.int(18)?,
        webhook_events: r.text(19)?,
        row_version: r.int(20)?,
        test: r.flag(21)?,
        test_version: r.int(22)?,
        smtp_fallback: fallback_from(r, 23)?,
        http: match r.opt_text(30)? {
            None => None,
            Some(url) => Some(HttpTransport {
                url,
                use_as: one_of(
                    r.opt_text(31)?.as_deref().and_then(TransportUse::parse),
                    "an HTTP transport's use",
                )?,
                secret: r.opt_bytes(32)?.unwrap_or_default(),
            }),
        },
        allowed_return_urls: r
            .text(33)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        brand_color: r.text(34)?,
        email_provider: provider_from(r.opt_text(37)?, r.opt_bytes(38)?)?,
        sms_provider: provider_from(r.opt_text(39)?, r.opt_bytes(40)?)?,
        suppression: !r.flag(41)?,
        suppressed: r.int(42)?,
        pages_approved: r.flag(43)?,
        sms: SmsSettings {
            allowed_countries: countries_from_stored(&r.text(44)?),
            trusted_days: r.count(45)?,
            allow_fixed_line: r.flag(46)?,
        },
        dkim: crate::domain::dkim::keys_from_stored(&r.text(47)?),
        dkim_sealed: r.opt_bytes(48)?.unwrap_or_default(),
    })
}

/// The host a test tenant created without a relay was given before tenants could have none.
const NO_RELAY_BEFORE: &str = "test.invalid";

/// A relay's OAuth2 settings as stored (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredOAuth2 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    token_url: String,
    client_id: String,
    #[serde(default)]
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entra_tenant: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

pub(crate) fn oauth2_from(json: Option<String>) -> Result<Option<OAuth2>, StoreError> {
    let Some(json) = json else { return Ok(None) };
    let s: StoredOAuth2 =
        serde_json::from_str(&json).map_err(|_| corrupt("a relay's OAuth2 settings"))?;
    Ok(Some(OAuth2 {
        provider: match s.provider {
            None => None,
            Some(p) => Some(one_of(OAuth2Provider::parse(&p), "an OAuth2 provider")?),
        },
        token_url: s.token_url,
        client_id: s.client_id,
        scope: s.scope,
        entra_tenant: s.entra_tenant,
        refresh_token: s.refresh_token,
    }))
}

/// The stored form of a relay's OAuth2 settings (`None`: a password login).
pub(crate) fn oauth2_json(o: Option<&OAuth2>) -> Option<String> {
    let o = o?;
    serde_json::to_string(&StoredOAuth2 {
        provider: o.provider.map(|p| p.as_str().to_string()),
        token_url: o.token_url.clone(),
        client_id: o.client_id.clone(),
        scope: o.scope.clone(),
        entra_tenant: o.entra_tenant.clone(),
        refresh_token: o.refresh_token,
    })
    .ok()
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
fn fallback_from(r: &impl Cells, at: usize) -> Result<Option<SmtpAccount>, StoreError> {
    let Some(host) = r.opt_text(at)? else {
        return Ok(None);
    };
    let need = |v: Option<i64>| v.ok_or_else(|| corrupt("a fallback relay"));
    Ok(Some(SmtpAccount {
        host: SmtpHost::from_stored(host),
        port: u16::try_from(need(r.opt_int(at + 1)?)?).map_err(|_| corrupt("a port"))?,
        username: r.opt_text(at + 2)?.unwrap_or_default(),
        password: r.opt_bytes(at + 3)?.unwrap_or_default(),
        from: Sender::from_stored(r.opt_text(at + 4)?.unwrap_or_default()),
        tls: one_of(
            r.opt_text(at + 5)?.as_deref().and_then(TlsMode::parse),
            "a TLS mode",
        )?,
        max_connections: u32::try_from(need(r.opt_int(at + 6)?)?)
            .map_err(|_| corrupt("a count"))?,
        oauth2: oauth2_from(r.opt_text(36)?)?,
    }))
}

/// A code from the columns of [`view_cols`].
pub(crate) fn view_from(r: &impl Cells) -> Result<ChallengeView, StoreError> {
    let delivery_status =
        rules::shown_delivery(&r.text(11)?, r.flag(15)?).unwrap_or(DeliveryStatus::Failed);
    Ok(ChallengeView {
        status: status_from(&r.text(0)?)?,
        email: r.text(1)?,
        email_canonical: r.text(2)?,
        purpose: r.text(3)?,
        attempts: r.count(4)?,
        max_attempts: r.count(5)?,
        code_length: r.count(6)?,
        created_at: r.int(7)?,
        expires_at: r.int(8)?,
        verified_at: r.opt_int(9)?,
        delivery: DeliveryView {
            mode: delivery_mode_from(&r.text(10)?)?,
            status: delivery_status,
            attempts: r.count(12)?,
            reason: r.opt_text(13)?,
            sent_at: r.opt_int(14)?,
            transport: r.opt_text(20)?,
            provider_message_id: r.opt_text(22)?,
            detail_code: r.opt_text(23)?,
        },
        resends: r.count(16)?,
        test: r.flag(17)?,
        locale: r.opt_text(18)?,
        channel: r.text(19)?,
        verified_via: r.opt_text(21)?,
        code_challenge: r.opt_text(24)?.map(CodeChallenge::from_stored),
        claimed_at: r.opt_int(25)?,
    })
}

/// A template from `locale, subject, text, html, updated_at, sms`.
pub(crate) fn template_from(r: &impl Cells) -> Result<TenantTemplate, StoreError> {
    Ok(TenantTemplate {
        locale: r.text(0)?,
        subject: r.text(1)?,
        text: r.text(2)?,
        html: r.opt_text(3)?,
        updated_at: r.int(4)?,
        sms: r.opt_text(5)?,
    })
}

/// A webhook's columns (read by [`webhook_from`]).
pub(crate) const WEBHOOK_COLS: &str =
    "url, events, secret, created_at, updated_at, disabled_at, disabled_reason";

/// A webhook from [`WEBHOOK_COLS`].
pub(crate) fn webhook_from(r: &impl Cells) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        url: r.text(0)?,
        events: split_events(&r.text(1)?),
        secret: r.bytes(2)?,
        created_at: r.int(3)?,
        updated_at: r.int(4)?,
        disabled: match r.opt_int(5)? {
            Some(at) => Some(Disabled {
                at,
                reason: r.opt_text(6)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

/// A delivery attempt from `event_id, type, attempt, status_code, error, at`.
pub(crate) fn attempt_from(r: &impl Cells) -> Result<WebhookAttempt, StoreError> {
    Ok(WebhookAttempt {
        event_id: r.text(0)?,
        kind: event_type_from(&r.text(1)?)?,
        attempt: r.count(2)?,
        status_code: r
            .opt_int(3)?
            .map(|v| u16::try_from(v).map_err(|_| corrupt("a status code")))
            .transpose()?,
        error: r.opt_text(4)?,
        at: r.int(5)?,
    })
}

/// An audit event from `id, tenant_id, at, event, recipient, outcome, client_ip, request_id`.
pub(crate) fn audit_from(r: &impl Cells) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: r.int(0)?,
        tenant_id: r.text(1)?,
        at: r.int(2)?,
        event: r.text(3)?,
        recipient: r.text(4)?,
        outcome: r.text(5)?,
        client_ip: r.text(6)?,
        request_id: r.text(7)?,
    })
}

/// A keyring row from `kind, version, wrapped, kek_id, active`.
pub(crate) fn wrapped_key_from(r: &impl Cells) -> Result<WrappedKey, StoreError> {
    Ok(WrappedKey {
        kind: r.text(0)?,
        version: r.count(1)?,
        wrapped: r.bytes(2)?,
        kek_id: r.text(3)?,
        active: r.flag(4)?,
    })
}

/// A claimed event from `id, tenant_id, type, payload, attempts`.
pub(crate) fn event_job_from(r: &impl Cells) -> Result<EventJob, StoreError> {
    Ok(EventJob {
        id: r.text(0)?,
        tenant_id: TenantId::from_trusted(r.text(1)?),
        kind: event_type_from(&r.text(2)?)?,
        payload: r.bytes(3)?,
        attempts: r.count(4)?,
    })
}

/// A test recipient's columns (read by [`test_recipient_from`]).
pub(crate) const TEST_RECIPIENT_COLS: &str =
    "pattern, code_hash, code_length, expires_at, disabled_at";

/// A test recipient from [`TEST_RECIPIENT_COLS`].
pub(crate) fn test_recipient_from(r: &impl Cells) -> Result<TestRecipient, StoreError> {
    let fixed = match (r.opt_text(1)?, r.opt_int(2)?) {
        (Some(hash), Some(length)) => Some(FixedCode {
            hash,
            length: u32::try_from(length).map_err(|_| corrupt("a code length"))?,
        }),
        _ => None,
    };
    Ok(TestRecipient {
        pattern: RecipientPattern::from_stored(r.text(0)?),
        fixed,
        expires_at: r.int(3)?,
        disabled_at: r.opt_int(4)?,
    })
}

/// A test inbox row's columns (read by [`inbox_row_from`]).
pub(crate) const INBOX_COLS: &str = "key_digest, message, received_at";

/// A test inbox row from [`INBOX_COLS`].
pub(crate) fn inbox_row_from(r: &impl Cells) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        key_digest: r.bytes(0)?,
        payload: r.bytes(1)?,
        received_at: r.int(2)?,
    })
}

/// A suppression-list entry from `recipient, reason, source, created_at`.
pub(crate) fn suppression_from(
    r: &impl Cells,
) -> Result<crate::domain::suppression::Suppression, StoreError> {
    use crate::domain::suppression::{Suppression, SuppressionReason};
    Ok(Suppression {
        recipient: r.text(0)?,
        reason: one_of(
            SuppressionReason::parse(&r.text(1)?),
            "a suppression reason",
        )?,
        source: r.text(2)?,
        created_at: r.int(3)?,
    })
}
