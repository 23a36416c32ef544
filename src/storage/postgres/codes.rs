//! PostgreSQL: codes — stored with their message (the mint's one transaction: quota locks
//! and counts, code, outbox row), attempts reserved under row locks and given back, verify,
//! status, cancel.

use super::integration::insert_event_in;
use super::quota::{
    count_send, lock_all, recipient_check, recipient_lock, tenant_check, tenant_lock,
};
use super::{insert_challenge, PgStore};
use crate::domain::challenge::ChallengeView;
use crate::domain::keys::{Flavor, TenantId};
use crate::domain::Millis;
use crate::storage::cells::{view_cols, view_from, Cells};
use crate::storage::integration::NewEvent;
use crate::storage::{
    CodeStore, NewChallenge, NewOutbox, QuotaRefusal, Reservation, SendQuota, StoreError,
};

impl CodeStore for PgStore {
    fn insert_code(
        &self,
        c: &NewChallenge,
        m: &NewOutbox,
        q: Option<&SendQuota>,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        let tenant = c.tenant_id.as_str();
        self.tx_unless_refused(|tx| {
            if let Some(q) = q {
                lock_all(tx, &[recipient_lock(&c.tenant_id, &c.email_canonical)])?;
                if let Err(r) = recipient_check(tx, &c.tenant_id, &c.email_canonical, q, now)? {
                    return Ok(Err(r));
                }
            }
            insert_challenge(
                tx,
                c,
                tenant,
                0,
                (c.delivery_mode.as_str(), "queued", 0, None),
            )?;
            // A sync row's lease is measured on the database's clock, like every lease here.
            tx.execute(
                concat!(
                    "INSERT INTO outbox (key_digest, tenant_id, recipient, payload, due_at, attempts, lease_until, leased_by, quota_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, ",
                    db_now!(),
                    " + $6, $7, $8, $5)"
                ),
                &[
                    &c.key_digest,
                    &tenant,
                    &m.recipient,
                    &m.payload,
                    &now,
                    &m.lease.as_ref().map(|l| l.for_ms),
                    &m.lease.as_ref().map(|l| l.owner.as_str()),
                    &q.map(|_| now),
                ],
            )?;
            if let Some(q) = q {
                // The tenant's lock last (see `quota_locks`); a refusal here rolls the code
                // and its message back.
                if let Some(t) = tenant_lock(&c.tenant_id, q) {
                    lock_all(tx, &[t])?;
                    if let Err(r) = tenant_check(tx, &c.tenant_id, q, now)? {
                        return Ok(Err(r));
                    }
                }
                count_send(tx, &c.tenant_id, &c.email_canonical, now)?;
            }
            Ok(Ok(()))
        })
    }

