//! PostgreSQL: kept idempotent answers, webhooks, their event outbox and delivery records,
//! safe with any number of instances: a key is claimed by `INSERT … ON CONFLICT DO NOTHING`
//! then a row lock, webhook changes lock the tenant row, events are claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease and settled only by the lease holder.

use crate::storage::integration::insert_event_in;
use crate::storage::sql;

use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::webhook::{Webhook, WebhookAttempt};
use crate::domain::Millis;
use crate::storage::cells::{attempt_from, corrupt, event_job_from, webhook_from, Cells};
use crate::storage::integration::{
    EventClaim, EventJob, EventOutcome, IdemBegin, IdemClaim, IntegrationStore, NewEvent,
};
use crate::storage::outbox::plan_claim;
use crate::storage::{rules, StoreError, HOUR_MS};

impl IntegrationStore for PgStore {
    fn put_webhook(&self, id: &TenantId, w: &Webhook) -> Result<Option<bool>, StoreError> {
        let id = id.as_str();
        let events = w.events_joined();
        self.tx(|tx| {
            // Lock the tenant row: webhook changes of one tenant take turns.
            if tx
                .query_opt("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&id])?
                .is_none()
            {
                return Ok(None);
            }
            let updated = tx.execute(
                sql::integration::SET_WEBHOOK_URL.pg,
                &[&id, &w.url, &events, &w.updated_at],
            )?;
            if updated > 0 {
                return Ok(Some(false));
            }
            tx.execute(
                sql::integration::INSERT_WEBHOOK.pg,
                &[
                    &id,
                    &w.url,
                    &events,
                    &w.secret,
                    &w.created_at,
                    &w.updated_at,
                ],
            )?;
            Ok(Some(true))
        })
    }

    fn webhook(&self, id: &TenantId) -> Result<Option<Webhook>, StoreError> {
        self.conn()?
            .db()
            .row_opt(sql::integration::WEBHOOK.pg, &[&id.as_str()], webhook_from)
    }

    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            let n = tx.execute(sql::integration::DELETE_WEBHOOK.pg, &[&id])?;
            tx.execute(sql::integration::DELETE_WEBHOOK_EVENTS.pg, &[&id])?;
            Ok(n > 0)
        })
    }

    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            sql::integration::SET_WEBHOOK_SECRET.pg,
            &[&id.as_str(), &sealed, &now],
        )? > 0)
    }

    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut db = conn.db();
        insert_event_in(&mut db, e)
    }

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

    fn defer_event(&self, event_id: &str, owner: &str, due_at: Millis) -> Result<(), StoreError> {
        self.conn()?.db().execute(
            sql::integration::DEFER_EVENT.pg,
            &[&event_id, &owner, &due_at],
        )?;
        Ok(())
    }

    fn release_events(&self, owner: &str, keep: &[String]) -> Result<usize, StoreError> {
        let n = self.conn()?.db().execute(
            "UPDATE webhook_events SET lease_until = NULL, leased_by = NULL \
             WHERE leased_by = $1 AND status = 'pending' AND NOT (id = ANY($2))",
            &[&owner, &keep],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn disable_webhook(
        &self,
        id: &TenantId,
        url: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.tx(|tx| {
            let n = tx.execute(
                sql::integration::DISABLE_WEBHOOK.pg,
                &[&id.as_str(), &now, &reason, &url],
            )?;
            if n > 0 {
                tx.execute(sql::integration::FAIL_PENDING_EVENTS.pg, &[&id.as_str()])?;
            }
            Ok(n > 0)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn settle_event(
        &self,
        event_id: &str,
        owner: &str,
        attempt: u32,
        outcome: EventOutcome,
        status_code: Option<u16>,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (status, due) = rules::event_row(outcome, now);
        let code = status_code.map(i64::from);
        self.tx(|tx| {
            let n = tx.execute(
                sql::integration::SETTLE_EVENT.pg,
                &[&event_id, &owner, &i64::from(attempt), &status, &due],
            )?;
            if n > 0 {
                tx.execute(
                    sql::integration::RECORD_WEBHOOK_DELIVERY.pg,
                    &[&event_id, &i64::from(attempt), &code, &error, &now],
                )?;
            }
            Ok(())
        })
    }

    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>, StoreError> {
        self.conn()?.db().rows(
            sql::integration::WEBHOOK_DELIVERIES.pg,
            &[&id.as_str(), &i64::from(limit)],
            attempt_from,
        )
    }

    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError> {
        let tenant = c.tenant_id.as_str();
        self.tx(|tx| {
            // Insert, or lock the row that is there; if that row went meanwhile (released or
            // purged), insert again.
            let r = loop {
                let inserted = tx.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key_digest, fingerprint, status, response, lease_until, expires_at, holder) \
                     VALUES ($1, $2, $3, NULL, NULL, $4, $5, $6) ON CONFLICT (tenant_id, key_digest) DO NOTHING",
                    &[&tenant, &c.key_digest, &c.fingerprint, &c.lease_until, &c.expires_at, &c.holder],
                )?;
                if inserted == 1 {
                    return Ok(IdemBegin::Started);
                }
                if let Some(r) = tx.query_opt(
                    "SELECT fingerprint, status, response, lease_until, expires_at FROM idempotency_keys \
                     WHERE tenant_id = $1 AND key_digest = $2 FOR UPDATE",
                    &[&tenant, &c.key_digest],
                )? {
                    break r;
                }
            };
            let fingerprint: Vec<u8> = r.try_get(0)?;
            let status = r
                .try_get::<_, Option<i64>>(1)?
                .map(|v| u16::try_from(v).map_err(|_| corrupt("a status code")))
                .transpose()?;
            let response: Option<Vec<u8>> = r.try_get(2)?;
            let lease: Millis = r.try_get(3)?;
            let expires: Millis = r.try_get(4)?;
            let free = expires <= c.now
                || (fingerprint == c.fingerprint && status.is_none() && lease <= c.now);
            if free {
                tx.execute(
                    "UPDATE idempotency_keys SET fingerprint = $3, status = NULL, response = NULL, \
                     lease_until = $4, expires_at = $5, holder = $6 WHERE tenant_id = $1 AND key_digest = $2",
                    &[&tenant, &c.key_digest, &c.fingerprint, &c.lease_until, &c.expires_at, &c.holder],
                )?;
                return Ok(IdemBegin::Started);
            }
            if fingerprint != c.fingerprint {
                return Ok(IdemBegin::Mismatch);
            }
            Ok(match (status, response) {
                (Some(status), Some(response)) => IdemBegin::Replay { status, response },
                _ => IdemBegin::InUse,
            })
        })
    }

    fn idem_finish(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
        status: u16,
        response: &[u8],
    ) -> Result<(), StoreError> {
        self.conn()?.db().execute(
            sql::integration::IDEM_FINISH.pg,
            &[
                &id.as_str(),
                &key_digest,
                &holder,
                &i64::from(status),
                &response,
            ],
        )?;
        Ok(())
    }

    fn idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError> {
        self.conn()?.db().execute(
            sql::integration::IDEM_RELEASE.pg,
            &[&id.as_str(), &key_digest, &holder],
        )?;
        Ok(())
    }

    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError> {
        let mut db = self.conn()?;
        let mut db = db.db();
        let mut n = db.execute(sql::integration::PURGE_IDEMPOTENCY_KEYS.pg, &[&now])?;
        n += db.execute(
            sql::integration::PURGE_WEBHOOK_EVENTS.pg,
            &[&(now - 24 * HOUR_MS)],
        )?;
        n += db.execute(
            sql::integration::PURGE_WEBHOOK_DELIVERIES.pg,
            &[&records_before],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
