//! The mint's insert: a new code as stored (its magic link with it), how it is inserted —
//! counted and queued, a test code, or one imported from OtpMint — written once for both
//! backends over the engine, and its mint counted in the statistics.

use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::{CodeApi, TenantId};
use crate::domain::stats::{CodeDims, Counted};
use crate::domain::Millis;
use crate::storage::engine::{args, Exec};
use crate::storage::quota::{QuotaAsk, SendQuota};
use crate::storage::sql;
use crate::storage::stats::{bump_in, Bump, STATE_COUNTED, STATE_NOT_COUNTED};
use crate::storage::StoreError;

/// A challenge to insert (status `pending`, delivery `queued`).
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub key_digest: Vec<u8>,
    pub tenant_id: TenantId,
    pub flavor: CodeApi,
    pub email: String,
    pub email_canonical: String,
    pub purpose: crate::domain::purpose::Purpose,
    pub code_hash: String,
    pub max_attempts: u32,
    pub code_length: u32,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub delivery_mode: DeliveryMode,
    /// The locale the message was written in (`None`: imported from OtpMint).
    pub locale: Option<crate::domain::locale::Locale>,
    /// How its message travels: `email` or `sms`.
    pub channel: crate::domain::recipient::Channel,
    /// A magic link that verifies it (API.md §14.2).
    pub link: Option<NewLink>,
    /// The answers of the mint under an idempotency key, kept with the key in the code's
    /// transaction (API.md §9).
    pub staged: Option<StagedAnswers>,
}

/// What the idempotency key `hold` answers once its code is stored: sealed answers, one for
/// each delivery status the code may have when a repeat comes after its holder died.
#[derive(Debug, Clone)]
pub struct StagedAnswers {
    pub hold: crate::storage::integration::IdemHold,
    pub sealed: Vec<u8>,
}

/// How a code is inserted: its attempts used, its delivery (mode, status, attempts, sent
/// at), whether it is a test code, and its statistics state.
pub(crate) struct Inserted {
    attempts: u32,
    delivery: (DeliveryMode, &'static str, u32, Option<Millis>),
    test: bool,
    stats_state: i64,
}

impl Inserted {
    /// A minted code, counted in the statistics, its message queued.
    pub(crate) fn queued(c: &NewChallenge) -> Inserted {
        Inserted {
            attempts: 0,
            delivery: (c.delivery_mode, "queued", 0, None),
            test: false,
            stats_state: STATE_COUNTED,
        }
    }

    /// A test code, its message put in the test inbox at `now` (counted once, as a test).
    pub(crate) fn test(c: &NewChallenge, now: Millis) -> Inserted {
        Inserted {
            attempts: 0,
            delivery: (c.delivery_mode, "sent", 0, Some(now)),
            test: true,
            stats_state: STATE_NOT_COUNTED,
        }
    }

    /// A code carried over from OtpMint with `attempts` used: its message was sent (sync)
    /// when it was minted; not in the statistics.
    pub(crate) fn imported(c: &NewChallenge, attempts: u32) -> Inserted {
        Inserted {
            attempts,
            delivery: (DeliveryMode::Sync, "sent", 1, Some(c.created_at)),
            test: false,
            stats_state: STATE_NOT_COUNTED,
        }
    }
}

/// Insert a pending code with the next sequence number of its group, and its magic link.
/// The group's lock ([`Exec::serialize`]: on PostgreSQL an advisory lock held until commit;
/// SQLite's one writer needs none) makes numbers be taken one at a time and in commit
/// order; the unique index on the group's sequence is the backstop.
pub(crate) fn insert_challenge(
    tx: &mut dyn Exec,
    c: &NewChallenge,
    tenant_id: &str,
    how: Inserted,
) -> Result<(), StoreError> {
    let group = [
        tenant_id,
        c.email_canonical.as_str(),
        c.purpose.as_str(),
        c.flavor.as_str(),
    ];
    tx.serialize(&[crate::storage::engine::lock_key("g", &group)])?;
    let (mode, status, attempts, sent_at) = how.delivery;
    let row = args![
        c.key_digest.as_slice(),
        tenant_id,
        c.flavor.as_str(),
        c.email.as_str(),
        c.email_canonical.as_str(),
        c.purpose.as_str(),
        c.code_hash.as_str(),
        how.attempts,
        c.max_attempts,
        c.code_length,
        c.created_at,
        c.expires_at,
        mode.as_str(),
        status,
        attempts,
        sent_at,
        c.locale.as_ref().map(|l| l.as_str()),
        c.channel.as_str(),
        how.test,
        how.stats_state,
    ];
    tx.exec(sql::codes::INSERT_CHALLENGE, row)?;
    if let Some(l) = &c.link {
        let link = args![
            l.digest.as_slice(),
            c.key_digest.as_slice(),
            l.return_url.as_str(),
            l.key_sealed.as_slice(),
            c.created_at,
        ];
        tx.exec(sql::codes::INSERT_MAGIC_LINK, link)?;
        if let Some(ch) = &l.code_challenge {
            let challenge = args![c.key_digest.as_slice(), ch.as_str()];
            tx.exec(sql::codes::SET_CHALLENGE, challenge)?;
        }
    }
    Ok(())
}

impl NewChallenge {
    /// Its send, as the quotas `q` judge it at `now`.
    pub(crate) fn quota_ask<'a>(&'a self, q: &'a SendQuota, now: Millis) -> QuotaAsk<'a> {
        QuotaAsk::new(&self.tenant_id, &self.email_canonical, q, now)
    }
}

/// A magic link: its token's digest, where it returns to, and the shareable key sealed for
/// the redirect.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub digest: Vec<u8>,
    pub return_url: String,
    pub key_sealed: Vec<u8>,
    /// The PKCE challenge its outcome is claimed with (API.md §17.2), kept on the code.
    pub code_challenge: Option<String>,
}

/// Count a new code's mint (`Minted`, or `Test`) and keep its idempotency key's answers —
/// the last statements of its transaction (the key's row locked last, after the group's and
/// the tenant's locks every mint takes).
pub(crate) fn minted_in(
    tx: &mut dyn Exec,
    c: &NewChallenge,
    what: Counted,
) -> Result<(), StoreError> {
    let locale = c.locale.as_ref().map(|l| l.as_str());
    let dims = CodeDims::of(
        c.purpose.as_str(),
        locale,
        c.channel.as_str(),
        &c.email_canonical,
    );
    let (tenant, created_at) = (c.tenant_id.as_str(), c.created_at);
    bump_in(
        tx,
        &Bump {
            tenant,
            created_at,
            dims: &dims,
            what,
        },
    )?;
    if let Some(staged) = &c.staged {
        let mut row = staged.hold.args();
        row.extend([
            staged.sealed.as_slice().into(),
            c.key_digest.as_slice().into(),
        ]);
        // Nothing staged: the claim went to another request (this one's ran out), which
        // then mints or replays by itself; this request's answer will not be kept either.
        if tx.exec(sql::integration::IDEM_STAGE, &row)? == 0 {
            tracing::warn!(tenant_id = %c.tenant_id, "an idempotent mint's claim ran out before its code was stored: its answers are not kept with the key");
        }
    }
    Ok(())
}
