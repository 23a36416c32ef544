//! PostgreSQL: the outbox. Senders on every instance claim due rows with
//! `FOR UPDATE SKIP LOCKED` and a lease; a message is settled by deleting its outbox row
//! first, so two instances can never both settle (or refund) it.

use ::postgres::GenericClient;

use super::conn::Db;
use super::integration::insert_event_in;
use super::{opt_u32, PgStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::cells::{delivery_mode_from, status_from, Cells};
use crate::storage::integration::NewEvent;
use crate::storage::rules::{self, SweepVerdict};
use crate::storage::{
    ClaimRequest, OutboxJob, OutboxStats, OutboxStore, StoreError, Swept, MINUTE_MS,
};

impl OutboxStore for PgStore {
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Vec<OutboxJob>, StoreError> {
        self.tx(|tx| {
            // Due rows of live pending codes of enabled tenants, oldest first; rows another
            // instance is claiming right now are skipped, not waited for.
            let scan = i64::from(c.limit).saturating_mul(4);
            let rows = tx.query(
                "SELECT o.key_digest, o.tenant_id, o.recipient, o.payload, o.attempts, c.expires_at, \
                        c.delivery_mode, t.smtp_max_connections \
                 FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest JOIN tenants t ON t.id = o.tenant_id \
                 WHERE o.due_at <= $1 AND (o.lease_until IS NULL OR o.lease_until < $1) \
                   AND c.status = 'pending' AND c.expires_at > $1 AND c.attempts < c.max_attempts \
                   AND t.enabled AND NOT (o.tenant_id = ANY($3)) \
                 ORDER BY o.due_at LIMIT $2 \
                 FOR UPDATE OF o SKIP LOCKED",
                &[&c.now, &scan, &c.exclude_tenants],
            )?;
            let mut per_tenant: std::collections::HashMap<String, u32> =
                std::collections::HashMap::new();
            let mut out = Vec::new();
            for r in &rows {
                if out.len() >= usize::try_from(c.limit).unwrap_or(usize::MAX) {
                    break;
                }
                let tenant: String = r.try_get(1)?;
                let maxc = r.count(7)?;
                let n = per_tenant.entry(tenant.clone()).or_insert(0);
                if *n >= maxc.max(1) {
                    continue;
                }
                *n += 1;
                let mode: String = r.try_get(6)?;
                out.push(OutboxJob {
                    key_digest: r.try_get(0)?,
                    tenant_id: TenantId::from_trusted(tenant),
                    recipient: r.try_get(2)?,
                    payload: r.try_get(3)?,
                    attempts: r.count(4)?,
                    expires_at: r.try_get(5)?,
                    mode: delivery_mode_from(&mode)?,
                });
            }
            if !out.is_empty() {
                let keys: Vec<&[u8]> = out.iter().map(|j| j.key_digest.as_slice()).collect();
                tx.execute(
                    "UPDATE outbox SET lease_until = $2, leased_by = $3 WHERE key_digest = ANY($1)",
                    &[&keys, &c.lease.until, &c.lease.owner],
                )?;
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
        self.tx(|tx| {
            // The outbox row first, as every settlement does (same lock order as `fail_in`
            // and the sweep): whoever deletes it settles the message, once.
            if tx
                .query_opt(
                    "DELETE FROM outbox WHERE key_digest = $1 RETURNING 1",
                    &[&key_digest],
                )?
                .is_none()
            {
                return Ok(());
            }
            // The group's lock before any of its rows (the key is the mint's,
            // `lock_key("g", [tenant, recipient, purpose, flavor])`). Settlements of one group
            // superseding older codes at once could otherwise lock rows in opposite orders —
            // the newest holds its own row and waits for an older one's, whose settlement
            // holds that row and waits for the newest's — and PostgreSQL aborts one of them.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('g' || chr(31) || tenant_id || chr(31) || email_canonical \
                 || chr(31) || purpose || chr(31) || flavor, 0)) FROM challenges WHERE key_digest = $1",
                &[&key_digest],
            )?;
            let group = tx.query_opt(
                "UPDATE challenges SET delivery_status = 'sent', delivery_attempts = $2, delivery_reason = NULL, sent_at = $3 \
                 WHERE key_digest = $1 RETURNING tenant_id, email_canonical, purpose, flavor, seq, status",
                &[&key_digest, &i64::from(attempts), &now],
            )?;
            if let Some(g) = group {
                let status: String = g.try_get(5)?;
                // Only pending, live codes are superseded. An older code of the group was
                // committed before this one took its number (the group lock), so it is
                // visible here; a concurrent change to it is waited for and re-checked.
                if rules::accepted_supersedes(status_from(&status)?) {
                    let (tenant, email, purpose, flavor, seq): (String, String, String, String, i64) =
                        (g.try_get(0)?, g.try_get(1)?, g.try_get(2)?, g.try_get(3)?, g.try_get(4)?);
                    tx.execute(
                        "UPDATE challenges SET status = 'superseded', ended_at = $6 WHERE tenant_id = $1 AND email_canonical = $2 \
                         AND purpose = $3 AND flavor = $4 AND status = 'pending' AND seq < $5 \
                         AND expires_at > $6 AND attempts < max_attempts",
                        &[&tenant, &email, &purpose, &flavor, &seq, &now],
                    )?;
                }
            }
            if let Some(e) = event {
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
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE outbox SET attempts = $3, due_at = $4, lease_until = NULL, leased_by = NULL, \
                 maybe_delivered = maybe_delivered OR $5 WHERE key_digest = $1 AND leased_by = $2",
                &[&key_digest, &owner, &i64::from(attempts), &due_at, &maybe_delivered],
            )?;
            if n == 1 {
                tx.execute(
                    "UPDATE challenges SET delivery_attempts = $2, delivery_reason = $3 WHERE key_digest = $1",
                    &[&key_digest, &i64::from(attempts), &reason],
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
        self.tx(|tx| {
            let settled = fail_in(
                tx,
                key_digest,
                Some(attempts),
                reason,
                maybe_delivered,
                true,
                now,
            )?;
            if let (true, Some(e)) = (settled, event) {
                insert_event_in(tx, e)?;
            }
            Ok(())
        })
    }

    fn outbox_sweep(&self, now: Millis) -> Result<Vec<Swept>, StoreError> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT o.key_digest, c.status, c.expires_at, c.attempts, c.max_attempts, o.tenant_id, o.payload \
                 FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
                 WHERE (o.lease_until IS NULL OR o.lease_until < $1) \
                   AND (c.status <> 'pending' OR c.expires_at <= $1 OR c.attempts >= c.max_attempts) \
                 ORDER BY o.tenant_id, o.quota_at LIMIT 1000 FOR UPDATE OF o SKIP LOCKED",
                &[&now],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let key: Vec<u8> = r.try_get(0)?;
                let Some(verdict) = rules::sweep_verdict(
                    status_from(&r.text(1)?)?,
                    r.count(3)?,
                    r.count(4)?,
                    r.int(2)?,
                    now,
                ) else {
                    continue;
                };
                fail_in(tx, &key, None, verdict.reason(), false, verdict.fails_code(), now)?;
                out.push(Swept {
                    tenant_id: TenantId::from_trusted(r.try_get(5)?),
                    key_digest: key,
                    payload: r.try_get(6)?,
                    expired: verdict == SweepVerdict::Expired,
                });
            }
            Ok(out)
        })
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        let row = self
            .conn()?
            .db()
            .query_one("SELECT COUNT(*), MIN(due_at) FROM outbox", &[])?;
        let (depth, oldest): (i64, Option<Millis>) = (row.try_get(0)?, row.try_get(1)?);
        Ok(OutboxStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest_due_ms: oldest.map_or(0, |o| (now - o).max(0)),
        })
    }
}

