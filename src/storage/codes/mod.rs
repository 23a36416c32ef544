//! The code aggregate: a code stored with its outgoing message (the mint; its insert in
//! `insert.rs`), its attempts reserved and given back, its verify, status and cancel.

use super::cells::{channel_from, stored_locale, view_cols, view_from, Cells, VIEW_WIDTH};
use super::engine::{args, Dialect, Engine, PG_NOW};
use super::hosted::SessionFinisher;
use super::integration::insert_event_in;
use super::integration::NewEvent;
use super::links::LinkFinisher;
use super::quota::{QuotaAsk, QuotaChecked, QuotaRefusal, SendQuota};
use super::sql::{self, Arg};
use super::stats::{count_in, tally_from};
use super::test_mode::InboxEntry;
use super::StoreError;
use crate::domain::challenge::{ChallengeView, VerifiedVia};
use crate::domain::keys::{CodeApi, TenantId};
use crate::domain::locale::Locale;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Channel;
use crate::domain::stats::{verify_secs, Counted};
use crate::domain::Millis;

mod claims;
mod insert;

pub use claims::ClaimStore;
pub(crate) use insert::{insert_challenge, minted_in, Inserted};
pub use insert::{NewChallenge, NewLink, StagedAnswers};

/// The outgoing message of a new code, stored in the same commit as the code.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    /// The delivery address (local part as given, ASCII domain).
    pub recipient: String,
    /// The rendered message, sealed with the data key.
    pub payload: Vec<u8>,
    /// The row starts leased by the minting instance, which sends it itself. A sync
    /// message is sent at once; if that instance dies, the sweep records the delivery as
    /// `unknown` once the lease ran out (no background sender ever sends a sync row). An
    /// async one is handed to that instance's sender only once its store answered in time:
    /// a store that commits after its request answered 503 leaves a message nobody sends
    /// before the undo cancels its code (claimed from the queue, it could have gone out
    /// first). Its send has not begun (`unstarted`), so if that instance never sends it the
    /// row goes back to the queue when the lease runs out.
    pub lease: Option<Lease>,
    /// Async: the row's send has not begun (see `lease`).
    pub unstarted: bool,
    /// Its channel: claims take each channel's messages within its own window.
    pub channel: crate::domain::recipient::Channel,
}

/// Who holds an outbox row, and for how long from now (on PostgreSQL measured on the
/// database's clock, so instances whose clocks differ agree on when it ends).
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub for_ms: Millis,
}

/// An attempt reserved atomically: the hash to compare against and the attempt count
/// after the reservation.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The key's codes: the latest first, then those it resent over (API.md §13.3).
    pub code_hashes: Vec<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    /// The address or number as it was given.
    pub recipient: String,
    pub email_canonical: String,
    pub channel: Channel,
    pub purpose: Purpose,
    /// The locale its message was written in (`None` for imported codes).
    pub locale: Option<Locale>,
    /// A test code (a test recipient's or a test tenant's).
    pub test: bool,
}

/// A reserved attempt from the row its `UPDATE` returns: `code_hash, attempts,
/// max_attempts, email, email_canonical, purpose, locale, earlier_hashes, test, channel`.
pub(crate) fn reservation_from(r: &dyn Cells) -> Result<Reservation, StoreError> {
    Ok(Reservation {
        code_hashes: key_hashes(r.text(0)?, &r.text(7)?),
        attempts: r.count(1)?,
        max_attempts: r.count(2)?,
        recipient: r.text(3)?,
        email_canonical: r.text(4)?,
        purpose: Purpose::from_stored(r.text(5)?),
        locale: stored_locale(r.opt_text(6)?),
        test: r.flag(8)?,
        channel: channel_from(&r.text(9)?)?,
    })
}

/// The hashes a key verifies against, from its `code_hash` and `earlier_hashes` columns.
pub(crate) fn key_hashes(current: String, earlier: &str) -> Vec<String> {
    std::iter::once(current)
        .chain(earlier.split_whitespace().map(str::to_string))
        .collect()
}

/// The SQL that moves a key's code into its earlier ones (PHC strings hold no spaces).
pub(crate) const PUSH_EARLIER: &str =
    "earlier_hashes = CASE WHEN earlier_hashes = '' THEN code_hash \
     ELSE earlier_hashes || ' ' || code_hash END";

/// A new code under a key that is still pending (API.md §13.3).
#[derive(Debug, Clone)]
pub struct Resend {
    pub tenant_id: TenantId,
    pub key_digest: Vec<u8>,
    /// The new code's hash (made with the key's salt).
    pub code_hash: String,
    pub max_resends: u32,
    /// The recipient's canonical form (its quotas).
    pub recipient: String,
    pub via: ResendVia,
}