    fn reserve_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        code_len: u32,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError> {
        let max_failures: i64 = if q.max_failures == 0 {
            i64::MAX
        } else {
            q.max_failures.into()
        };
        let t = tenant.as_str();
        self.tx(|tx| {
            if q.max_failures > 0 {
                // The recipient's failure budget is shared by all its codes: take its lock
                // (the same one a mint's quota check takes) before reading it.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('r' || chr(31) || tenant_id || chr(31) || email_canonical, 0)) \
                     FROM challenges WHERE key_digest = $1 AND tenant_id = $2",
                    &[&key_digest, &t],
                )?;
            }
            // The row lock of the UPDATE serialises guesses on one key: a concurrent guess
            // re-checks `attempts < max_attempts` on the committed row.
            let row = tx.query_opt(
                "UPDATE challenges c SET attempts = attempts + 1 \
                 WHERE key_digest = $1 AND tenant_id = $2 AND flavor = $3 AND status = 'pending' \
                   AND attempts < max_attempts AND expires_at > $4 AND code_length = $7 \
                   AND NOT EXISTS (SELECT 1 FROM recipient_failures f WHERE f.tenant_id = c.tenant_id \
                       AND f.email_canonical = c.email_canonical AND f.failures >= $5 AND f.window_start + $6 > $4) \
                 RETURNING code_hash, attempts, max_attempts, email, email_canonical, purpose, locale",
                &[&key_digest, &t, &flavor.as_str(), &now, &max_failures, &q.recipient_window_ms, &i64::from(code_len)],
            )?;
            let Some(row) = row else { return Ok(None) };
            let res = Reservation {
                code_hash: row.try_get(0)?,
                attempts: row.count(1)?,
                max_attempts: row.count(2)?,
                email: row.try_get(3)?,
                email_canonical: row.try_get(4)?,
                purpose: row.try_get(5)?,
                locale: row.try_get(6)?,
            };
            if q.max_failures > 0 {
                tx.execute(
                    "INSERT INTO recipient_failures (tenant_id, email_canonical, failures, window_start) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (tenant_id, email_canonical) DO UPDATE SET \
                       failures = CASE WHEN recipient_failures.window_start + $4 <= $3 THEN 1 ELSE recipient_failures.failures + 1 END, \
                       window_start = CASE WHEN recipient_failures.window_start + $4 <= $3 THEN $3 ELSE recipient_failures.window_start END",
                    &[&t, &res.email_canonical, &now, &q.recipient_window_ms],
                )?;
            }
            Ok(Some(res))
        })
    }

    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
    ) -> Result<(), StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            tx.execute(
                "UPDATE challenges SET attempts = attempts - 1 WHERE key_digest = $1 AND tenant_id = $2 AND attempts > 0",
                &[&key_digest, &t],
            )?;
            tx.execute(
                "UPDATE recipient_failures SET failures = failures - 1 WHERE tenant_id = $1 AND email_canonical = $2 AND failures > 0",
                &[&t, &recipient],
            )?;
            Ok(())
        })
    }

    fn finish_verify(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
        event: Option<&NewEvent>,
        clear_failures_of: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE challenges SET status = 'verified', verified_at = $3, ended_at = $3 \
                 WHERE key_digest = $1 AND tenant_id = $2 AND status = 'pending' AND expires_at > $3",
                &[&key_digest, &tenant.as_str(), &now],
            )?;
            if n == 1 {
                if let Some(e) = event {
                    insert_event_in(tx, e)?;
                }
                if let Some(r) = clear_failures_of {
                    tx.execute(
                        "DELETE FROM recipient_failures WHERE tenant_id = $1 AND email_canonical = $2",
                        &[&tenant.as_str(), &r],
                    )?;
                }
            }
            Ok(n == 1)
        })
    }

    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<TenantId>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT c.tenant_id FROM challenges c JOIN tenants t ON t.id = c.tenant_id \
                 WHERE c.key_digest = $1 AND c.flavor = $2 AND t.enabled",
                &[&key_digest, &flavor.as_str()],
            )?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .map(TenantId::from_trusted))
    }

    fn challenge(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        _now: Millis,
    ) -> Result<Option<ChallengeView>, StoreError> {
        self.conn()?.db().row_opt(
            &format!(
                "SELECT {} FROM challenges c WHERE c.key_digest = $1 AND c.tenant_id = $2 AND c.flavor = $3",
                view_cols(db_now!())
            ),
            &[&key_digest, &tenant.as_str(), &flavor.as_str()],
            view_from,
        )
    }

    fn cancel(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE challenges SET status = 'cancelled', ended_at = $4 WHERE key_digest = $1 AND tenant_id = $2 \
                 AND flavor = $3 AND status = 'pending' AND expires_at > $4 AND attempts < max_attempts",
                &[&key_digest, &t, &flavor.as_str(), &now],
            )?;
            let v = tx.query_opt(
                &format!(
                    "SELECT {} FROM challenges c WHERE c.key_digest = $1 AND c.tenant_id = $2 AND c.flavor = $3",
                    view_cols(db_now!())
                ),
                &[&key_digest, &t, &flavor.as_str()],
            )?;
            Ok(v.map(|r| view_from(&r)).transpose()?.map(|v| (n == 1, v)))
        })
    }
}
