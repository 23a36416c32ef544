//! The send quotas and failure budget: what they are, and the rules both stores apply when
//! they check and count them inside a mint's (or a guess's) transaction.

use super::engine::{args, lock_key, Engine, Exec};
use super::sql::quota as sql;
use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::Millis;

/// Quotas to check and count in one atomic step at mint.
#[derive(Debug, Clone, Copy)]
pub struct SendQuota {
    pub recipient_max: u32,
    pub recipient_window_ms: Millis,
    pub cooldown_ms: Millis,
    pub tenant_max_per_hour: u32,
    pub max_failures: u32,
}

impl SendQuota {
    /// Whether any limit is on (all off: nothing to check or count at mint).
    pub fn any(&self) -> bool {
        self.recipient_max > 0
            || self.cooldown_ms > 0
            || self.tenant_max_per_hour > 0
            || self.max_failures > 0
    }

    /// The failure budget as it applies to a code allowed `max_attempts` guesses: never
    /// below them, so one code's own guesses always reach its `max_attempts`-th answer
    /// (422, then 410 `attempts_exhausted`, API.md §6.3) whatever `limits.recipient_max_failures`
    /// says; the budget still spans the recipient's codes.
    pub fn for_attempts(self, max_attempts: u32) -> SendQuota {
        SendQuota {
            max_failures: match self.max_failures {
                0 => 0,
                n => n.max(max_attempts),
            },
            ..self
        }
    }

    /// Only the recipient's failure budget: what a test mint is checked against (it sends
    /// nothing, but a recipient that keeps guessing wrong is refused like any, API.md §17.8).
    pub fn failures_only(&self) -> SendQuota {
        SendQuota {
            recipient_max: 0,
            cooldown_ms: 0,
            tenant_max_per_hour: 0,
            ..*self
        }
    }
}

pub(crate) const HOUR_MS: Millis = 3_600_000;
pub(crate) const MINUTE_MS: Millis = 60_000;

/// The quota rules, on counts a backend read; one place for both backends' arithmetic.
impl SendQuota {
    /// Until when the failure budget is spent, from its stored (failures, window start).
    pub(crate) fn failures_until(
        &self,
        failures: i64,
        start: Millis,
        now: Millis,
    ) -> Option<Millis> {
        let until = start + self.recipient_window_ms;
        (self.max_failures > 0 && failures >= i64::from(self.max_failures) && until > now)
            .then_some(until)
    }

    pub(crate) fn failures_refusal(
        &self,
        failures: i64,
        start: Millis,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        self.failures_until(failures, start, now)
            .map(|until| QuotaRefusal::Failures {
                retry_after_ms: (until - now).min(self.recipient_window_ms),
            })
    }

    /// From the recipient's last send. A send counted by a request that read the clock
    /// after this one (`last` past `now`) makes the wait no longer than the cooldown itself
    /// (API.md §6.31).
    pub(crate) fn cooldown_refusal(
        &self,
        last: Option<Millis>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        let next = last? + self.cooldown_ms;
        (self.cooldown_ms > 0 && next > now).then(|| QuotaRefusal::Cooldown {
            retry_after_ms: (next - now).min(self.cooldown_ms),
        })
    }

    /// The first sent-after time of the recipient window query.
    pub(crate) fn recipient_window_start(&self, now: Millis) -> Millis {
        now - self.recipient_window_ms
    }

    /// From the recipient's sends in the window and the oldest of them.
    pub(crate) fn recipient_refusal(
        &self,
        count: i64,
        oldest: Option<Millis>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        (self.recipient_max > 0 && count >= i64::from(self.recipient_max)).then(|| {
            QuotaRefusal::Recipient {
                retry_after_ms: oldest
                    .map_or(self.recipient_window_ms, |o| {
                        o + self.recipient_window_ms - now
                    })
                    .min(self.recipient_window_ms),
            }
        })
    }

