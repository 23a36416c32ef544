//! PostgreSQL: the SMS fraud guard's counts, under the tenant's advisory lock so every
//! instance checks and counts in one step (the rules are `storage::sms_guard`'s).

use super::quota::{lock_all, lock_key};
use super::PgStore;
use crate::domain::Millis;
use crate::storage::quota::HOUR_MS;
use crate::storage::sms_guard::{over, SmsSend, SmsTaken, SmsVelocity, SmsVelocityRefusal};
use crate::storage::sql;
use crate::storage::{SmsGuardStore, StoreError};

impl SmsGuardStore for PgStore {
    fn take_sms(
        &self,
        s: &SmsSend,
        l: &SmsVelocity,
        now: Millis,
    ) -> Result<Result<SmsTaken, SmsVelocityRefusal>, StoreError> {
        let t = s.tenant.as_str();
        self.tx(|tx| {
            if let Some(since) = s.trusted_since {
                let trusted: bool = tx
                    .query_one(sql::sms_guard::TRUSTED.pg, &[&t, &s.phone, &since])?
                    .try_get(0)?;
                if trusted {
                    return Ok(Ok(SmsTaken::Trusted));
                }
            }
            lock_all(tx, &[lock_key("sms", &[t])])?;
            let from = now - HOUR_MS;
            if l.range_per_hour > 0 {
                let row = tx.query_one(
                    sql::sms_guard::IN_RANGE.pg,
                    &[&t, &s.range, &from, &i64::from(l.range_per_hour)],
                )?;
                let (n, oldest): (i64, Option<Millis>) = (row.try_get(0)?, row.try_get(1)?);
                if let Some(retry_after_ms) = over(l.range_per_hour, n, oldest, now) {
                    return Ok(Err(SmsVelocityRefusal::Range { retry_after_ms }));
                }
            }
            if l.unverified_per_country_per_hour > 0 {
                let row = tx.query_one(
                    sql::sms_guard::UNVERIFIED_IN_COUNTRY.pg,
                    &[
                        &t,
                        &s.country,
                        &from,
                        &i64::from(l.unverified_per_country_per_hour),
                    ],
                )?;
                let (n, oldest): (i64, Option<Millis>) = (row.try_get(0)?, row.try_get(1)?);
                if let Some(retry_after_ms) =
                    over(l.unverified_per_country_per_hour, n, oldest, now)
                {
                    return Ok(Err(SmsVelocityRefusal::Country { retry_after_ms }));
                }
            }
            tx.execute(
                sql::sms_guard::INSERT.pg,
                &[&t, &s.key_digest, &s.range, &s.country, &now],
            )?;
            Ok(Ok(SmsTaken::Counted))
        })
    }

    fn release_sms(&self, key_digest: &[u8], at: Millis) -> Result<(), StoreError> {
        self.conn()?
            .db()
            .execute(sql::sms_guard::RELEASE.pg, &[&key_digest, &at])?;
        Ok(())
    }
}
