//! PostgreSQL: the outbox. Senders on every instance claim due rows tenant by tenant with
//! `FOR UPDATE SKIP LOCKED` and a lease measured on the database's clock, and the sweep
//! skips rows another instance is settling. A message is settled by deleting its outbox row
//! first, and only by the lease's holder (`storage/settle.rs`, written once for both
//! backends), so two instances can never both settle (or refund) it.

use crate::storage::sql;
use crate::storage::sql::live_code;

use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::cells::{channel_from, delivery_mode_from, Cells};
use crate::storage::outbox::{plan_claim, sweep_candidate_of};
use crate::storage::outbox::{Keep, SweepCandidate, SweepItem, SWEEP_BATCH};
use crate::storage::settle::settle_swept_rows;
use crate::storage::{ClaimRequest, Claimed, OutboxJob, OutboxStore, StoreError};

/// The rows the sweep settles: nobody holds them (never leased, or the lease ran out on the
/// database's clock), and either a sender held them and died (a sync message, or an async
/// one whose send it had begun) or the code is no longer live.
macro_rules! sweep_rows {
    () => {
        concat!(
            "SELECT o.key_digest, o.tenant_id, c.delivery_mode, c.status, c.attempts, c.max_attempts, \
               c.expires_at, o.payload, o.leased_by IS NOT NULL AND NOT o.unstarted \
             FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
             WHERE (o.lease_until IS NULL OR o.lease_until < ",
            db_now!(),
            ") AND ((o.leased_by IS NOT NULL AND NOT o.unstarted) OR c.delivery_mode = 'sync' OR NOT (",
            live_code!("c.", "$1"),
            "))"
        )
    };
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
                    " + $2, leased_by = $3, unstarted = TRUE FROM challenges c \
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

    fn sweep_candidates(
        &self,
        now: Millis,
        among: Option<&[Vec<u8>]>,
    ) -> Result<Vec<SweepCandidate>, StoreError> {
        if let Some(keys) = among {
            let rows = self.conn()?.db().rows(
                concat!(sweep_rows!(), " AND o.key_digest = ANY($2)"),
                &[&now, &keys],
                |r| sweep_candidate_of(r, now),
            )?;
            return Ok(rows.into_iter().flatten().collect());
        }
        let rows = self.conn()?.db().rows(
            concat!(sweep_rows!(), " ORDER BY o.tenant_id LIMIT $2"),
            &[&now, &i64::from(SWEEP_BATCH)],
            |r| sweep_candidate_of(r, now),
        )?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn settle_swept(&self, items: &[SweepItem], now: Millis) -> Result<usize, StoreError> {
        self.tx(|tx| {
            // Each row locked as its verdict is read again (a row another instance is
            // settling right now is skipped).
            let recheck = concat!(
                sweep_rows!(),
                " AND o.key_digest = $2 FOR UPDATE OF o SKIP LOCKED"
            );
            settle_swept_rows(tx, items, None, now, Some(recheck))
        })
    }

    fn release_leases(&self, owner: &str, keep: Keep, now: Millis) -> Result<usize, StoreError> {
        self.tx(|tx| {
            let leased = tx.rows(
                concat!(
                    "SELECT o.key_digest FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
                     WHERE o.leased_by = $1 AND c.delivery_mode = 'async' AND o.lease_until > ",
                    db_now!(),
                    " AND ",
                    live_code!("c.", "$2"),
                    // Locked in one order, so that two of these at once (the sweep and a
                    // shutdown) wait for each other rather than deadlock.
                    " ORDER BY o.key_digest FOR UPDATE OF o"
                ),
                &[&owner, &now],
                |r| r.bytes(0),
            )?;
            // Asked now, the rows read locked (see the trait).
            let keep: std::collections::HashSet<Vec<u8>> = keep().into_iter().collect();
            let stray: Vec<Vec<u8>> = leased.into_iter().filter(|k| !keep.contains(k)).collect();
            if stray.is_empty() {
                return Ok(0);
            }
            let n = tx.execute(
                "UPDATE outbox SET lease_until = NULL, leased_by = NULL, unstarted = FALSE \
                 WHERE key_digest = ANY($1) AND leased_by = $2",
                &[&stray, &owner],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn release_unstarted(&self, _now: Millis) -> Result<usize, StoreError> {
        let n = self.conn()?.db().execute(
            concat!(
                "UPDATE outbox o SET lease_until = NULL, leased_by = NULL, unstarted = FALSE \
                 FROM challenges c WHERE c.key_digest = o.key_digest AND c.delivery_mode = 'async' \
                   AND o.leased_by IS NOT NULL AND o.unstarted AND o.lease_until < ",
                db_now!()
            ),
            &[],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn run_out_leases(&self, owner: &str, _now: Millis) -> Result<Vec<Vec<u8>>, StoreError> {
        // On the database's clock, which the sweep reads leases by.
        self.conn()?.db().rows(
            concat!(
                "UPDATE outbox SET lease_until = ",
                db_now!(),
                " - 1 WHERE leased_by = $1 RETURNING key_digest"
            ),
            &[&owner],
            |r| r.bytes(0),
        )
    }
}
