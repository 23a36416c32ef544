//! SQLite: the quotas and failure budget of a mint and a guess — read here, counted inside
//! the mint's own write (the rules are `SendQuota`'s, shared with PostgreSQL).

use crate::storage::sql;
use rusqlite::{params, OptionalExtension};

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::{QuotaRefusal, QuotaStore, SendQuota, StoreError, MINUTE_MS};

impl QuotaStore for SqliteStore {
    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        let conn = self.conn()?;
        quota_check(&conn, tenant, recipient, q, now)
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
        let conn = self.conn()?;
        let row: Option<(i64, Millis)> = conn
            .query_row_cached(
                sql::quota::FAILURES_BLOCKED.sqlite,
                params![tenant.as_str(), recipient],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(f, start)| q.failures_until(f, start, now)))
    }
}

/// Every quota check of a mint, counting nothing.
pub(super) fn quota_check(
    tx: &rusqlite::Connection,
    tenant: &TenantId,
    recipient: &str,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    let t = tenant.as_str();
    if q.max_failures > 0 {
        let row: Option<(i64, Millis)> = tx
            .query_row_cached(
                sql::quota::FAILURES_BLOCKED.sqlite,
                params![t, recipient],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some(r) = row.and_then(|(f, start)| q.failures_refusal(f, start, now)) {
            return Ok(Err(r));
        }
    }
    if q.cooldown_ms > 0 {
        let last: Option<Millis> =
            tx.query_row_cached(sql::quota::LAST_SEND.sqlite, params![t, recipient], |r| {
                r.get(0)
            })?;
        if let Some(r) = q.cooldown_refusal(last, now) {
            return Ok(Err(r));
        }
    }
    if q.recipient_max > 0 {
        let (count, oldest): (i64, Option<Millis>) = tx.query_row_cached(
            sql::quota::SENDS_IN_WINDOW.sqlite,
            params![t, recipient, q.recipient_window_start(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(r) = q.recipient_refusal(count, oldest, now) {
            return Ok(Err(r));
        }
    }
    if q.tenant_max_per_hour > 0 {
        let (count, oldest): (i64, Option<i64>) = tx.query_row_cached(
            "SELECT COALESCE(SUM(sends), 0), MIN(minute) FROM tenant_send_minutes \
             WHERE tenant_id = ?1 AND minute > ?2 AND sends > 0",
            params![t, SendQuota::tenant_minutes_after(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(r) = q.tenant_refusal(count, oldest, now) {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

/// Check every quota and, if all allow it, count one send (callers hold the write lock).
pub(super) fn take_send_in(
    tx: &rusqlite::Connection,
    tenant: &TenantId,
    recipient: &str,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    if let Err(r) = quota_check(tx, tenant, recipient, q, now)? {
        return Ok(Err(r));
    }
    tx.execute_cached(
        sql::quota::TAKE_SEND.sqlite,
        params![tenant.as_str(), recipient, now],
    )?;
    tx.execute_cached(
        "INSERT INTO tenant_send_minutes (tenant_id, minute, sends) VALUES (?1, ?2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = sends + 1",
        params![tenant.as_str(), now.div_euclid(MINUTE_MS)],
    )?;
    Ok(Ok(()))
}

/// Check the tenant's test sends of the hour and, if under `per_hour` (0: no limit), count
/// one (callers hold the write lock).
pub(super) fn take_test_send_in(
    tx: &rusqlite::Connection,
    tenant: &TenantId,
    per_hour: u32,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    if per_hour > 0 {
        let (count, oldest): (i64, Option<i64>) = tx.query_row_cached(
            "SELECT COALESCE(SUM(sends), 0), MIN(minute) FROM test_send_minutes \
             WHERE tenant_id = ?1 AND minute > ?2 AND sends > 0",
            params![tenant.as_str(), SendQuota::tenant_minutes_after(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(r) = SendQuota::test_sends_refusal(per_hour, count, oldest, now) {
            return Ok(Err(r));
        }
    }
    tx.execute_cached(
        "INSERT INTO test_send_minutes (tenant_id, minute, sends) VALUES (?1, ?2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = sends + 1",
        params![tenant.as_str(), now.div_euclid(MINUTE_MS)],
    )?;
    Ok(Ok(()))
}
