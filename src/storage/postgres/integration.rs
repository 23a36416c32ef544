//! PostgreSQL: the leases of webhook events (the rest of the aggregate is written once, in
//! `storage::integration`), safe with any number of instances: events are claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease on the database's clock, and settled only by the
//! lease holder.

use crate::storage::sql;

use super::PgStore;
use crate::storage::cells::{event_job_from, Cells};
use crate::storage::integration::{EventClaim, EventClaimStore, EventJob};
use crate::storage::outbox::plan_claim;
use crate::storage::StoreError;

impl EventClaimStore for PgStore {
    fn claim_events(&self, c: &EventClaim) -> Result<(Vec<EventJob>, Option<String>), StoreError> {
        self.tx(|tx| {
            // Events another instance is claiming right now are skipped, not waited for.
            let (ids, next_after) = {
                let tx = std::cell::RefCell::new(&mut *tx);
                plan_claim(
                    &c.fair,
                    &[((), &c.fair.caps)],
                    |after| {
                        Ok(tx
                            .borrow_mut()
                            .query_one(
                                sql::integration::CLAIM_EVENTS.pg,
                                &[&after.unwrap_or("")],
                            )?
                            .try_get(0)?)
                    },
                    |tenant, (), n| {
                        tx.borrow_mut().rows(
                            concat!(
                                "SELECT e.id FROM webhook_events e \
                                 WHERE e.tenant_id = $1 AND e.status = 'pending' AND e.due_at <= $2 \
                                   AND (e.lease_until IS NULL OR e.lease_until < ",
                                db_now!(),
                                ") AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.tenant_id = e.tenant_id AND w.disabled_at IS NOT NULL) \
                                 ORDER BY e.due_at LIMIT $3 FOR UPDATE OF e SKIP LOCKED"
                            ),
                            &[&tenant, &c.now, &i64::from(n)],
                            |r| r.text(0),
                        )
                    },
                )?
            };
            if ids.is_empty() {
                return Ok((Vec::new(), next_after));
            }
            let jobs = tx.rows(
                concat!(
                    "UPDATE webhook_events SET lease_until = ",
                    db_now!(),
                    " + $2, leased_by = $3 WHERE id = ANY($1) \
                     RETURNING id, tenant_id, type, payload, attempts"
                ),
                &[&ids, &c.lease_ms, &c.owner],
                event_job_from,
            )?;
            Ok((jobs, next_after))
        })
    }

    fn release_events(&self, owner: &str, keep: &[String]) -> Result<usize, StoreError> {
        let n = self.conn()?.db().execute(
            "UPDATE webhook_events SET lease_until = NULL, leased_by = NULL \
             WHERE leased_by = $1 AND status = 'pending' AND NOT (id = ANY($2))",
            &[&owner, &keep],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
