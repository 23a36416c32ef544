//! Reading stored rows into domain types, once for both backends: the column lists the
//! queries select, a small `Cells` view of a row that both drivers' rows implement, and the
//! mappers of tenants and codes built on it.

use super::integration::EventJob;
use super::test_mode::InboxRow;
use super::{rules, StoreError};
use crate::crypto::keyring::WrappedKey;
use crate::domain::audit::AuditEvent;
use crate::domain::challenge::VerifiedVia;
use crate::domain::challenge::{ChallengeView, StoredStatus};
use crate::domain::claim::CodeChallenge;
use crate::domain::delivery::{DeliveryMode, DeliveryStatus, DeliveryView};
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::oauth2::OAuth2;
use crate::domain::policy::Policy;
use crate::domain::provider::{Provider, ProviderKind};
use crate::domain::purpose::Purpose;
use crate::domain::sms_guard::{countries_from_stored, SmsSettings};
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{
    HttpTransport, Origin, Sender, SmtpAccount, SmtpHost, Tenant, TenantName, TlsMode, TransportUse,
};
use crate::domain::test_mode::{FixedCode, RecipientPattern, TestRecipient};
use crate::domain::webhook::{split_events, Disabled, Webhook, WebhookAttempt};

/// Column lists written once: `columns!(LIST, NAMES = ["t.a", "t.b AS b", …])` makes
/// `NAMES` (what [`at!`] finds a column's index in) and `LIST`, the same names joined for a
/// SELECT.
macro_rules! columns {
    ($(#[$attr:meta])* $list:ident, $names:ident = [$first:literal $(, $rest:literal)* $(,)?]) => {
        $(#[$attr])*
        pub(crate) const $list: &str = concat!($first $(, ", ", $rest)*);
        pub(crate) const $names: &[&str] = &[$first $(, $rest)*];
    };
}

/// The index of the column `name` in `names` (`t.x`, or the alias of `… AS x`), or
/// `usize::MAX` when it is not there (which [`at!`] turns into a build error).
pub(crate) const fn column_index(names: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < names.len() {
        if names_it(names[i].as_bytes(), name.as_bytes()) {
            return i;
        }
        i += 1;
    }
    usize::MAX
}

/// Whether `entry` is `name`, or ends with ` AS name`.
const fn names_it(entry: &[u8], name: &[u8]) -> bool {
    if entry.len() < name.len() {
        return false;
    }
    let start = entry.len() - name.len();
    let mut j = 0;
    while j < name.len() {
        if entry[start + j] != name[j] {
            return false;
        }
        j += 1;
    }
    start == 0
        || (start >= 4
            && entry[start - 4] == b' '
            && entry[start - 3] == b'A'
            && entry[start - 2] == b'S'
            && entry[start - 1] == b' ')
}

/// A column's index by name, found at compile time: `at!(TENANT, "t.name")`.
macro_rules! at {
    ($names:ident, $name:literal) => {{
        const I: usize = $crate::storage::cells::column_index($names, $name);
        const _: () = assert!(I < $names.len(), "no such column");
        I
    }};
}

mod tenant;
pub(crate) use tenant::{oauth2_json, provider_columns, provider_json, tenant_from, TENANT_COLS};

columns!(
    /// A code's columns as `GET /v1/otp/{key}` shows it, for queries that name the table
    /// `c` (read by [`view_from`]); `{now}` stands for the SQL of the current time its lease
    /// is compared with. A message is `sending` while its lease runs, and after it ran out
    /// while its send is recorded as begun: until the sweep records the outcome `unknown`
    /// (its sender died) or the sender records it (the lease ran out during an outage).
    /// One whose lease ran out before its send began shows `queued`: it goes back to the queue.
    VIEW_LIST,
    VIEW = [
        "c.status",
        "c.email",
        "c.email_canonical",
        "c.purpose",
        "c.attempts",
        "c.max_attempts",
        "c.code_length",
        "c.created_at",
        "c.expires_at",
        "c.verified_at",
        "c.delivery_mode",
        "c.delivery_status",
        "c.delivery_attempts",
        "c.delivery_reason",
        "c.sent_at",
        "EXISTS(SELECT 1 FROM outbox o WHERE o.key_digest = c.key_digest \
           AND (o.lease_until >= {now} OR (o.leased_by IS NOT NULL AND NOT o.unstarted))) AS sending",
        "c.resends",
        "c.test",
        "c.locale",
        "c.channel",
        "c.delivery_transport",
        "c.verified_via",
        "c.provider_message_id",
        "c.delivery_detail_code",
        "c.code_challenge",
        "c.claimed_at",
        "c.attempt_at",
        "c.attempts_open",
    ]
);

/// [`VIEW_LIST`] with `now`, the SQL of the current time.
pub(crate) fn view_cols(now: &str) -> String {
    VIEW_LIST.replace("{now}", now)
}

/// How many columns [`view_cols`] selects (a query may select more after them).
pub(crate) const VIEW_WIDTH: usize = VIEW.len();

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

/// A driver's row as [`Cells`]: each cell read with the driver's fallible getter (`get`
/// in rusqlite, `try_get` in postgres), its error a [`StoreError`].
macro_rules! cells_of {
    ($row:ty, $get:ident) => {
        impl Cells for $row {
            cells_of!(@read $get; int: i64, opt_int: Option<i64>, text: String,
                opt_text: Option<String>, bytes: Vec<u8>, opt_bytes: Option<Vec<u8>>,
                flag: bool);
        }
    };
    (@read $get:ident; $($name:ident: $t:ty),*) => {
        $(fn $name(&self, i: usize) -> Result<$t, StoreError> {
            Ok(self.$get(i)?)
        })*
    };
}

cells_of!(rusqlite::Row<'_>, get);
cells_of!(::postgres::Row, try_get);

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

/// A stored message's locale (`None`: imported from OtpMint, or not one this version reads).
pub(crate) fn stored_locale(s: Option<String>) -> Option<Locale> {
    s.as_deref().and_then(Locale::parse)
}

pub(crate) fn verified_via_from(s: Option<String>) -> Result<Option<VerifiedVia>, StoreError> {
    s.map(|s| one_of(VerifiedVia::parse(&s), "a verification way"))
        .transpose()
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

/// A code from the columns of [`view_cols`].
pub(crate) fn view_from(r: &(impl Cells + ?Sized)) -> Result<ChallengeView, StoreError> {
    let delivery_status = rules::shown_delivery(
        &r.text(at!(VIEW, "c.delivery_status"))?,
        r.flag(at!(VIEW, "sending"))?,
    )
    .unwrap_or(DeliveryStatus::Failed);
    Ok(ChallengeView {
        status: status_from(&r.text(at!(VIEW, "c.status"))?)?,
        email: r.text(at!(VIEW, "c.email"))?,
        email_canonical: r.text(at!(VIEW, "c.email_canonical"))?,
        purpose: Purpose::from_stored(r.text(at!(VIEW, "c.purpose"))?),
        attempts: r.count(at!(VIEW, "c.attempts"))?,
        max_attempts: r.count(at!(VIEW, "c.max_attempts"))?,
        code_length: r.count(at!(VIEW, "c.code_length"))?,
        created_at: r.int(at!(VIEW, "c.created_at"))?,
        expires_at: r.int(at!(VIEW, "c.expires_at"))?,
        verified_at: r.opt_int(at!(VIEW, "c.verified_at"))?,
        delivery: DeliveryView {
            mode: delivery_mode_from(&r.text(at!(VIEW, "c.delivery_mode"))?)?,
            status: delivery_status,
            attempts: r.count(at!(VIEW, "c.delivery_attempts"))?,
            reason: r.opt_text(at!(VIEW, "c.delivery_reason"))?,
            sent_at: r.opt_int(at!(VIEW, "c.sent_at"))?,
            transport: r.opt_text(at!(VIEW, "c.delivery_transport"))?,
            provider_message_id: r.opt_text(at!(VIEW, "c.provider_message_id"))?,
            detail_code: r.opt_text(at!(VIEW, "c.delivery_detail_code"))?,
        },
        resends: r.count(at!(VIEW, "c.resends"))?,
        test: r.flag(at!(VIEW, "c.test"))?,
        locale: stored_locale(r.opt_text(at!(VIEW, "c.locale"))?),
        channel: channel_from(&r.text(at!(VIEW, "c.channel"))?)?,
        verified_via: verified_via_from(r.opt_text(at!(VIEW, "c.verified_via"))?)?,
        code_challenge: r
            .opt_text(at!(VIEW, "c.code_challenge"))?
            .map(CodeChallenge::from_stored),
        claimed_at: r.opt_int(at!(VIEW, "c.claimed_at"))?,
        attempt_at: r.opt_int(at!(VIEW, "c.attempt_at"))?,
        attempts_open: r.count(at!(VIEW, "c.attempts_open"))?,
    })
}

columns!(
    /// A template's columns (read by [`template_from`]).
    TEMPLATE_COLS,
    TEMPLATE = ["locale", "subject", "text", "html", "updated_at", "sms"]
);

/// A template from [`TEMPLATE_COLS`].
pub(crate) fn template_from(r: &(impl Cells + ?Sized)) -> Result<TenantTemplate, StoreError> {
    Ok(TenantTemplate {
        locale: r.text(at!(TEMPLATE, "locale"))?,
        subject: r.text(at!(TEMPLATE, "subject"))?,
        text: r.text(at!(TEMPLATE, "text"))?,
        html: r.opt_text(at!(TEMPLATE, "html"))?,
        updated_at: r.int(at!(TEMPLATE, "updated_at"))?,
        sms: r.opt_text(at!(TEMPLATE, "sms"))?,
    })
}

columns!(
    /// A webhook's columns (read by [`webhook_from`]).
    WEBHOOK_COLS,
    WEBHOOK = [
        "url",
        "events",
        "secret",
        "created_at",
        "updated_at",
        "disabled_at",
        "disabled_reason",
    ]
);

/// A webhook from [`WEBHOOK_COLS`].
pub(crate) fn webhook_from(r: &(impl Cells + ?Sized)) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        url: r.text(at!(WEBHOOK, "url"))?,
        events: split_events(&r.text(at!(WEBHOOK, "events"))?),
        secret: r.bytes(at!(WEBHOOK, "secret"))?,
        created_at: r.int(at!(WEBHOOK, "created_at"))?,
        updated_at: r.int(at!(WEBHOOK, "updated_at"))?,
        disabled: match r.opt_int(at!(WEBHOOK, "disabled_at"))? {
            Some(at) => Some(Disabled {
                at,
                reason: r
                    .opt_text(at!(WEBHOOK, "disabled_reason"))?
                    .unwrap_or_default(),
            }),
            None => None,
        },
    })
}

columns!(
    /// A webhook delivery attempt's columns (read by [`attempt_from`]).
    ATTEMPT_COLS,
    ATTEMPT = ["event_id", "type", "attempt", "status_code", "error", "at"]
);

/// A delivery attempt from [`ATTEMPT_COLS`].
pub(crate) fn attempt_from(r: &(impl Cells + ?Sized)) -> Result<WebhookAttempt, StoreError> {
    Ok(WebhookAttempt {
        event_id: r.text(at!(ATTEMPT, "event_id"))?,
        kind: event_type_from(&r.text(at!(ATTEMPT, "type"))?)?,
        attempt: r.count(at!(ATTEMPT, "attempt"))?,
        status_code: r
            .opt_int(at!(ATTEMPT, "status_code"))?
            .map(|v| u16::try_from(v).map_err(|_| corrupt("a status code")))
            .transpose()?,
        error: r.opt_text(at!(ATTEMPT, "error"))?,
        at: r.int(at!(ATTEMPT, "at"))?,
    })
}

columns!(
    /// An audit event's columns (read by [`audit_from`]).
    AUDIT_COLS,
    AUDIT = [
        "id",
        "tenant_id",
        "at",
        "event",
        "recipient",
        "outcome",
        "client_ip",
        "request_id",
    ]
);

/// An audit event from [`AUDIT_COLS`].
pub(crate) fn audit_from(r: &(impl Cells + ?Sized)) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: r.int(at!(AUDIT, "id"))?,
        tenant_id: r.text(at!(AUDIT, "tenant_id"))?,
        at: r.int(at!(AUDIT, "at"))?,
        event: r.text(at!(AUDIT, "event"))?,
        recipient: r.text(at!(AUDIT, "recipient"))?,
        outcome: r.text(at!(AUDIT, "outcome"))?,
        client_ip: r.text(at!(AUDIT, "client_ip"))?,
        request_id: r.text(at!(AUDIT, "request_id"))?,
    })
}

