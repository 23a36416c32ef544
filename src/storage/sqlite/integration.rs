//! SQLite: the leases of webhook events (the rest of the aggregate is written once, in
//! `storage::integration`). The claim is planned on a read of ids; the lease is written by
//! the single writer, re-checked.

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::storage::cells::{event_job_from, Cells};
use crate::storage::integration::{EventClaim, EventClaimStore, EventJob};
use crate::storage::outbox::plan_claim;
use crate::storage::StoreError;

impl EventClaimStore for SqliteStore {
    fn claim_events(&self, c: &EventClaim) -> Result<(Vec<EventJob>, Option<String>), StoreError> {
        // The plan is a read of ids only; the lease is written by the writer, re-checked.
        let (ids, next_after) = {
            let conn = self.conn()?;
            plan_claim(
                &c.fair,
                &[((), &c.fair.caps)],
                |after| {
                    Ok(conn.query_row_cached(
                        sql::integration::CLAIM_EVENTS.sqlite,
                        [after.unwrap_or("")],
                        |r| r.get(0),
                    )?)
                },
                |tenant, (), n| {
                    conn.rows(
                        "SELECT e.id FROM webhook_events e \
                         WHERE e.tenant_id = ?1 AND e.status = 'pending' AND e.due_at <= ?2 \
                           AND (e.lease_until IS NULL OR e.lease_until < ?2) \
                           AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.tenant_id = e.tenant_id AND w.disabled_at IS NOT NULL) \
                         ORDER BY e.due_at LIMIT ?3",
                        params![tenant, c.now, n],
                        |r| r.text(0),
                    )
                },
            )?
        };
        if ids.is_empty() {
            return Ok((Vec::new(), next_after));
        }
        let (now, until, owner) = (c.now, c.now + c.lease_ms, c.owner.clone());
        let jobs = self.writer.write(move |tx| {
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                jobs.extend(tx.row_opt(
                    "UPDATE webhook_events SET lease_until = ?2, leased_by = ?3 \
                     WHERE id = ?1 AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?4) \
                     RETURNING id, tenant_id, type, payload, attempts",
                    params![id, until, owner, now],
                    |r| event_job_from(r),
                )?);
            }
            Ok(jobs)
        })?;
        Ok((jobs, next_after))
    }

    fn release_events(&self, owner: &str, keep: &[String]) -> Result<usize, StoreError> {
        let (owner, keep) = (owner.to_string(), keep.to_vec());
        self.writer.write(move |tx| {
            let held = tx.rows(
                "SELECT id FROM webhook_events WHERE leased_by = ?1 AND status = 'pending'",
                [&owner],
                |r| r.text(0),
            )?;
            let mut n = 0;
            for id in held.into_iter().filter(|i| !keep.contains(i)) {
                n += tx.execute_cached(
                    "UPDATE webhook_events SET lease_until = NULL, leased_by = NULL WHERE id = ?1 AND leased_by = ?2",
                    params![id, owner],
                )?;
            }
            Ok(n)
        })
    }
}