    /// The minutes counted for the tenant's hour: those after this one. Per-minute counters
    /// keep the read at most 61 rows, whatever the tenant's volume.
    pub(crate) fn tenant_minutes_after(now: Millis) -> i64 {
        (now - HOUR_MS).div_euclid(MINUTE_MS)
    }

    /// From the tenant's sends in its hour and the oldest minute that holds any: the
    /// oldest minute stops counting once the window no longer reaches it (minute `m` counts
    /// while `m > (now - hour) / minute`, so until `m * minute + hour`), never more than the
    /// hour itself away (API.md §6.31).
    pub(crate) fn tenant_refusal(
        &self,
        count: i64,
        oldest_minute: Option<i64>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        (self.tenant_max_per_hour > 0 && count >= i64::from(self.tenant_max_per_hour)).then(|| {
            QuotaRefusal::Tenant {
                retry_after_ms: oldest_minute
                    .map_or(HOUR_MS, |m| m * MINUTE_MS + HOUR_MS - now)
                    .clamp(1, HOUR_MS),
            }
        })
    }
}

impl SendQuota {
    /// The tenant's test sends of the hour (API.md §13.1), counted like its relay sends
    /// (per minute) against their own limit.
    pub(crate) fn test_sends_refusal(
        per_hour: u32,
        count: i64,
        oldest_minute: Option<i64>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        let q = SendQuota {
            recipient_max: 0,
            recipient_window_ms: 0,
            cooldown_ms: 0,
            tenant_max_per_hour: per_hour,
            max_failures: 0,
        };
        match q.tenant_refusal(count, oldest_minute, now)? {
            QuotaRefusal::Tenant { retry_after_ms } => {
                Some(QuotaRefusal::TestSends { retry_after_ms })
            }
            other => Some(other),
        }
    }
}

/// One send asked of the quotas: whose, to whom, under which quotas, and when.
#[derive(Debug, Clone, Copy)]
pub struct QuotaAsk<'a> {
    pub tenant: &'a TenantId,
    /// The recipient's canonical form.
    pub recipient: &'a str,
    pub quota: &'a SendQuota,
    pub now: Millis,
}

impl<'a> QuotaAsk<'a> {
    pub fn new(
        tenant: &'a TenantId,
        recipient: &'a str,
        quota: &'a SendQuota,
        now: Millis,
    ) -> Self {
        QuotaAsk {
            tenant,
            recipient,
            quota,
            now,
        }
    }
}

/// A write the quotas may refuse: `Ok(Err(refusal))` when one does (the store then rolls
/// back whatever the write did, so nothing is counted or kept), `Err` when the store
/// failed.
pub type QuotaChecked = Result<Result<(), QuotaRefusal>, StoreError>;

pub trait QuotaStore {
    /// Every quota check of a mint, counting nothing (a cheap read before hashing; the
    /// mint's own transaction checks and counts again, atomically).
    fn check_quota(&self, ask: &QuotaAsk) -> QuotaChecked;
    /// Whether the recipient's failure budget is spent (and until when).
    fn failures_blocked(&self, ask: &QuotaAsk) -> Result<Option<Millis>, StoreError>;
}

impl<E: Engine> QuotaStore for E {
    fn check_quota(&self, ask: &QuotaAsk) -> QuotaChecked {
        self.read(|tx| quota_check(tx, ask))
    }

    fn failures_blocked(&self, ask: &QuotaAsk) -> Result<Option<Millis>, StoreError> {
        let QuotaAsk { quota: q, now, .. } = *ask;
        if q.max_failures == 0 {
            return Ok(None);
        }
        let key = args![ask.tenant.as_str(), ask.recipient];
        let row = self.row_opt(sql::FAILURES_BLOCKED, key, |r| Ok((r.int(0)?, r.int(1)?)))?;
        Ok(row.and_then(|(f, start)| q.failures_until(f, start, now)))
    }
}