impl Resend {
    /// Its send, as the quotas `q` judge it at `now`.
    pub(crate) fn quota_ask<'a>(&'a self, q: &'a SendQuota, now: Millis) -> QuotaAsk<'a> {
        QuotaAsk::new(&self.tenant_id, &self.recipient, q, now)
    }
}

/// A code's message to queue, and the quotas its send is checked and counted under (none:
/// not counted).
#[derive(Debug, Clone)]
pub struct Queued {
    pub outbox: NewOutbox,
    pub quota: Option<SendQuota>,
}

/// Where a resent code's message goes.
#[derive(Debug, Clone)]
pub enum ResendVia {
    /// The outbox, as at mint, after the quotas (if any) are checked and counted.
    Relay(Queued),
    /// The tenant's test inbox.
    Inbox(InboxEntry),
}

/// A code by its shareable key: whose, the key's digest, and which API minted it.
#[derive(Debug, Clone)]
pub struct CodeKey {
    pub tenant: TenantId,
    pub key_digest: Vec<u8>,
    pub flavor: CodeApi,
}

impl CodeKey {
    fn args(&self) -> Vec<Arg> {
        the_code(&self.key_digest, &self.tenant, self.flavor)
    }
}

/// `$1` to `$3` of the statements that find a code ([`THE_CODE`]).
fn the_code(key_digest: &[u8], tenant: &TenantId, flavor: CodeApi) -> Vec<Arg> {
    let t = tenant.as_str();
    vec![key_digest.into(), t.into(), flavor.as_str().into()]
}

/// A guess to reserve an attempt for ([`CodeStore::reserve_attempt`]).
#[derive(Debug, Clone)]
pub struct AttemptAsk {
    pub code: CodeKey,
    /// The guess's length: it must be the code's (a wrong length is no guess).
    pub code_len: u32,
    /// Its recipient's failure budget.
    pub quota: SendQuota,
    /// The process taking the attempt (its lease owner id), kept with the attempt's time.
    pub by: String,
}

impl AttemptAsk {
    /// The failures that spend the recipient's budget (`i64::MAX`: no budget); the
    /// reservation raises it to the code's own `max_attempts` (`SendQuota::for_attempts`).
    pub(crate) fn failure_cap(&self) -> i64 {
        match self.quota.max_failures {
            0 => i64::MAX,
            n => n.into(),
        }
    }
}

/// A verification to record ([`CodeOutcomeStore::finish_verify`]).
#[derive(Debug, Clone)]
pub struct VerifyFinish {
    pub tenant: TenantId,
    pub key_digest: Vec<u8>,
    /// What verified it: a code or a magic link.
    pub via: VerifiedVia,
    /// `otp.verified`, written in the same transaction.
    pub event: Option<NewEvent>,
    /// The recipient (canonical) whose failure budget the success resets.
    pub clear_failures_of: Option<String>,
    /// The browser that confirmed a magic link, kept with the link in the same transaction.
    pub confirmed_by: Option<LinkFinisher>,
    /// The hosted session the code finishes, in the same transaction (only while the
    /// session is open with this code).
    pub session: Option<SessionFinisher>,
    /// A code compared under a reserved attempt: its outcome is in, the attempt no longer
    /// open (`attempts_open`), whether or not this verify wins. A link takes none.
    pub reserved: Option<Reserved>,
}

/// The attempt a verify of the right code reserved: when the code is no longer live by the
/// time it is finished (it expired, or another verify ended it, while this one was being
/// compared), it was no wrong guess — the attempt and the recipient's failure it took are
/// given back with the answer (no guess is compared on a code that is not live, so this
/// lets no other be).
#[derive(Debug, Clone)]
pub struct Reserved {
    /// When it was reserved (the failure counted in the window of that time).
    pub at: Millis,
    /// The recipient (canonical) whose failure budget it took.
    pub recipient: String,
}

/// What a resend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resent {
    /// Queued (or put in the test inbox); `resends` is the key's count after this one, as
    /// the change wrote it (a concurrent resend may have counted before it).
    Done {
        resends: u32,
    },
    Refused(QuotaRefusal),
    /// The key is no longer pending, has used its resends, or its last message is still
    /// on its way: nothing changed (the caller reads the key to say which).
    NotNow,
}

