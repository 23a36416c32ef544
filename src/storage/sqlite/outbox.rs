//! SQLite: the outbox — claims tenant by tenant (the plan read on a pooled connection, keys
//! only; the lease written by the writer, re-checked), the outcomes settled only by the
//! lease's holder (sent and superseding, retry, failed with refund), the sweep, and the
//! release of leases at shutdown.

use crate::storage::sql;
use crate::storage::sql::live_code;
use rusqlite::{params, OptionalExtension};

use super::codes::supersede_in;
use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::stats::Counted;
use crate::domain::Millis;
use crate::storage::cells::{channel_from, delivery_mode_from, status_from, Cells};
use crate::storage::integration::insert_event_in;
use crate::storage::integration::NewEvent;
use crate::storage::outbox::{plan_claim, AttemptRecord, SweepCandidate, SweepItem, SWEEP_BATCH};
use crate::storage::rules::{self, SweepVerdict, GIVING_UP_FAILS_KEY};
use crate::storage::stats::count_in;
use crate::storage::stats::{tally_from, STATE_COUNTED, STATE_EXPIRY_COUNTED, TALLY_COLS};
use crate::storage::{
    ClaimRequest, Claimed, OutboxJob, OutboxStats, OutboxStore, StoreError, MINUTE_MS,
};