/// Every quota check of a mint, counting nothing (callers that count hold the locks). Where
/// several limits refuse, the one that holds longest answers: a client that waits its
/// `Retry-After` is not refused by another.
pub(crate) fn quota_check(tx: &mut dyn Exec, ask: &QuotaAsk) -> QuotaChecked {
    let recipient = recipient_check(tx, ask)?.err();
    let tenant = tenant_check(tx, ask)?.err();
    Ok(QuotaRefusal::longest([recipient, tenant]).map_or(Ok(()), Err))
}

/// A count and the oldest of what it counted (one row of an aggregate).
fn count_row(
    tx: &mut dyn Exec,
    q: super::sql::Shared,
    args: &[super::sql::Arg],
) -> Result<(i64, Option<i64>), StoreError> {
    let row = tx.row_opt(q, args, |r| Ok((r.int(0)?, r.opt_int(1)?)))?;
    Ok(row.unwrap_or((0, None)))
}

/// The recipient's quotas: failure budget, cooldown, sends per window — where several
/// refuse, the one that holds longest.
pub(crate) fn recipient_check(tx: &mut dyn Exec, ask: &QuotaAsk) -> QuotaChecked {
    let QuotaAsk {
        quota: q,
        recipient,
        now,
        ..
    } = *ask;
    let t = ask.tenant.as_str();
    let mut failures = None;
    if q.max_failures > 0 {
        let row = tx.row_opt(sql::FAILURES_BLOCKED, args![t, recipient], |r| {
            Ok((r.int(0)?, r.int(1)?))
        })?;
        failures = row.and_then(|(f, start)| q.failures_refusal(f, start, now));
    }
    let mut cooldown = None;
    if q.cooldown_ms > 0 {
        let last = tx.row_opt(sql::LAST_SEND, args![t, recipient], |r| r.opt_int(0))?;
        cooldown = q.cooldown_refusal(last.flatten(), now);
    }
    let mut window = None;
    if q.recipient_max > 0 {
        let since = args![t, recipient, q.recipient_window_start(now)];
        let (count, oldest) = count_row(tx, sql::SENDS_IN_WINDOW, since)?;
        window = q.recipient_refusal(count, oldest, now);
    }
    Ok(QuotaRefusal::longest([failures, cooldown, window]).map_or(Ok(()), Err))
}

