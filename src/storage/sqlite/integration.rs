//! SQLite: kept idempotent answers, webhooks, their event outbox and delivery records. Every
//! write runs on the single writer, so each check-then-write below is atomic.

use crate::storage::integration::insert_event_in;
use crate::storage::sql;
use rusqlite::{params, OptionalExtension};

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::webhook::{Webhook, WebhookAttempt};
use crate::domain::Millis;
use crate::storage::cells::{attempt_from, event_job_from, webhook_from, Cells};
use crate::storage::integration::{
    EventClaim, EventJob, EventOutcome, IdemBegin, IdemClaim, IntegrationStore, NewEvent,
};
use crate::storage::outbox::plan_claim;
use crate::storage::rules;
use crate::storage::{StoreError, HOUR_MS};

/// fingerprint, status, response, lease_until, expires_at
type KeyRow = (Vec<u8>, Option<u16>, Option<Vec<u8>>, Millis, Millis);

impl IntegrationStore for SqliteStore {
    fn put_webhook(&self, id: &TenantId, w: &Webhook) -> Result<Option<bool>, StoreError> {
        let (id, w) = (id.clone(), w.clone());
        self.writer.write(move |tx| {
            let exists: bool =
                tx.query_row_cached(sql::integration::TENANT_EXISTS.sqlite, [id.as_str()], |r| {
                    r.get(0)
                })?;
            if !exists {
                return Ok(None);
            }
            let updated = tx.execute_cached(
                sql::integration::SET_WEBHOOK_URL.sqlite,
                params![id.as_str(), w.url, w.events_joined(), w.updated_at],
            )?;
            if updated > 0 {
                return Ok(Some(false));
            }
            tx.execute_cached(
                sql::integration::INSERT_WEBHOOK.sqlite,
                params![
                    id.as_str(),
                    w.url,
                    w.events_joined(),
                    w.secret,
                    w.created_at,
                    w.updated_at
                ],
            )?;
            Ok(Some(true))
        })
    }

    fn webhook(&self, id: &TenantId) -> Result<Option<Webhook>, StoreError> {
        self.conn()?
            .row_opt(sql::integration::WEBHOOK.sqlite, [id.as_str()], |r| {
                webhook_from(r)
            })
    }

    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer.write(move |tx| {
            let n = tx.execute_cached(sql::integration::DELETE_WEBHOOK.sqlite, [id.as_str()])?;
            if n > 0 {
                tx.execute_cached(
                    sql::integration::DELETE_WEBHOOK_EVENTS.sqlite,
                    [id.as_str()],
                )?;
            }
            Ok(n > 0)
        })
    }

    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (id, sealed) = (id.clone(), sealed.to_vec());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                sql::integration::SET_WEBHOOK_SECRET.sqlite,
                params![id.as_str(), sealed, now],
            )? > 0)
        })
    }

    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError> {
        let e = e.clone();
        self.writer
            .write(move |tx| insert_event_in(&mut super::Statements(tx), &e))
    }

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

    fn defer_event(&self, event_id: &str, owner: &str, due_at: Millis) -> Result<(), StoreError> {
        let (id, owner) = (event_id.to_string(), owner.to_string());
        self.writer.write(move |tx| {
            tx.execute_cached(
                sql::integration::DEFER_EVENT.sqlite,
                params![id, owner, due_at],
            )?;
            Ok(())
        })
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

    fn disable_webhook(
        &self,
        id: &TenantId,
        url: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (id, url, reason) = (id.clone(), url.to_string(), reason.to_string());
        self.writer.write(move |tx| {
            let n = tx.execute_cached(
                sql::integration::DISABLE_WEBHOOK.sqlite,
                params![id.as_str(), now, reason, url],
            )?;
            if n > 0 {
                tx.execute_cached(sql::integration::FAIL_PENDING_EVENTS.sqlite, [id.as_str()])?;
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
        let (event_id, owner, error) = (
            event_id.to_string(),
            owner.to_string(),
            error.map(str::to_string),
        );
        self.writer.write(move |tx| {
            let (status, due) = rules::event_row(outcome, now);
            let n = tx.execute_cached(
                sql::integration::SETTLE_EVENT.sqlite,
                params![event_id, owner, attempt, status, due],
            )?;
            if n > 0 {
                tx.execute_cached(
                    sql::integration::RECORD_WEBHOOK_DELIVERY.sqlite,
                    params![event_id, attempt, status_code, error, now],
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
        self.conn()?.rows(
            sql::integration::WEBHOOK_DELIVERIES.sqlite,
            params![id.as_str(), limit],
            |r| attempt_from(r),
        )
    }

    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError> {
        let c = c.clone();
        self.writer.write(move |tx| {
            let found: Option<KeyRow> = tx
                .query_row_cached(
                    "SELECT fingerprint, status, response, lease_until, expires_at FROM idempotency_keys \
                     WHERE tenant_id = ?1 AND key_digest = ?2",
                    params![c.tenant_id.as_str(), c.key_digest],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let take = |tx: &rusqlite::Connection| -> Result<IdemBegin, StoreError> {
                tx.execute_cached(
                    "INSERT INTO idempotency_keys (tenant_id, key_digest, fingerprint, status, response, lease_until, expires_at, holder) \
                     VALUES (?1, ?2, ?3, NULL, NULL, ?4, ?5, ?6) \
                     ON CONFLICT (tenant_id, key_digest) DO UPDATE SET fingerprint = excluded.fingerprint, \
                       status = NULL, response = NULL, lease_until = excluded.lease_until, expires_at = excluded.expires_at, \
                       holder = excluded.holder",
                    params![c.tenant_id.as_str(), c.key_digest, c.fingerprint, c.lease_until, c.expires_at, c.holder],
                )?;
                Ok(IdemBegin::Started)
            };
            match found {
                None => take(tx),
                Some((_, _, _, _, expires)) if expires <= c.now => take(tx),
                Some((fp, _, _, _, _)) if fp != c.fingerprint => Ok(IdemBegin::Mismatch),
                Some((_, Some(status), Some(response), _, _)) => {
                    Ok(IdemBegin::Replay { status, response })
                }
                // Its holder died (the lease ran out): the key is free again.
                Some((_, None, _, lease, _)) if lease <= c.now => take(tx),
                Some(_) => Ok(IdemBegin::InUse),
            }
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
        let (id, key, holder, response) = (
            id.clone(),
            key_digest.to_vec(),
            holder.to_string(),
            response.to_vec(),
        );
        self.writer.write(move |tx| {
            tx.execute_cached(
                sql::integration::IDEM_FINISH.sqlite,
                params![id.as_str(), key, holder, status, response],
            )?;
            Ok(())
        })
    }

    fn idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError> {
        let (id, key, holder) = (id.clone(), key_digest.to_vec(), holder.to_string());
        self.writer.write(move |tx| {
            tx.execute_cached(
                sql::integration::IDEM_RELEASE.sqlite,
                params![id.as_str(), key, holder],
            )?;
            Ok(())
        })
    }

    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError> {
        self.writer.write(move |tx| {
            let mut n =
                tx.execute_cached(sql::integration::PURGE_IDEMPOTENCY_KEYS.sqlite, [now])?;
            // A settled event is only needed for its delivery records' type and id.
            n += tx.execute_cached(
                sql::integration::PURGE_WEBHOOK_EVENTS.sqlite,
                [now - 24 * HOUR_MS],
            )?;
            n += tx.execute_cached(
                sql::integration::PURGE_WEBHOOK_DELIVERIES.sqlite,
                [records_before],
            )?;
            Ok(n)
        })
    }
}
