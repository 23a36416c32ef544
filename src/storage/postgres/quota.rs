//! PostgreSQL: the quotas of a mint, made exact across instances by transaction-scoped
//! advisory locks (the rules themselves are `SendQuota`'s, shared with SQLite).

use crate::storage::sql;
use ::postgres::GenericClient;

use super::conn::Db;
use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
pub(super) use crate::storage::engine::lock_key;
use crate::storage::{QuotaRefusal, QuotaStore, SendQuota, StoreError, MINUTE_MS};

impl QuotaStore for PgStore {
    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        quota_check(&mut self.conn()?.db(), tenant, recipient, q, now)
    }

    fn failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        if q.max_failures == 0 {
            return Ok(None);
        }
        let row = self.query_opt(
            sql::quota::FAILURES_BLOCKED.pg,
            &[&tenant.as_str(), &recipient],
        )?;
        let Some(row) = row else { return Ok(None) };
        Ok(q.failures_until(row.try_get(0)?, row.try_get(1)?, now))
    }
}

/// Take transaction-scoped advisory locks, in the order given (every caller uses the order
/// recipient → group → tenant, so two transactions never wait on each other in a circle; the
/// tenant's lock, shared by all its mints, is taken last and held the shortest).
pub(super) fn lock_all(
    tx: &mut Db<'_, impl GenericClient>,
    keys: &[String],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) WITH ORDINALITY AS l(k, n) ORDER BY n",
        &[&keys],
    )?;
    Ok(())
}

/// Every quota check of a mint, counting nothing (callers that count hold the locks).
pub(super) fn quota_check(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &TenantId,
    recipient: &str,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    if let Err(r) = recipient_check(tx, tenant, recipient, q, now)? {
        return Ok(Err(r));
    }
    tenant_check(tx, tenant, q, now)
}

/// The recipient's quotas: failure budget, cooldown, sends per window.
pub(super) fn recipient_check(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &TenantId,
    recipient: &str,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    let t = tenant.as_str();
    if q.max_failures > 0 {
        let row = tx.query_opt(sql::quota::FAILURES_BLOCKED.pg, &[&t, &recipient])?;
        if let Some(row) = row {
            if let Some(r) = q.failures_refusal(row.try_get(0)?, row.try_get(1)?, now) {
                return Ok(Err(r));
            }
        }
    }
    if q.cooldown_ms > 0 {
        let last: Option<Millis> = tx
            .query_one(sql::quota::LAST_SEND.pg, &[&t, &recipient])?
            .try_get(0)?;
        if let Some(r) = q.cooldown_refusal(last, now) {
            return Ok(Err(r));
        }
    }
    if q.recipient_max > 0 {
        let row = tx.query_one(
            sql::quota::SENDS_IN_WINDOW.pg,
            &[&t, &recipient, &q.recipient_window_start(now)],
        )?;
        if let Some(r) = q.recipient_refusal(row.try_get(0)?, row.try_get(1)?, now) {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

/// The tenant's sends in the last hour.
pub(super) fn tenant_check(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &TenantId,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    let t = tenant.as_str();
    if q.tenant_max_per_hour > 0 {
        let row = tx.query_one(
            "SELECT COALESCE(SUM(sends), 0)::BIGINT, MIN(minute) FROM tenant_send_minutes \
             WHERE tenant_id = $1 AND minute > $2 AND sends > 0",
            &[&t, &SendQuota::tenant_minutes_after(now)],
        )?;
        if let Some(r) = q.tenant_refusal(row.try_get(0)?, row.try_get(1)?, now) {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

pub(super) fn recipient_lock(tenant: &TenantId, recipient: &str) -> String {
    lock_key("r", &[tenant.as_str(), recipient])
}

pub(super) fn tenant_lock(tenant: &TenantId, q: &SendQuota) -> Option<String> {
    (q.tenant_max_per_hour > 0).then(|| lock_key("t", &[tenant.as_str()]))
}

/// Count one send (callers checked the quotas under their locks).
pub(super) fn count_send(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &TenantId,
    recipient: &str,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute(
        sql::quota::TAKE_SEND.pg,
        &[&tenant.as_str(), &recipient, &now],
    )?;
    tx.execute(
        "INSERT INTO tenant_send_minutes (tenant_id, minute, sends) VALUES ($1, $2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = tenant_send_minutes.sends + 1",
        &[&tenant.as_str(), &now.div_euclid(MINUTE_MS)],
    )?;
    Ok(())
}

/// Check the tenant's test sends of the hour under its test lock (taken last, like the
/// tenant's) and, if under `per_hour` (0: no limit), count one.
pub(super) fn take_test_send(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &TenantId,
    per_hour: u32,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    let t = tenant.as_str();
    lock_all(tx, &[lock_key("T", &[t])])?;
    if per_hour > 0 {
        let row = tx.query_one(
            "SELECT COALESCE(SUM(sends), 0)::BIGINT, MIN(minute) FROM test_send_minutes \
             WHERE tenant_id = $1 AND minute > $2 AND sends > 0",
            &[&t, &SendQuota::tenant_minutes_after(now)],
        )?;
        if let Some(r) =
            SendQuota::test_sends_refusal(per_hour, row.try_get(0)?, row.try_get(1)?, now)
        {
            return Ok(Err(r));
        }
    }
    tx.execute(
        "INSERT INTO test_send_minutes (tenant_id, minute, sends) VALUES ($1, $2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = test_send_minutes.sends + 1",
        &[&t, &now.div_euclid(MINUTE_MS)],
    )?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_keep_their_parts_apart() {
        assert_ne!(lock_key("r", &["ab", "c"]), lock_key("r", &["a", "bc"]));
        assert_eq!(lock_key("t", &["x"]), "t\u{1f}x");
    }
}
