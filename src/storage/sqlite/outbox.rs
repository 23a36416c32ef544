//! SQLite: the outbox — claims with a lease, and the outcomes (sent and superseding, retry,
//! failed with refund, swept).

use rusqlite::{params, OptionalExtension};

use super::integration::insert_event_in;
use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::cells::{delivery_mode_from, status_from};
use crate::storage::integration::NewEvent;
use crate::storage::rules::{self, SweepVerdict};
use crate::storage::{
    ClaimRequest, OutboxJob, OutboxStats, OutboxStore, StoreError, Swept, MINUTE_MS,
};

impl OutboxStore for SqliteStore {
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Vec<OutboxJob>, StoreError> {
        // A read first: most polls find nothing due, and need no write lock for that.
        {
            let conn = self.conn()?;
            let due: bool = conn.query_row_cached(
                "SELECT EXISTS(SELECT 1 FROM outbox WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1))",
                [c.now],
                |r| r.get(0),
            )?;
            if !due {
                return Ok(Vec::new());
            }
        }
        let c = c.clone();
        self.writer.write(move |tx| {
            // Due rows of live pending codes of enabled tenants, oldest first. CROSS JOIN
            // keeps the outbox (by its due_at index) as the outer loop: the outbox is small,
            // the codes table is not.
            let mut st = tx.prepare_cached(
                "SELECT o.key_digest, o.tenant_id, o.recipient, o.payload, o.attempts, c.expires_at, \
                        c.delivery_mode, t.smtp_max_connections \
                 FROM outbox o CROSS JOIN challenges c CROSS JOIN tenants t \
                 WHERE c.key_digest = o.key_digest AND t.id = o.tenant_id \
                   AND o.due_at <= ?1 AND (o.lease_until IS NULL OR o.lease_until < ?1) \
                   AND c.status = 'pending' AND c.expires_at > ?1 AND c.attempts < c.max_attempts \
                   AND t.enabled = 1 \
                 ORDER BY o.due_at LIMIT ?2",
            )?;
            // Look further than the limit, so that tenants capped below are not all we see.
            let scan = i64::from(c.limit).saturating_mul(4);
            let rows = st
                .query_map(params![c.now, scan], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, Millis>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, u32>(7)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut per_tenant: std::collections::HashMap<String, u32> =
                std::collections::HashMap::new();
            let mut out = Vec::new();
            let mut lease = tx.prepare_cached(
                "UPDATE outbox SET lease_until = ?2, leased_by = ?3 WHERE key_digest = ?1",
            )?;
            for (key_digest, tenant, recipient, payload, attempts, expires_at, mode, maxc) in rows
            {
                if out.len() as u32 >= c.limit {
                    break;
                }
                // Tenants whose sessions are all busy here wait; others get at most their
                // max_connections per claim.
                if c.exclude_tenants.contains(&tenant) {
                    continue;
                }
                let n = per_tenant.entry(tenant.clone()).or_insert(0);
                if *n >= maxc.max(1) {
                    continue;
                }
                *n += 1;
                lease.execute(params![key_digest, c.lease.until, c.lease.owner])?;
                out.push(OutboxJob {
                    key_digest,
                    tenant_id: TenantId::from_trusted(tenant),
                    recipient,
                    payload,
                    attempts,
                    expires_at,
                    mode: delivery_mode_from(&mode)?,
                });
            }
            Ok(out)
        })
    }

    fn outbox_sent(
        &self,
        key_digest: &[u8],
        attempts: u32,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        let (key_digest, event) = (key_digest.to_vec(), event.cloned());
        self.writer.write(move |tx| {
            // The outbox row first, as the PostgreSQL store does: only the call that removes
            // it settles the message (a late outcome of an attempt whose lease ran out and
            // whose row another attempt settled changes nothing).
            if tx.execute_cached("DELETE FROM outbox WHERE key_digest = ?1", [&key_digest])? == 0 {
                return Ok(());
            }
            let group: Option<(String, String, String, String, i64, String)> = tx
                .query_row_cached(
                    "UPDATE challenges SET delivery_status = 'sent', delivery_attempts = ?2, delivery_reason = NULL, sent_at = ?3 \
                     WHERE key_digest = ?1 RETURNING tenant_id, email_canonical, purpose, flavor, seq, status",
                    params![key_digest, attempts, now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            if let Some((tenant, email, purpose, flavor, seq, status)) = group {
                // Only pending, live codes are superseded: an exhausted or expired code keeps
                // its state (and its retention).
                if rules::accepted_supersedes(status_from(&status)?) {
                    tx.execute_cached(
                        "UPDATE challenges SET status = 'superseded', ended_at = ?6 WHERE tenant_id = ?1 AND email_canonical = ?2 \
                         AND purpose = ?3 AND flavor = ?4 AND status = 'pending' AND seq < ?5 \
                         AND expires_at > ?6 AND attempts < max_attempts",
                        params![tenant, email, purpose, flavor, seq, now],
                    )?;
                }
            }
            if let Some(e) = &event {
                insert_event_in(tx, e)?;
            }
            Ok(())
        })
    }

    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempts: u32,
        due_at: Millis,
        reason: &str,
        maybe_delivered: bool,
    ) -> Result<(), StoreError> {
        let (key_digest, owner, reason) =
            (key_digest.to_vec(), owner.to_string(), reason.to_string());
        self.writer.write(move |tx| {
            let n = tx.execute_cached(
                "UPDATE outbox SET attempts = ?3, due_at = ?4, lease_until = NULL, leased_by = NULL, \
                 maybe_delivered = maybe_delivered OR ?5 WHERE key_digest = ?1 AND leased_by = ?2",
                params![key_digest, owner, attempts, due_at, maybe_delivered],
            )?;
            if n == 1 {
                tx.execute_cached(
                    "UPDATE challenges SET delivery_attempts = ?2, delivery_reason = ?3 WHERE key_digest = ?1",
                    params![key_digest, attempts, reason],
                )?;
            }
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn outbox_failed(
        &self,
        key_digest: &[u8],
        attempts: u32,
        reason: &str,
        maybe_delivered: bool,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        let (key_digest, reason, event) = (key_digest.to_vec(), reason.to_string(), event.cloned());
        self.writer.write(move |tx| {
            let settled = fail_in(
                tx,
                &key_digest,
                Some(attempts),
                &reason,
                maybe_delivered,
                true,
                now,
            )?;
            if let (true, Some(e)) = (settled, &event) {
                insert_event_in(tx, e)?;
            }
            Ok(())
        })
    }

    fn outbox_sweep(&self, now: Millis) -> Result<Vec<Swept>, StoreError> {
        self.writer.write(move |tx| {
            type Row = (Vec<u8>, String, Millis, u32, u32, String, Vec<u8>);
            let rows: Vec<Row> = {
                let mut st = tx.prepare_cached(
                    "SELECT o.key_digest, c.status, c.expires_at, c.attempts, c.max_attempts, o.tenant_id, o.payload \
                     FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
                     WHERE (o.lease_until IS NULL OR o.lease_until < ?1) \
                       AND (c.status <> 'pending' OR c.expires_at <= ?1 OR c.attempts >= c.max_attempts) \
                     LIMIT 1000",
                )?;
                let rows = st
                    .query_map([now], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            let mut out = Vec::with_capacity(rows.len());
            for (key, status, expires_at, attempts, max_attempts, tenant, payload) in rows {
                let Some(verdict) = rules::sweep_verdict(
                    status_from(&status)?,
                    attempts,
                    max_attempts,
                    expires_at,
                    now,
                ) else {
                    continue;
                };
                fail_in(tx, &key, None, verdict.reason(), false, verdict.fails_code(), now)?;
                out.push(Swept {
                    tenant_id: TenantId::from_trusted(tenant),
                    key_digest: key,
                    payload,
                    expired: verdict == SweepVerdict::Expired,
                });
            }
            Ok(out)
        })
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        let conn = self.conn()?;
        let (depth, oldest): (i64, Option<Millis>) =
            conn.query_row_cached("SELECT COUNT(*), MIN(due_at) FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(OutboxStats {
            depth: depth.max(0) as u64,
            oldest_due_ms: oldest.map_or(0, |o| (now - o).max(0)),
        })
    }
}

/// Give up on a message: delivery `failed` with `reason`; the code itself becomes `failed`
/// when `fail_code` and it is still pending; the quota charge is given back unless an attempt
/// may have reached the relay; the outbox row goes.
fn fail_in(
    tx: &rusqlite::Connection,
    key_digest: &[u8],
    attempts: Option<u32>,
    reason: &str,
    maybe_delivered: bool,
    fail_code: bool,
    now: Millis,
) -> Result<bool, StoreError> {
    let row: Option<(String, bool, Option<Millis>)> = tx
        .query_row_cached(
            "SELECT tenant_id, maybe_delivered, quota_at FROM outbox WHERE key_digest = ?1",
            [key_digest],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // Already settled by another attempt: nothing to do (as in the PostgreSQL store).
    let Some((tenant, maybe_before, quota_at)) = row else {
        return Ok(false);
    };
    let email: Option<String> = tx
        .query_row_cached(
            "UPDATE challenges SET \
               status = CASE WHEN ?5 AND status = 'pending' THEN 'failed' ELSE status END, \
               ended_at = CASE WHEN ?5 AND status = 'pending' THEN ?4 ELSE ended_at END, \
               delivery_status = 'failed', delivery_reason = ?3, \
               delivery_attempts = COALESCE(?2, delivery_attempts) \
             WHERE key_digest = ?1 RETURNING email_canonical",
            params![key_digest, attempts, reason, now, fail_code],
            |r| r.get(0),
        )
        .optional()?;
    if let (Some(quota_at), Some(email)) = (quota_at, email) {
        if rules::refunds_quota(maybe_before, maybe_delivered) {
            // Nothing can have reached the relay: give the send back to the quotas.
            tx.execute_cached(
                "DELETE FROM sends WHERE id = (SELECT id FROM sends WHERE tenant_id = ?1 AND email_canonical = ?2 AND at = ?3 LIMIT 1)",
                params![tenant, email, quota_at],
            )?;
            tx.execute_cached(
                "UPDATE tenant_send_minutes SET sends = sends - 1 WHERE tenant_id = ?1 AND minute = ?2 AND sends > 0",
                params![tenant, quota_at.div_euclid(MINUTE_MS)],
            )?;
        }
    }
    Ok(tx.execute_cached("DELETE FROM outbox WHERE key_digest = ?1", [key_digest])? > 0)
}
