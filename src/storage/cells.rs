//! Reading stored rows into domain types, once for both backends: the column lists the
//! queries select, a small `Cells` view of a row that both drivers' rows implement, and the
//! mappers of tenants and codes built on it.

use super::integration::EventJob;
use super::test_mode::InboxRow;
use super::{rules, StoreError};
use crate::crypto::keyring::WrappedKey;
use crate::domain::audit::AuditEvent;
use crate::domain::challenge::{ChallengeView, StoredStatus};
use crate::domain::delivery::{DeliveryMode, DeliveryStatus, DeliveryView};
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::policy::Policy;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{
    HttpTransport, HttpUse, Origin, Sender, SmtpAccount, SmtpHost, Tenant, TenantName, TlsMode,
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
     t.http_url, t.http_use, t.http_secret, t.allowed_return_urls, t.brand_color";

/// A code's columns as `GET /v1/otp/{key}` shows it, for queries that name the table `c`
/// (read by [`view_from`]); `now` is the SQL of the current time its lease is compared with
/// (a lease that ran out no longer shows the message as `sending`).
pub(crate) fn view_cols(now: &str) -> String {
    format!(
        "c.status, c.email, c.email_canonical, c.purpose, c.attempts, c.max_attempts, c.code_length, \
         c.created_at, c.expires_at, c.verified_at, c.delivery_mode, c.delivery_status, \
         c.delivery_attempts, c.delivery_reason, c.sent_at, \
         EXISTS(SELECT 1 FROM outbox o WHERE o.key_digest = c.key_digest AND o.lease_until >= {now}), \
         c.resends, c.test, c.locale, c.channel, c.delivery_transport, c.verified_via"
    )
}

/// How many columns [`view_cols`] selects (a query may select more after them).
pub(crate) const VIEW_WIDTH: usize = 22;

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
        smtp: SmtpAccount {
            host: SmtpHost::from_stored(r.text(5)?),
            port: u16::try_from(r.int(6)?).map_err(|_| corrupt("a port"))?,
            username: r.text(7)?,
            password: r.bytes(8)?,
            from: Sender::from_stored(r.text(9)?),
            tls: one_of(TlsMode::parse(&r.text(10)?), "a TLS mode")?,
            max_connections: r.count(15)?,
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
                    r.opt_text(31)?.as_deref().and_then(HttpUse::parse),
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
    })
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
        },
        resends: r.count(16)?,
        test: r.flag(17)?,
        locale: r.opt_text(18)?,
        channel: r.text(19)?,
        verified_via: r.opt_text(21)?,
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
pub(crate) const TEST_RECIPIENT_COLS: &str = "pattern, code_hash, code_length, expires_at";

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