columns!(
    /// A keyring row's columns (read by [`wrapped_key_from`]).
    KEY_COLS,
    KEY = ["kind", "version", "wrapped", "kek_id", "active"]
);

/// A keyring row from [`KEY_COLS`].
pub(crate) fn wrapped_key_from(r: &(impl Cells + ?Sized)) -> Result<WrappedKey, StoreError> {
    Ok(WrappedKey {
        kind: r.text(at!(KEY, "kind"))?,
        version: r.count(at!(KEY, "version"))?,
        wrapped: r.bytes(at!(KEY, "wrapped"))?,
        kek_id: r.text(at!(KEY, "kek_id"))?,
        active: r.flag(at!(KEY, "active"))?,
    })
}

/// A claimed event from `id, tenant_id, type, payload, attempts`.
pub(crate) fn event_job_from(r: &(impl Cells + ?Sized)) -> Result<EventJob, StoreError> {
    Ok(EventJob {
        id: r.text(0)?,
        tenant_id: TenantId::from_trusted(r.text(1)?),
        kind: event_type_from(&r.text(2)?)?,
        payload: r.bytes(3)?,
        attempts: r.count(4)?,
    })
}

columns!(
    /// A test recipient's columns (read by [`test_recipient_from`]).
    TEST_RECIPIENT_COLS,
    TEST_RECIPIENT = [
        "pattern",
        "code_hash",
        "code_length",
        "expires_at",
        "disabled_at",
    ]
);