pub trait CodeStore {
    /// Store a code and its outgoing message in one durable commit, after checking and
    /// counting its quotas (if any) in the same transaction. The code is `pending` with the
    /// next sequence number of its (tenant, recipient, purpose, flavor) group and delivery
    /// `queued`; nothing is superseded yet.
    fn insert_code(&self, c: &NewChallenge, q: &Queued, now: Millis) -> QuotaChecked;
    /// Store a test code (API.md §13.1): its message goes to the test inbox instead of any
    /// relay, in the same commit, counted against the tenant's test sends (`inbox.per_hour`)
    /// and no relay quota; the code's delivery is `sent` and it supersedes its group's
    /// older pending codes at once.
    fn insert_test_code(&self, c: &NewChallenge, inbox: &InboxEntry, now: Millis) -> QuotaChecked;
    /// Send a new code under a key, in one transaction: only while the key is pending,
    /// unexpired, unexhausted, under `max_resends`, and without a message still on its way;
    /// its current code joins the earlier ones (which keep verifying).
    fn resend_code(&self, r: &Resend, now: Millis) -> Result<Resent, StoreError>;
    /// Reserve one guess: only for a pending, unexpired, unexhausted code whose recipient's
    /// failure budget (`a.quota`) is not spent; the guess counts against that budget at once (a
    /// match clears it). One transaction, so atomic under any concurrency.
    fn reserve_attempt(
        &self,
        a: &AttemptAsk,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError>;
}

/// A code's outcomes and views: an attempt given back, a verification, a cancel, what a
/// status or a resend reads. Written once for both backends (`impl<E: Engine>
/// CodeOutcomeStore for E`); the mint and the reservation of an attempt, whose locks and
/// sequence numbers each backend takes its own way, are [`CodeStore`]'s.
pub trait CodeOutcomeStore {
    /// A pending key's view and current code hash (the salt its resends reuse).
    fn resend_target(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<Option<(ChallengeView, String)>, StoreError>;
    /// Give back a reserved attempt that was never evaluated, and the recipient's failure
    /// budget the reservation took. The reservation is named by its stamp (`at`, `by`, as
    /// `reserve_attempt` wrote them), and the stamp is cleared: a release runs again safely
    /// (a retry after an answer that was lost gives back nothing more), and one whose
    /// reservation a later guess stamped over gives back nothing.
    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
        stamp: (Millis, &str),
    ) -> Result<(), StoreError>;
    /// A wrong guess's outcome is in: its reserved attempt is no longer open (a verify that
    /// finds every attempt taken waits while some are, on any instance).
    fn attempt_done(&self, tenant: &TenantId, key_digest: &[u8]) -> Result<(), StoreError>;
    /// `pending` → `verified` (by `f.via`: `code` or `link`) if still pending and
    /// unexpired; false otherwise. When the verify succeeds, `f.event` (`otp.verified`) is
    /// written and the failure budget of `f.clear_failures_of` (a recipient) is reset, in
    /// the same transaction.
    fn finish_verify(&self, f: &VerifyFinish, now: Millis) -> Result<bool, StoreError>;
    /// The enabled tenant a code belongs to (for OtpMint's verify, which names no tenant).
    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: CodeApi,
    ) -> Result<Option<TenantId>, StoreError>;
    fn challenge(&self, k: &CodeKey, now: Millis) -> Result<Option<ChallengeView>, StoreError>;
    /// Cancel a pending code: `Some((true, view))` cancelled, `Some((false, view))` it had
    /// already ended, `None` unknown.
    fn cancel(&self, k: &CodeKey, now: Millis)
        -> Result<Option<(bool, ChallengeView)>, StoreError>;
}

/// A code's view selected `… FROM challenges c WHERE <filter>` (the filter binds `args`):
/// the text and its values. SQLite shows a lease as running by the caller's `now` (bound
/// after `args`); PostgreSQL by the database's clock, which its leases are measured on.
fn view_query(
    d: Dialect,
    extra: &str,
    filter: &str,
    mut args: Vec<Arg>,
    now: Millis,
) -> (String, Vec<Arg>) {
    let clock = match d {
        Dialect::Sqlite => {
            args.push(now.into());
            d.placeholder(args.len())
        }
        Dialect::Postgres => PG_NOW.to_string(),
    };
    let filter = match d {
        Dialect::Sqlite => filter.replace('$', "?"),
        Dialect::Postgres => filter.to_string(),
    };
    let cols = view_cols(&clock);
    (
        format!("SELECT {cols}{extra} FROM challenges c WHERE {filter}"),
        args,
    )
}

/// A code of a tenant and flavour: `$1` its key digest, `$2` the tenant, `$3` the flavour.
const THE_CODE: &str = "c.key_digest = $1 AND c.tenant_id = $2 AND c.flavor = $3";