/// Give up on a message (see the SQLite store's `fail_in`). The outbox row is deleted
/// first: whoever deletes it settles the message, once.
fn fail_in(
    tx: &mut Db<'_, impl GenericClient>,
    key_digest: &[u8],
    attempts: Option<u32>,
    reason: &str,
    maybe_delivered: bool,
    fail_code: bool,
    now: Millis,
) -> Result<bool, StoreError> {
    let Some(row) = tx.query_opt(
        "DELETE FROM outbox WHERE key_digest = $1 RETURNING tenant_id, maybe_delivered, quota_at",
        &[&key_digest],
    )?
    else {
        return Ok(false);
    };
    let (tenant, maybe_before, quota_at): (String, bool, Option<Millis>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let email: Option<String> = tx
        .query_opt(
            "UPDATE challenges SET \
               status = CASE WHEN $5 AND status = 'pending' THEN 'failed' ELSE status END, \
               ended_at = CASE WHEN $5 AND status = 'pending' THEN $4 ELSE ended_at END, \
               delivery_status = 'failed', delivery_reason = $3, \
               delivery_attempts = COALESCE($2, delivery_attempts) \
             WHERE key_digest = $1 RETURNING email_canonical",
            &[&key_digest, &opt_u32(attempts), &reason, &now, &fail_code],
        )?
        .map(|r| r.try_get(0))
        .transpose()?;
    if let (Some(quota_at), Some(email)) = (quota_at, email) {
        if rules::refunds_quota(maybe_before, maybe_delivered) {
            // Nothing can have reached the relay: give the send back to the quotas.
            tx.execute(
                "DELETE FROM sends WHERE id = (SELECT id FROM sends WHERE tenant_id = $1 AND email_canonical = $2 AND at = $3 LIMIT 1)",
                &[&tenant, &email, &quota_at],
            )?;
            tx.execute(
                "UPDATE tenant_send_minutes SET sends = sends - 1 WHERE tenant_id = $1 AND minute = $2 AND sends > 0",
                &[&tenant, &quota_at.div_euclid(MINUTE_MS)],
            )?;
        }
    }
    Ok(true)
}
