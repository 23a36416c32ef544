//! SQLite: the outbox — claims tenant by tenant (the plan read on a pooled connection, keys
//! only; the lease written by the writer, re-checked), the sweep (each row re-checked on the
//! writer), and the release of leases at shutdown. What a lease's holder records of its
//! attempt is written once for both backends (`storage/settle.rs`).

use crate::storage::sql;
use crate::storage::sql::live_code;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::cells::{channel_from, delivery_mode_from, Cells};
use crate::storage::outbox::{plan_claim, sweep_candidate_of};
use crate::storage::outbox::{Keep, SweepCandidate, SweepItem, SWEEP_BATCH};
use crate::storage::settle::settle_swept_rows;
use crate::storage::{ClaimRequest, Claimed, OutboxJob, OutboxStore, StoreError};

/// The rows the sweep settles: nobody holds them (never leased, or the lease ran out), and
/// either a sender held them and died (a sync message, or an async one whose send it had
/// begun) or the code is no longer live.
const SWEEP_ROWS: &str = concat!(
    "SELECT o.key_digest, o.tenant_id, c.delivery_mode, c.status, c.attempts, c.max_attempts, \
       c.expires_at, o.payload, o.leased_by IS NOT NULL AND NOT o.unstarted \
     FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
     WHERE (o.lease_until IS NULL OR o.lease_until < ?1) \
       AND ((o.leased_by IS NOT NULL AND NOT o.unstarted) OR c.delivery_mode = 'sync' OR NOT (",
    live_code!("c.", "?1"),
    "))"
);

impl OutboxStore for SqliteStore {
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Claimed, StoreError> {
        // The plan is a read: most polls find nothing due and need no write lock for that,
        // and it reads keys only.
        let (keys, next_after) = {
            let conn = self.conn()?;
            plan_claim(
                &c.fair,
                &c.lanes(),
                |after| {
                    Ok(conn.query_row_cached(
                        sql::outbox::CLAIM_OUTBOX.sqlite,
                        [after.unwrap_or("")],
                        |r| r.get(0),
                    )?)
                },
                |tenant, channel, n| {
                    conn.rows(
                        concat!(
                        "SELECT o.key_digest FROM outbox o \
                         JOIN challenges c ON c.key_digest = o.key_digest JOIN tenants t ON t.id = o.tenant_id \
                         WHERE o.tenant_id = ?1 AND o.due_at <= ?2 AND o.leased_by IS NULL \
                           AND c.delivery_mode = 'async' AND ",
                        live_code!("c.", "?2"),
                        " AND t.enabled = 1 AND t.test = 0 AND o.channel = ?4 \
                         ORDER BY o.due_at LIMIT ?3"
                        ),
                        params![tenant, c.now, n, channel.as_str()],
                        |r| r.bytes(0),
                    )
                },
            )?
        };
        if keys.is_empty() {
            return Ok(Claimed {
                jobs: Vec::new(),
                next_after,
            });
        }
        let (now, lease) = (c.now, c.lease.clone());
        let jobs = self.writer.write(move |tx| {
            let mut jobs = Vec::with_capacity(keys.len());
            for key in keys {
                // Still free and still live: the plan was read outside this transaction.
                let leased = tx.row_opt(
                    concat!(
                    "UPDATE outbox SET lease_until = ?2, leased_by = ?3, unstarted = TRUE \
                     WHERE key_digest = ?1 AND due_at <= ?4 AND leased_by IS NULL \
                       AND EXISTS (SELECT 1 FROM challenges c WHERE c.key_digest = outbox.key_digest AND ",
                    live_code!("c.", "?4"),
                    ") AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = outbox.tenant_id AND t.enabled = 1 AND t.test = 0) \
                     RETURNING tenant_id, recipient, payload, attempts, channel"
                    ),
                    params![key, now + lease.for_ms, lease.owner, now],
                    |r| Ok((r.text(0)?, r.text(1)?, r.bytes(2)?, r.count(3)?, r.text(4)?)),
                )?;
                let Some((tenant, recipient, payload, attempts, channel)) = leased else {
                    continue;
                };
                let (expires_at, mode) = tx.query_row_cached(
                    "SELECT expires_at, delivery_mode FROM challenges WHERE key_digest = ?1",
                    [&key],
                    |r| Ok((r.get::<_, Millis>(0)?, r.get::<_, String>(1)?)),
                )?;
                jobs.push(OutboxJob {
                    key_digest: key,
                    tenant_id: TenantId::from_trusted(tenant),
                    recipient,
                    payload,
                    attempts,
                    expires_at,
                    mode: delivery_mode_from(&mode)?,
                    channel: channel_from(&channel)?,
                });
            }
            Ok(jobs)
        })?;
        Ok(Claimed { jobs, next_after })
    }

    fn sweep_candidates(
        &self,
        now: Millis,
        among: Option<&[Vec<u8>]>,
    ) -> Result<Vec<SweepCandidate>, StoreError> {
        if let Some(keys) = among {
            let conn = self.conn()?;
            let one = format!("{SWEEP_ROWS} AND o.key_digest = ?2");
            let mut found = Vec::new();
            for key in keys {
                let rows = conn.rows(&one, params![now, key], |r| sweep_candidate_of(r, now))?;
                found.extend(rows.into_iter().flatten());
            }
            return Ok(found);
        }
        let conn = self.conn()?;
        let rows = conn.rows(&format!("{SWEEP_ROWS} LIMIT {SWEEP_BATCH}"), [now], |r| {
            sweep_candidate_of(r, now)
        })?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn settle_swept(&self, items: &[SweepItem], now: Millis) -> Result<usize, StoreError> {
        let items = items.to_vec();
        self.writer.write(move |tx| {
            let recheck = format!("{SWEEP_ROWS} AND o.key_digest = ?2");
            let mut tx = super::Statements(tx);
            settle_swept_rows(&mut tx, &items, None, now, Some(&recheck))
        })
    }

    fn release_leases(&self, owner: &str, keep: Keep, now: Millis) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        self.writer.write(move |tx| {
            let held = tx.rows(
                concat!(
                    "SELECT o.key_digest FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
                     WHERE o.leased_by = ?1 AND c.delivery_mode = 'async' AND o.lease_until > ?2 AND ",
                    live_code!("c.", "?2")
                ),
                params![owner, now],
                |r| r.bytes(0),
            )?;
            // Asked now: every write is this transaction's until it ends (see the trait).
            let keep: std::collections::HashSet<Vec<u8>> = keep().into_iter().collect();
            let mut n = 0;
            for key in held.into_iter().filter(|k| !keep.contains(k)) {
                n += tx.execute_cached(
                    "UPDATE outbox SET lease_until = NULL, leased_by = NULL, unstarted = FALSE WHERE key_digest = ?1 AND leased_by = ?2",
                    params![key, owner],
                )?;
            }
            Ok(n)
        })
    }

    fn release_unstarted(&self, now: Millis) -> Result<usize, StoreError> {
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                "UPDATE outbox SET lease_until = NULL, leased_by = NULL, unstarted = FALSE \
                 WHERE leased_by IS NOT NULL AND unstarted AND lease_until < ?1 \
                   AND EXISTS (SELECT 1 FROM challenges c \
                               WHERE c.key_digest = outbox.key_digest AND c.delivery_mode = 'async')",
                [now],
            )?)
        })
    }

    fn run_out_leases(&self, owner: &str, now: Millis) -> Result<Vec<Vec<u8>>, StoreError> {
        let owner = owner.to_string();
        self.writer.write(move |tx| {
            let keys = tx.rows(
                "SELECT key_digest FROM outbox WHERE leased_by = ?1",
                [&owner],
                |r| r.bytes(0),
            )?;
            tx.execute_cached(
                "UPDATE outbox SET lease_until = ?2 WHERE leased_by = ?1",
                params![owner, now.saturating_sub(1)],
            )?;
            Ok(keys)
        })
    }
}
