//! PostgreSQL: the outbox. Senders on every instance claim due rows tenant by tenant with
//! `FOR UPDATE SKIP LOCKED` and a lease measured on the database's clock; a message is
//! settled by deleting its outbox row first, and only by the lease's holder, so two instances
//! can never both settle (or refund) it.

use crate::storage::sql;
use crate::storage::sql::live_code;
use ::postgres::GenericClient;

use super::conn::Db;
use super::{opt_u32, PgStore};
use crate::domain::keys::TenantId;
use crate::domain::stats::Counted;
use crate::domain::Millis;
use crate::storage::cells::{channel_from, delivery_mode_from, status_from, Cells};
use crate::storage::integration::insert_event_in;
use crate::storage::integration::NewEvent;
use crate::storage::outbox::{plan_claim, AttemptRecord, SweepCandidate, SweepItem, SWEEP_BATCH};
use crate::storage::rules::{self, SweepVerdict, GIVING_UP_FAILS_KEY};
use crate::storage::stats::{count_all, count_in};
use crate::storage::stats::{tally_from, Tally, STATE_COUNTED, STATE_EXPIRY_COUNTED, TALLY_COLS};
use crate::storage::{
    ClaimRequest, Claimed, OutboxJob, OutboxStats, OutboxStore, StoreError, MINUTE_MS,
};