/// The tenant's sends in the last hour.
fn tenant_check(tx: &mut dyn Exec, ask: &QuotaAsk) -> QuotaChecked {
    let QuotaAsk { quota: q, now, .. } = *ask;
    if q.tenant_max_per_hour > 0 {
        let hour = args![ask.tenant.as_str(), SendQuota::tenant_minutes_after(now)];
        let (count, oldest) = count_row(tx, sql::TENANT_SENDS, hour)?;
        if let Some(r) = q.tenant_refusal(count, oldest, now) {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

/// The lock a recipient's quotas are checked and counted under.
pub(crate) fn recipient_lock(tenant: &TenantId, recipient: &str) -> String {
    lock_key("r", &[tenant.as_str(), recipient])
}

/// The lock the tenant's hourly quota is checked and counted under, if it has one.
pub(crate) fn tenant_lock(tenant: &TenantId, q: &SendQuota) -> Option<String> {
    (q.tenant_max_per_hour > 0).then(|| lock_key("t", &[tenant.as_str()]))
}

/// Count one send (callers checked the quotas under their locks).
fn count_send(tx: &mut dyn Exec, ask: &QuotaAsk) -> Result<(), StoreError> {
    let (t, now) = (ask.tenant.as_str(), ask.now);
    tx.exec(sql::TAKE_SEND, args![t, ask.recipient, now])?;
    let minute = args![t, now.div_euclid(MINUTE_MS)];
    tx.exec(sql::COUNT_TENANT_SEND, minute)?;
    Ok(())
}

/// The tenant's hourly quota checked under its lock ([`tenant_lock`], taken through
/// [`Exec::serialize`] after the recipient's lock and the code's row, as every mint takes
/// them), then one send counted — for callers that hold the recipient's lock and checked
/// its quotas already. A refusal counts nothing (the caller's transaction rolls back).
pub(crate) fn tenant_check_and_count(tx: &mut dyn Exec, ask: &QuotaAsk) -> QuotaChecked {
    if let Some(lock) = tenant_lock(ask.tenant, ask.quota) {
        tx.serialize(&[lock])?;
        if let Err(r) = tenant_check(tx, ask)? {
            return Ok(Err(r));
        }
    }
    count_send(tx, ask)?;
    Ok(Ok(()))
}

/// The recipient's quotas, checked by a caller that holds the recipient's lock; where they
/// refuse, the tenant's hour is read too (without its lock: it only says when to retry),
/// and the limit that holds longest answers.
pub(crate) fn recipient_check_first(tx: &mut dyn Exec, ask: &QuotaAsk) -> QuotaChecked {
    let Err(refused) = recipient_check(tx, ask)? else {
        return Ok(Ok(()));
    };
    let tenant = tenant_check(tx, ask)?.err();
    Ok(Err(
        QuotaRefusal::longest([Some(refused), tenant]).unwrap_or(refused)
    ))
}

/// Check every quota and, if all allow it, count one send (callers hold the write lock:
/// SQLite's single writer).
pub(crate) fn take_send(tx: &mut dyn Exec, ask: &QuotaAsk) -> QuotaChecked {
    if let Err(r) = recipient_check_first(tx, ask)? {
        return Ok(Err(r));
    }
    // The tenant's lock is SQLite's writer already (`serialize` takes nothing there).
    tenant_check_and_count(tx, ask)
}

/// Check the tenant's test sends of the hour under its test lock (taken last, like the
/// tenant's) and, if under `per_hour` (0: no limit), count one.
pub(crate) fn take_test_send(
    tx: &mut dyn Exec,
    tenant: &TenantId,
    per_hour: u32,
    now: Millis,
) -> QuotaChecked {
    let t = tenant.as_str();
    tx.serialize(&[lock_key("T", &[t])])?;
    if per_hour > 0 {
        let hour = args![t, SendQuota::tenant_minutes_after(now)];
        let (count, oldest) = count_row(tx, sql::TEST_SENDS, hour)?;
        if let Some(r) = SendQuota::test_sends_refusal(per_hour, count, oldest, now) {
            return Ok(Err(r));
        }
    }
    tx.exec(sql::COUNT_TEST_SEND, args![t, now.div_euclid(MINUTE_MS)])?;
    Ok(Ok(()))
}

/// Which quota refused a send, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    Recipient {
        retry_after_ms: Millis,
    },
    Cooldown {
        retry_after_ms: Millis,
    },
    Tenant {
        retry_after_ms: Millis,
    },
    Failures {
        retry_after_ms: Millis,
    },
    /// The tenant's test sends of the hour (`limits.test_sends_per_hour`).
    TestSends {
        retry_after_ms: Millis,
    },
}

impl QuotaRefusal {
    pub fn retry_after_ms(&self) -> Millis {
        match *self {
            QuotaRefusal::Recipient { retry_after_ms }
            | QuotaRefusal::Cooldown { retry_after_ms }
            | QuotaRefusal::Tenant { retry_after_ms }
            | QuotaRefusal::Failures { retry_after_ms }
            | QuotaRefusal::TestSends { retry_after_ms } => retry_after_ms,
        }
    }

    /// Of the limits that refuse, the one that holds longest (the first of equals).
    pub(crate) fn longest<const N: usize>(
        refusals: [Option<QuotaRefusal>; N],
    ) -> Option<QuotaRefusal> {
        refusals.into_iter().flatten().reduce(|a, b| {
            if b.retry_after_ms() > a.retry_after_ms() {
                b
            } else {
                a
            }
        })
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
