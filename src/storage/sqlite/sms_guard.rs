//! SQLite: the SMS fraud guard's counts (the rules are `storage::sms_guard`'s).

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::Millis;
use crate::storage::quota::HOUR_MS;
use crate::storage::sms_guard::{over, SmsSend, SmsTaken, SmsVelocity, SmsVelocityRefusal};
use crate::storage::{SmsGuardStore, StoreError};

impl SmsGuardStore for SqliteStore {
    fn take_sms(
        &self,
        send: &SmsSend,
        limits: &SmsVelocity,
        now: Millis,
    ) -> Result<Result<SmsTaken, SmsVelocityRefusal>, StoreError> {
        let (s, l) = (send.clone(), *limits);
        // The single writer makes the check and the count one step.
        self.writer.write(move |tx| {
            let t = s.tenant.as_str();
            if let Some(since) = s.trusted_since {
                let trusted: bool = tx.query_row_cached(
                    sql::sms_guard::TRUSTED.sqlite,
                    params![t, s.phone, since],
                    |r| r.get(0),
                )?;
                if trusted {
                    return Ok(Ok(SmsTaken::Trusted));
                }
            }
            let from = now - HOUR_MS;
            if l.range_per_hour > 0 {
                let (n, oldest): (i64, Option<Millis>) = tx.query_row_cached(
                    sql::sms_guard::IN_RANGE.sqlite,
                    params![t, s.range, from, l.range_per_hour],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if let Some(retry_after_ms) = over(l.range_per_hour, n, oldest, now) {
                    return Ok(Err(SmsVelocityRefusal::Range { retry_after_ms }));
                }
            }
            if l.unverified_per_country_per_hour > 0 {
                let (n, oldest): (i64, Option<Millis>) = tx.query_row_cached(
                    sql::sms_guard::UNVERIFIED_IN_COUNTRY.sqlite,
                    params![t, s.country, from, l.unverified_per_country_per_hour],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if let Some(retry_after_ms) =
                    over(l.unverified_per_country_per_hour, n, oldest, now)
                {
                    return Ok(Err(SmsVelocityRefusal::Country { retry_after_ms }));
                }
            }
            tx.execute_cached(
                sql::sms_guard::INSERT.sqlite,
                params![t, s.key_digest, s.range, s.country, now],
            )?;
            Ok(Ok(SmsTaken::Counted))
        })
    }

    fn release_sms(&self, key_digest: &[u8], at: Millis) -> Result<(), StoreError> {
        let d = key_digest.to_vec();
        self.writer.write(move |tx| {
            tx.execute_cached(sql::sms_guard::RELEASE.sqlite, params![d, at])?;
            Ok(())
        })
    }
}
