//! The SMS fraud guard's records (API.md §17.1): the tenant's SMS of the last hour by range
//! and country, and the numbers that verified a code (trusted for the tenant's
//! `trusted_days`). The velocity rules are here, once, for both backends.

use super::engine::{args, lock_key, Engine, Exec};
use super::quota::HOUR_MS;
use super::sql::{sms_guard as sql, Arg};
use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::Millis;

/// The velocity limits of one tenant's SMS (0: that limit is off).
#[derive(Debug, Clone, Copy)]
pub struct SmsVelocity {
    pub range_per_hour: u32,
    pub unverified_per_country_per_hour: u32,
}

/// An SMS a mint is about to send, as the guard counts it.
#[derive(Debug, Clone)]
pub struct SmsSend {
    pub tenant: TenantId,
    /// The E.164 number.
    pub phone: String,
    /// The code's key digest (its verification takes it out of the unverified count).
    pub key_digest: Vec<u8>,
    /// The number without its last digits.
    pub range: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// A number that verified a code of the tenant at or after this time skips the
    /// velocity limits (`None`: no number is trusted).
    pub trusted_since: Option<Millis>,
}

/// Which velocity limit refused an SMS, and when it would allow one again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsVelocityRefusal {
    Range { retry_after_ms: Millis },
    Country { retry_after_ms: Millis },
}

impl SmsVelocityRefusal {
    pub fn retry_after_ms(self) -> Millis {
        match self {
            SmsVelocityRefusal::Range { retry_after_ms }
            | SmsVelocityRefusal::Country { retry_after_ms } => retry_after_ms,
        }
    }
    /// The setting that refused it.
    pub fn setting(self) -> &'static str {
        match self {
            SmsVelocityRefusal::Range { .. } => "limits.sms_range_per_hour",
            SmsVelocityRefusal::Country { .. } => "limits.sms_unverified_per_country_per_hour",
        }
    }
}

/// How an SMS fared with the guard's velocity limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsTaken {
    /// Counted.
    Counted,
    /// A trusted number: neither checked nor counted.
    Trusted,
}

pub trait SmsGuardStore {
    /// Check the velocity limits and, if both allow it, count the SMS — atomically with
    /// every other mint of the tenant on any instance.
    fn take_sms(
        &self,
        send: &SmsSend,
        limits: &SmsVelocity,
        now: Millis,
    ) -> Result<Result<SmsTaken, SmsVelocityRefusal>, StoreError>;
    /// Give back a counted SMS whose mint (or resend) did not go ahead: the row of that key
    /// counted at `at`.
    fn release_sms(&self, key_digest: &[u8], at: Millis) -> Result<(), StoreError>;
    /// Forget the numbers whose trust ran out by `now` (each tenant's `sms.trusted_days`; at
    /// once when they are 0): how many.
    fn purge_trusted(&self, now: Millis) -> Result<usize, StoreError>;
}

/// A limit's refusal from the count in the hour (at most the limit) and the oldest send
/// counted (the limit-th newest: when it leaves the hour, there is room again).
pub(crate) fn over(limit: u32, count: i64, oldest: Option<Millis>, now: Millis) -> Option<Millis> {
    (limit > 0 && count >= i64::from(limit))
        .then(|| oldest.map_or(HOUR_MS, |o| (o + HOUR_MS - now).clamp(1000, HOUR_MS)))
}

impl<E: Engine> SmsGuardStore for E {
    fn take_sms(
        &self,
        send: &SmsSend,
        limits: &SmsVelocity,
        now: Millis,
    ) -> Result<Result<SmsTaken, SmsVelocityRefusal>, StoreError> {
        let (s, l) = (send.clone(), *limits);
        self.transact(move |tx| {
            let t = s.tenant.as_str();
            if let Some(since) = s.trusted_since {
                let q = args![t, s.phone.as_str(), since];
                if tx.row_opt(sql::TRUSTED, q, |r| r.flag(0))? == Some(true) {
                    return Ok(Ok(SmsTaken::Trusted));
                }
            }
            tx.serialize(&[lock_key("sms", &[t])])?;
            let from = now - HOUR_MS;
            let count = |tx: &mut dyn Exec, q, by: &str, limit: u32| {
                let n = tx.row_opt(q, args![t, by, from, limit], |r| {
                    Ok((r.int(0)?, r.opt_int(1)?))
                })?;
                let (n, oldest) = n.unwrap_or((0, None));
                Ok::<_, StoreError>(over(limit, n, oldest, now))
            };
            if l.range_per_hour > 0 {
                if let Some(retry_after_ms) = count(tx, sql::IN_RANGE, &s.range, l.range_per_hour)?
                {
                    return Ok(Err(SmsVelocityRefusal::Range { retry_after_ms }));
                }
            }
            let per_country = l.unverified_per_country_per_hour;
            if per_country > 0 {
                let q = sql::UNVERIFIED_IN_COUNTRY;
                if let Some(retry_after_ms) = count(tx, q, &s.country, per_country)? {
                    return Ok(Err(SmsVelocityRefusal::Country { retry_after_ms }));
                }
            }
            let row = args![
                t,
                s.key_digest.as_slice(),
                s.range.as_str(),
                s.country.as_str(),
                now
            ];
            tx.exec(sql::INSERT, row)?;
            Ok(Ok(SmsTaken::Counted))
        })
    }

    fn purge_trusted(&self, now: Millis) -> Result<usize, StoreError> {
        // In batches, each its own commit (see `records::PURGE_BATCH`): the first purge after
        // an upgrade may find years of numbers.
        let limit = i64::try_from(super::records::PURGE_BATCH).unwrap_or(i64::MAX);
        let n =
            super::records::in_batches(|| self.exec_one(sql::PURGE_TRUSTED, args![now, limit]))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn release_sms(&self, key_digest: &[u8], at: Millis) -> Result<(), StoreError> {
        let row = [Arg::from(key_digest), at.into()];
        self.exec_one(sql::RELEASE, &row).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_refuses_at_its_count_until_the_oldest_send_leaves_the_hour() {
        let now = 10 * HOUR_MS;
        assert_eq!(over(10, 9, Some(now - 1000), now), None);
        assert_eq!(
            over(10, 10, Some(now - 1000 * 60), now),
            Some(HOUR_MS - 60_000)
        );
        assert_eq!(over(0, 1000, Some(now), now), None);
        assert_eq!(over(1, 1, None, now), Some(HOUR_MS));
    }
}