/// The rows the sweep settles: nobody holds them (never leased, or the lease ran out), and
/// either a sender held them and died (a sync message, or an async one it had claimed) or
/// the code is no longer live.
const SWEEP_ROWS: &str = concat!(
    "SELECT o.key_digest, o.tenant_id, c.delivery_mode, c.status, c.attempts, c.max_attempts, \
       c.expires_at, o.payload, o.leased_by IS NOT NULL \
     FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
     WHERE (o.lease_until IS NULL OR o.lease_until < ?1) \
       AND (o.leased_by IS NOT NULL OR c.delivery_mode = 'sync' OR NOT (",
    live_code!("c.", "?1"),
    "))"
);

/// A sweep row's verdict (`None`: the row is live after all).
fn verdict_of(r: &rusqlite::Row<'_>, now: Millis) -> Result<Option<SweepVerdict>, StoreError> {
    Ok(rules::sweep_verdict(
        delivery_mode_from(&r.text(2)?)?,
        r.get::<_, bool>(8)?,
        status_from(&r.text(3)?)?,
        r.count(4)?,
        r.count(5)?,
        r.int(6)?,
        now,
    ))
}

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
                    "UPDATE outbox SET lease_until = ?2, leased_by = ?3 \
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

    fn outbox_sent(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let (key_digest, owner, event, rec) = (
            key_digest.to_vec(),
            owner.to_string(),
            event.cloned(),
            rec.clone(),
        );
        self.writer.write(move |tx| {
            // The outbox row first: only the holder of its lease settles the message (a
            // late outcome of an attempt whose row was re-claimed or settled changes nothing)
            // — except a sync send that another instance's sweep recorded as `unknown` while
            // this outcome waited for the database: the relay did take it.
            let held = tx.execute_cached(
                "DELETE FROM outbox WHERE key_digest = ?1 AND leased_by = ?2",
                params![key_digest, owner],
            )? == 1;
            let sent = tx.row_opt(
                &format!(
                    "UPDATE challenges SET delivery_status = 'sent', delivery_attempts = ?2, delivery_reason = NULL, sent_at = ?3, \
                       delivery_transport = ?5, provider_message_id = ?6, delivery_detail_code = NULL \
                     WHERE key_digest = ?1 AND (?4 OR delivery_status = 'unknown') RETURNING status, {TALLY_COLS}"
                ),
                params![key_digest, rec.attempts, now, held, rec.transport, rec.provider_message_id],
                |r| Ok((status_from(&r.text(0)?)?, tally_from(r, 1)?)),
            )?;
            if !held && sent.is_none() {
                return Ok(false);
            }
            if let Some((status, tally)) = sent {
                // Only pending, live codes are superseded: an exhausted or expired code keeps
                // its state (and its retention).
                if rules::accepted_supersedes(status) {
                    supersede_in(tx, &key_digest, now)?;
                }
                count_in(&mut super::Statements(tx), &tally, Counted::Sent)?;
            }
            if let Some(e) = &event {
                insert_event_in(&mut super::Statements(tx), e)?;
            }
            Ok(true)
        })
    }

    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        due_at: Millis,
        reason: &str,
        maybe_delivered: bool,
    ) -> Result<bool, StoreError> {
        let (key_digest, owner, reason, rec) = (
            key_digest.to_vec(),
            owner.to_string(),
            reason.to_string(),
            rec.clone(),
        );
        let attempts = rec.attempts;
        self.writer.write(move |tx| {
            let n = tx.execute_cached(
                sql::outbox::RETRY_LATER.sqlite,
                params![key_digest, owner, attempts, due_at, maybe_delivered],
            )?;
            if n == 1 {
                tx.execute_cached(
                    sql::outbox::RECORD_DELIVERY_ATTEMPTS.sqlite,
                    params![key_digest, attempts, reason, rec.detail_code],
                )?;
            }
            Ok(n == 1)
        })
    }

    fn outbox_defer(
        &self,
        key_digest: &[u8],
        owner: &str,
        due_at: Millis,
    ) -> Result<(), StoreError> {
        let (key_digest, owner) = (key_digest.to_vec(), owner.to_string());
        self.writer.write(move |tx| {
            tx.execute_cached(
                sql::outbox::OUTBOX_DEFER.sqlite,
                params![key_digest, owner, due_at],
            )?;
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn outbox_failed(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        reason: &str,
        maybe_delivered: bool,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let (key_digest, owner, reason, event, rec) = (
            key_digest.to_vec(),
            owner.to_string(),
            reason.to_string(),
            event.cloned(),
            rec.clone(),
        );
        let attempts = rec.attempts;
        self.writer.write(move |tx| {
            let Some(maybe_before) = take_row(tx, &key_digest, Some(&owner))? else {
                return Ok(false);
            };
            let (status, fail_code) = rules::given_up(rec.outcome_unknown);
            give_up(
                tx,
                &key_digest,
                Settle {
                    attempts: Some(attempts),
                    reason: &reason,
                    status: status.as_str(),
                    fail_code,
                    refund: rules::refunds_quota(maybe_before.0, maybe_delivered),
                    quota_at: maybe_before.1,
                },
                now,
            )?;
            tx.execute_cached(
                sql::outbox::OUTBOX_FAILED.sqlite,
                params![key_digest, rec.detail_code],
            )?;
            if let Some(e) = &event {
                insert_event_in(&mut super::Statements(tx), e)?;
            }
            Ok(true)
        })
    }

    fn sweep_candidates(&self, now: Millis) -> Result<Vec<SweepCandidate>, StoreError> {
        let conn = self.conn()?;
        let rows = conn.rows(&format!("{SWEEP_ROWS} LIMIT {SWEEP_BATCH}"), [now], |r| {
            let Some(verdict) = verdict_of(r, now)? else {
                return Ok(None);
            };
            Ok(Some(SweepCandidate {
                key_digest: r.bytes(0)?,
                tenant_id: TenantId::from_trusted(r.text(1)?),
                payload: match verdict {
                    SweepVerdict::Expired => Some(r.bytes(7)?),
                    _ => None,
                },
                verdict,
            }))
        })?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn settle_swept(&self, items: &[SweepItem], now: Millis) -> Result<usize, StoreError> {
        let items = items.to_vec();
        self.writer.write(move |tx| {
            let mut settled = 0;
            for item in &items {
                // The verdict must still hold: the row may have been claimed, settled or
                // its code changed since it was read.
                let verdict = tx.row_opt(
                    &format!("{SWEEP_ROWS} AND o.key_digest = ?2"),
                    params![now, item.key_digest],
                    |r| verdict_of(r, now),
                )?;
                if verdict.flatten() != Some(item.verdict) {
                    continue;
                }
                let Some((maybe_before, quota_at)) = take_row(tx, &item.key_digest, None)? else {
                    continue;
                };
                give_up(
                    tx,
                    &item.key_digest,
                    Settle {
                        attempts: None,
                        reason: item.verdict.reason(),
                        status: item.verdict.delivery_status().as_str(),
                        fail_code: item.verdict.fails_code(),
                        refund: item.verdict.refunds(maybe_before),
                        quota_at,
                    },
                    now,
                )?;
                if let Some(e) = &item.event {
                    insert_event_in(&mut super::Statements(tx), e)?;
                }
                settled += 1;
            }
            Ok(settled)
        })
    }

    fn release_leases(&self, owner: &str, keep: &[Vec<u8>]) -> Result<usize, StoreError> {
        let (owner, keep) = (owner.to_string(), keep.to_vec());
        self.writer.write(move |tx| {
            let held = tx.rows(
                "SELECT o.key_digest FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
                 WHERE o.leased_by = ?1 AND c.delivery_mode = 'async'",
                [&owner],
                |r| r.bytes(0),
            )?;
            let mut n = 0;
            for key in held.into_iter().filter(|k| !keep.contains(k)) {
                n += tx.execute_cached(
                    "UPDATE outbox SET lease_until = NULL, leased_by = NULL WHERE key_digest = ?1 AND leased_by = ?2",
                    params![key, owner],
                )?;
            }
            Ok(n)
        })
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        let conn = self.conn()?;
        let (depth, oldest): (i64, Option<Millis>) =
            conn.query_row_cached(sql::outbox::OUTBOX_STATS.sqlite, [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(OutboxStats {
            depth: depth.max(0) as u64,
            oldest_due_ms: oldest.map_or(0, |o| (now - o).max(0)),
        })
    }
}

/// Delete a message's outbox row — only `owner`'s, when given — and say what it carried:
/// whether an earlier attempt may have reached the relay, and when its send was counted.
/// `None`: already settled (or held by someone else).
fn take_row(
    tx: &rusqlite::Connection,
    key_digest: &[u8],
    owner: Option<&str>,
) -> Result<Option<(bool, Option<Millis>)>, StoreError> {
    Ok(tx
        .query_row_cached(
            "DELETE FROM outbox WHERE key_digest = ?1 AND (?2 IS NULL OR leased_by = ?2) \
             RETURNING maybe_delivered, quota_at",
            params![key_digest, owner],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// How a message that will not be sent (again) is recorded.
struct Settle<'a> {
    attempts: Option<u32>,
    reason: &'a str,
    /// The delivery status: `failed`, or `unknown` for an interrupted sync send.
    status: &'a str,
    /// Whether the code itself becomes `failed` (if still pending).
    fail_code: bool,
    /// Whether the send goes back to the quotas.
    refund: bool,
    quota_at: Option<Millis>,
}

/// Record a message given up on (its outbox row already taken).
fn give_up(
    tx: &rusqlite::Connection,
    key_digest: &[u8],
    s: Settle<'_>,
    now: Millis,
) -> Result<(), StoreError> {
    // A code that fails before it expires has nothing more to count; one that fails at or
    // after its expiry is counted as expired unverified by the expiry pass, whichever runs
    // first.
    let fails = format!("?5 AND {GIVING_UP_FAILS_KEY}");
    let row = tx.row_opt(
        &format!(
            "UPDATE challenges SET \
               status = CASE WHEN {fails} THEN 'failed' ELSE status END, \
               ended_at = CASE WHEN {fails} THEN ?4 ELSE ended_at END, \
               stats_state = CASE WHEN {fails} AND expires_at > ?4 AND stats_state = ?7 THEN ?8 ELSE stats_state END, \
               delivery_status = ?6, delivery_reason = ?3, \
               delivery_attempts = COALESCE(?2, delivery_attempts) \
             WHERE key_digest = ?1 RETURNING {TALLY_COLS}"
        ),
        params![
            key_digest,
            s.attempts,
            s.reason,
            now,
            s.fail_code,
            s.status,
            STATE_COUNTED,
            STATE_EXPIRY_COUNTED
        ],
        |r| Ok((tally_from(r, 0)?, r.text(5)?)),
    )?;
    if let (true, Some((tally, _))) = (s.fail_code, &row) {
        count_in(&mut super::Statements(tx), tally, Counted::Failed)?;
    }
    let row = row.map(|(t, email)| (t.tenant, email));
    if let (true, Some(quota_at), Some((tenant, email))) = (s.refund, s.quota_at, row) {
        // Nothing can have reached the relay: give the send back to the quotas.
        tx.execute_cached(
            sql::outbox::GIVE_BACK_SEND.sqlite,
            params![tenant, email, quota_at],
        )?;
        tx.execute_cached(
            sql::outbox::GIVE_BACK_TENANT_SEND.sqlite,
            params![tenant, quota_at.div_euclid(MINUTE_MS)],
        )?;
    }
    Ok(())
}