impl<E: Engine> CodeOutcomeStore for E {
    fn resend_target(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<Option<(ChallengeView, String)>, StoreError> {
        let key = the_code(key_digest, tenant, CodeApi::Native);
        let (text, args) = view_query(self.dialect(), ", c.code_hash", THE_CODE, key, now);
        self.first_text(&text, &args, |r| Ok((view_from(r)?, r.text(VIEW_WIDTH)?)))
    }

    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
        (at, by): (Millis, &str),
    ) -> Result<(), StoreError> {
        let t = Arg::from(tenant.as_str());
        let attempt = [key_digest.into(), t.clone(), at.into(), by.into()];
        // Only in the window the reservation counted in: a release retried after the window
        // started again takes nothing from the new one.
        let failure = [t, recipient.into(), at.into()];
        self.transact(move |tx| {
            if tx.exec(sql::codes::RELEASE_ATTEMPT, &attempt)? > 0 {
                tx.exec(sql::codes::RELEASE_FAILURE, &failure)?;
            }
            Ok(())
        })
    }

    fn attempt_done(&self, tenant: &TenantId, key_digest: &[u8]) -> Result<(), StoreError> {
        let done = [key_digest.into(), tenant.as_str().into()];
        self.exec_one(sql::codes::ATTEMPT_DONE, &done).map(drop)
    }

    fn finish_verify(&self, f: &VerifyFinish, now: Millis) -> Result<bool, StoreError> {
        let (t, digest) = (Arg::from(f.tenant.as_str()), Arg::from(&f.key_digest[..]));
        let verify = [digest.clone(), t.clone(), now.into(), f.via.as_str().into()];
        let clear = f
            .clear_failures_of
            .as_deref()
            .map(|r| [t.clone(), r.into()]);
        let event = f.event.clone();
        let finisher = f
            .confirmed_by
            .as_ref()
            .map(|c| [Arg::from(&c.link[..]), Arg::from(&c.by[..])]);
        let session = f.session.as_ref().map(|h| {
            let by = Arg::from(&h.by[..]);
            let stored = super::hosted::stored_session_id(&h.id);
            [
                stored.into(),
                now.into(),
                digest.clone(),
                by,
                h.id.as_str().into(),
            ]
        });
        let done = f.reserved.as_ref().map(|_| [digest.clone(), t.clone()]);
        let too_late = f.reserved.as_ref().map(|r| {
            (
                [digest.clone(), t.clone(), now.into()],
                [t.clone(), r.recipient.as_str().into(), r.at.into()],
            )
        });
        self.transact(move |tx| {
            if let Some(done) = &done {
                tx.exec(sql::codes::ATTEMPT_DONE, done)?;
            }
            let Some(tally) = tx.row_opt(sql::codes::VERIFY, &verify, |r| tally_from(r, 0))? else {
                if let Some((attempt, failure)) = &too_late {
                    if tx.exec(sql::codes::UNCOUNT_TOO_LATE, attempt)? > 0 {
                        tx.exec(sql::codes::RELEASE_FAILURE, failure)?;
                    }
                }
                return Ok(false);
            };
            if let Some(finisher) = &finisher {
                tx.exec(sql::links::FINISHED_BY, finisher)?;
            }
            if let Some(session) = &session {
                tx.exec(sql::hosted::FINISH_SESSION, session)?;
            }
            if let Some(e) = &event {
                insert_event_in(tx, e)?;
            }
            if let Some(clear) = &clear {
                tx.exec(sql::codes::FINISH_VERIFY, clear)?;
            }
            // A number that verified is trusted by the SMS guard (API.md §17.1).
            tx.exec(sql::sms_guard::TRUST, &[digest.clone(), now.into()])?;
            tx.exec(sql::sms_guard::VERIFIED, std::slice::from_ref(&digest))?;
            let secs = verify_secs(tally.created_at, now);
            count_in(tx, &tally, Counted::Verified(secs))?;
            Ok(true)
        })
    }

    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: CodeApi,
    ) -> Result<Option<TenantId>, StoreError> {
        let q = args![key_digest, flavor.as_str()];
        let owner = self.row_opt(sql::codes::OWNER, q, |r| r.text(0))?;
        Ok(owner.map(TenantId::from_trusted))
    }

    fn challenge(&self, k: &CodeKey, now: Millis) -> Result<Option<ChallengeView>, StoreError> {
        let (text, args) = view_query(self.dialect(), "", THE_CODE, k.args(), now);
        Ok(self
            .rows_text(&text, &args, |r| view_from(r))?
            .into_iter()
            .next())
    }

    fn cancel(
        &self,
        k: &CodeKey,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError> {
        let mut cancel = k.args();
        cancel.push(now.into());
        let (view, args) = view_query(self.dialect(), "", THE_CODE, k.args(), now);
        self.transact(move |tx| {
            let n = tx.exec(sql::codes::CANCEL, &cancel)?;
            let v = tx.first_text(&view, &args, |r| view_from(r))?;
            Ok(v.map(|v| (n == 1, v)))
        })
    }
}