/// The rows the sweep settles: nobody holds them (never leased, or the lease ran out on the
/// database's clock), and either a sender held them and died (a sync message, or an async
/// one it had claimed) or the code is no longer live.
macro_rules! sweep_rows {
    () => {
        concat!(
            "SELECT o.key_digest, o.tenant_id, c.delivery_mode, c.status, c.attempts, c.max_attempts, \
               c.expires_at, o.payload, o.leased_by IS NOT NULL \
             FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
             WHERE (o.lease_until IS NULL OR o.lease_until < ",
            db_now!(),
            ") AND (o.leased_by IS NOT NULL OR c.delivery_mode = 'sync' OR NOT (",
            live_code!("c.", "$1"),
            "))"
        )
    };
}

/// A sweep row's verdict (`None`: the row is live after all).
fn verdict_of(r: &::postgres::Row, now: Millis) -> Result<Option<SweepVerdict>, StoreError> {
    Ok(rules::sweep_verdict(
        delivery_mode_from(&r.text(2)?)?,
        r.try_get::<_, bool>(8)?,
        status_from(&r.text(3)?)?,
        r.count(4)?,
        r.count(5)?,
        r.int(6)?,
        now,
    ))
}

impl OutboxStore for PgStore {
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Claimed, StoreError> {
        self.tx(|tx| {
            // Rows another instance is claiming right now are skipped, not waited for.
            let (keys, next_after) = {
                let tx = std::cell::RefCell::new(&mut *tx);
                plan_claim(
                    &c.fair,
                    &c.lanes(),
                    |after| {
                        Ok(tx
                            .borrow_mut()
                            .query_one(
                                sql::outbox::CLAIM_OUTBOX.pg,
                                &[&after.unwrap_or("")],
                            )?
                            .try_get(0)?)
                    },
                    |tenant, channel, n| {
                        tx.borrow_mut().rows(
                            concat!(
                            "SELECT o.key_digest FROM outbox o \
                                 JOIN challenges c ON c.key_digest = o.key_digest JOIN tenants t ON t.id = o.tenant_id \
                                 WHERE o.tenant_id = $1 AND o.due_at <= $2 AND o.leased_by IS NULL \
                                   AND c.delivery_mode = 'async' AND ",
                            live_code!("c.", "$2"),
                            " AND t.enabled AND NOT t.test AND o.channel = $4 \
                             ORDER BY o.due_at LIMIT $3 FOR UPDATE OF o SKIP LOCKED"
                            ),
                            &[&tenant, &c.now, &i64::from(n), &channel.as_str()],
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
            let jobs = tx.rows(
                concat!(
                    "UPDATE outbox o SET lease_until = ",
                    db_now!(),
                    " + $2, leased_by = $3 FROM challenges c \
                     WHERE o.key_digest = ANY($1) AND c.key_digest = o.key_digest \
                     RETURNING o.key_digest, o.tenant_id, o.recipient, o.payload, o.attempts, c.expires_at, c.delivery_mode, o.channel"
                ),
                &[&keys, &c.lease.for_ms, &c.lease.owner],
                |r| {
                    Ok(OutboxJob {
                        key_digest: r.bytes(0)?,
                        tenant_id: TenantId::from_trusted(r.text(1)?),
                        recipient: r.text(2)?,
                        payload: r.bytes(3)?,
                        attempts: r.count(4)?,
                        expires_at: r.int(5)?,
                        mode: delivery_mode_from(&r.text(6)?)?,
                        channel: channel_from(&r.text(7)?)?,
                    })
                },
            )?;
            Ok(Claimed { jobs, next_after })
        })
    }

    fn outbox_sent(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        self.tx(|tx| {
            // The outbox row first, as every settlement does (same lock order as `take_row`
            // and the sweep): only the lease's holder settles the message, once — or a sync
            // send another instance's sweep recorded as `unknown` while this outcome waited
            // for the database (the relay did take it).
            let held = tx
                .query_opt(
                    "DELETE FROM outbox WHERE key_digest = $1 AND leased_by = $2 RETURNING 1",
                    &[&key_digest, &owner],
                )?
                .is_some();
            if !held
                && tx
                    .query_opt(
                        "SELECT 1 FROM challenges WHERE key_digest = $1 AND delivery_status = 'unknown'",
                        &[&key_digest],
                    )?
                    .is_none()
            {
                return Ok(false);
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
            // (Without the row, the `unknown` state is re-checked under the row's lock here.)
            let sent = tx.row_opt(
                &format!(
                    "UPDATE challenges SET delivery_status = 'sent', delivery_attempts = $2, delivery_reason = NULL, sent_at = $3, \
                       delivery_transport = $5, provider_message_id = $6, delivery_detail_code = NULL \
                     WHERE key_digest = $1 AND ($4 OR delivery_status = 'unknown') \
                     RETURNING email_canonical, purpose, flavor, seq, status, {TALLY_COLS}"
                ),
                &[&key_digest, &i64::from(rec.attempts), &now, &held, &rec.transport, &rec.provider_message_id],
                |g| Ok((g.text(0)?, g.text(1)?, g.text(2)?, g.int(3)?, status_from(&g.text(4)?)?, tally_from(g, 5)?)),
            )?;
            if !held && sent.is_none() {
                return Ok(false);
            }
            let tally = match sent {
                Some((email, purpose, flavor, seq, status, tally)) => {
                    // Only pending, live codes are superseded. An older code of the group was
                    // committed before this one took its number (the group lock), so it is
                    // visible here; a concurrent change to it is waited for and re-checked.
                    if rules::accepted_supersedes(status) {
                        supersede(tx, &tally.tenant, &email, &purpose, &flavor, seq, now)?;
                    }
                    Some(tally)
                }
                None => None,
            };
            if let Some(e) = event {
                insert_event_in(tx, e)?;
            }
            if let Some(t) = &tally {
                count_in(tx, t, Counted::Sent)?;
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
        let attempts = rec.attempts;
        self.tx(|tx| {
            let n = tx.execute(
                sql::outbox::RETRY_LATER.pg,
                &[
                    &key_digest,
                    &owner,
                    &i64::from(attempts),
                    &due_at,
                    &maybe_delivered,
                ],
            )?;
            if n == 1 {
                tx.execute(
                    sql::outbox::RECORD_DELIVERY_ATTEMPTS.pg,
                    &[&key_digest, &i64::from(attempts), &reason, &rec.detail_code],
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
        self.conn()?.db().execute(
            sql::outbox::OUTBOX_DEFER.pg,
            &[&key_digest, &owner, &due_at],
        )?;
        Ok(())
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
        let attempts = rec.attempts;
        self.tx(|tx| {
            let Some((maybe_before, quota_at)) = take_row(tx, key_digest, Some(owner))? else {
                return Ok(false);
            };
            let (status, fail_code) = rules::given_up(rec.outcome_unknown);
            let failed = give_up(
                tx,
                key_digest,
                Settle {
                    attempts: Some(attempts),
                    reason,
                    status: status.as_str(),
                    fail_code,
                    refund: rules::refunds_quota(maybe_before, maybe_delivered),
                    quota_at,
                },
                now,
            )?;
            tx.execute(
                sql::outbox::OUTBOX_FAILED.pg,
                &[&key_digest, &rec.detail_code],
            )?;
            if let Some(e) = event {
                insert_event_in(tx, e)?;
            }
            if let Some(t) = &failed {
                count_in(tx, t, Counted::Failed)?;
            }
            Ok(true)
        })
    }

    fn sweep_candidates(&self, now: Millis) -> Result<Vec<SweepCandidate>, StoreError> {
        let rows = self.conn()?.db().rows(
            concat!(sweep_rows!(), " ORDER BY o.tenant_id LIMIT $2"),
            &[&now, &i64::from(SWEEP_BATCH)],
            |r| {
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
            },
        )?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn settle_swept(&self, items: &[SweepItem], now: Millis) -> Result<usize, StoreError> {
        self.tx(|tx| {
            let mut settled = 0;
            let mut failed = Vec::new();
            for item in items {
                // Lock the row and check that the verdict still holds: it may have been
                // claimed, settled or its code changed since it was read (a row another
                // instance is settling right now is skipped).
                let verdict = tx.row_opt(
                    concat!(
                        sweep_rows!(),
                        " AND o.key_digest = $2 FOR UPDATE OF o SKIP LOCKED"
                    ),
                    &[&now, &item.key_digest],
                    |r| verdict_of(r, now),
                )?;
                if verdict.flatten() != Some(item.verdict) {
                    continue;
                }
                let Some((maybe_before, quota_at)) = take_row(tx, &item.key_digest, None)? else {
                    continue;
                };
                failed.extend(give_up(
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
                )?);
                if let Some(e) = &item.event {
                    insert_event_in(tx, e)?;
                }
                settled += 1;
            }
            count_all(tx, &failed, Counted::Failed)?;
            Ok(settled)
        })
    }

    fn release_leases(&self, owner: &str, keep: &[Vec<u8>]) -> Result<usize, StoreError> {
        let n = self.conn()?.db().execute(
            "UPDATE outbox o SET lease_until = NULL, leased_by = NULL FROM challenges c \
             WHERE o.leased_by = $1 AND c.key_digest = o.key_digest AND c.delivery_mode = 'async' \
               AND NOT (o.key_digest = ANY($2))",
            &[&owner, &keep],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        let row = self
            .conn()?
            .db()
            .query_one(sql::outbox::OUTBOX_STATS.pg, &[])?;
        let (depth, oldest): (i64, Option<Millis>) = (row.try_get(0)?, row.try_get(1)?);
        Ok(OutboxStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest_due_ms: oldest.map_or(0, |o| (now - o).max(0)),
        })
    }
}

/// Delete a message's outbox row — only `owner`'s, when given — and say what it carried
/// (see the SQLite store's `take_row`). Whoever deletes it settles the message, once.
fn take_row(
    tx: &mut Db<'_, impl GenericClient>,
    key_digest: &[u8],
    owner: Option<&str>,
) -> Result<Option<(bool, Option<Millis>)>, StoreError> {
    tx.row_opt(
        "DELETE FROM outbox WHERE key_digest = $1 AND ($2::TEXT IS NULL OR leased_by = $2) \
         RETURNING maybe_delivered, quota_at",
        &[&key_digest, &owner],
        |r| Ok((r.flag(0)?, r.opt_int(1)?)),
    )
}

/// How a message that will not be sent (again) is recorded.
struct Settle<'a> {
    attempts: Option<u32>,
    reason: &'a str,
    status: &'a str,
    fail_code: bool,
    refund: bool,
    quota_at: Option<Millis>,
}

/// Record a message given up on (its outbox row already taken; see the SQLite store's).
/// Returns what to count as `failed`: callers count it last in their transaction, a batch's
/// in one go (`count_all`), so the cells are locked in one order.
fn give_up(
    tx: &mut Db<'_, impl GenericClient>,
    key_digest: &[u8],
    s: Settle<'_>,
    now: Millis,
) -> Result<Option<Tally>, StoreError> {
    // A code that fails before it expires has nothing more to count; one that fails at or
    // after its expiry is counted as expired unverified by the expiry pass, whichever runs
    // first.
    let fails = format!("$5 AND {GIVING_UP_FAILS_KEY}");
    let row = tx.row_opt(
        &format!(
            "UPDATE challenges SET \
               status = CASE WHEN {fails} THEN 'failed' ELSE status END, \
               ended_at = CASE WHEN {fails} THEN $4 ELSE ended_at END, \
               stats_state = CASE WHEN {fails} AND expires_at > $4 AND stats_state = $7 THEN $8 ELSE stats_state END, \
               delivery_status = $6, delivery_reason = $3, \
               delivery_attempts = COALESCE($2, delivery_attempts) \
             WHERE key_digest = $1 RETURNING {TALLY_COLS}"
        ),
        &[
            &key_digest,
            &opt_u32(s.attempts),
            &s.reason,
            &now,
            &s.fail_code,
            &s.status,
            &STATE_COUNTED,
            &STATE_EXPIRY_COUNTED,
        ],
        |r| Ok((tally_from(r, 0)?, r.text(5)?)),
    )?;
    let failed = row.as_ref().filter(|_| s.fail_code).map(|(t, _)| t.clone());
    let row = row.map(|(t, email)| (t.tenant, email));
    if let (true, Some(quota_at), Some((tenant, email))) = (s.refund, s.quota_at, row) {
        // Nothing can have reached the relay: give the send back to the quotas.
        tx.execute(
            sql::outbox::GIVE_BACK_SEND.pg,
            &[&tenant, &email, &quota_at],
        )?;
        tx.execute(
            sql::outbox::GIVE_BACK_TENANT_SEND.pg,
            &[&tenant, &quota_at.div_euclid(MINUTE_MS)],
        )?;
    }
    Ok(failed)
}

/// The group's older pending, live codes, superseded by an accepted message (callers hold
/// the group's lock).
pub(super) fn supersede(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &str,
    email: &str,
    purpose: &str,
    flavor: &str,
    seq: i64,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute(
        concat!(
            "UPDATE challenges SET status = 'superseded', ended_at = $6 \
             WHERE tenant_id = $1 AND email_canonical = $2 AND purpose = $3 AND flavor = $4 \
             AND seq < $5 AND ",
            live_code!("$6")
        ),
        &[&tenant, &email, &purpose, &flavor, &seq, &now],
    )?;
    Ok(())
}