/// A test recipient from [`TEST_RECIPIENT_COLS`].
pub(crate) fn test_recipient_from(r: &(impl Cells + ?Sized)) -> Result<TestRecipient, StoreError> {
    let fixed = match (
        r.opt_text(at!(TEST_RECIPIENT, "code_hash"))?,
        r.opt_int(at!(TEST_RECIPIENT, "code_length"))?,
    ) {
        (Some(hash), Some(length)) => Some(FixedCode {
            hash,
            length: u32::try_from(length).map_err(|_| corrupt("a code length"))?,
        }),
        _ => None,
    };
    Ok(TestRecipient {
        pattern: RecipientPattern::from_stored(r.text(at!(TEST_RECIPIENT, "pattern"))?),
        fixed,
        expires_at: r.int(at!(TEST_RECIPIENT, "expires_at"))?,
        disabled_at: r.opt_int(at!(TEST_RECIPIENT, "disabled_at"))?,
    })
}

columns!(
    /// A test inbox row's columns (read by [`inbox_row_from`]).
    INBOX_COLS,
    INBOX = ["key_digest", "message", "received_at"]
);

/// A test inbox row from [`INBOX_COLS`].
pub(crate) fn inbox_row_from(r: &(impl Cells + ?Sized)) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        key_digest: r.bytes(at!(INBOX, "key_digest"))?,
        payload: r.bytes(at!(INBOX, "message"))?,
        received_at: r.int(at!(INBOX, "received_at"))?,
    })
}

columns!(
    /// A suppression-list entry's columns (read by [`suppression_from`]).
    SUPPRESSION_COLS,
    SUPPRESSION = ["recipient", "reason", "source", "created_at"]
);

/// A suppression-list entry from [`SUPPRESSION_COLS`].
pub(crate) fn suppression_from(
    r: &(impl Cells + ?Sized),
) -> Result<crate::domain::suppression::Suppression, StoreError> {
    use crate::domain::suppression::{Suppression, SuppressionReason};
    Ok(Suppression {
        recipient: r.text(at!(SUPPRESSION, "recipient"))?,
        reason: one_of(
            SuppressionReason::parse(&r.text(at!(SUPPRESSION, "reason"))?),
            "a suppression reason",
        )?,
        source: r.text(at!(SUPPRESSION, "source"))?,
        created_at: r.int(at!(SUPPRESSION, "created_at"))?,
    })
}
