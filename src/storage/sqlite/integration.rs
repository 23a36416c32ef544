//! SQLite: kept idempotent answers, webhooks, their event outbox and delivery records. Every
//! write runs on the single writer, so each check-then-write below is atomic.

use rusqlite::{params, OptionalExtension};

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::integration::{
    split_events, DeliveryRow, EventJob, EventOutcome, IdemBegin, IdemClaim, NewEvent, WebhookRow,
};
use crate::storage::{StoreError, HOUR_MS};

/// fingerprint, status, response, lease_until, expires_at
type KeyRow = (Vec<u8>, Option<u16>, Option<Vec<u8>>, Millis, Millis);

fn outcome_parts(o: EventOutcome, now: Millis) -> (&'static str, Millis) {
    match o {
        EventOutcome::Delivered => ("delivered", now),
        EventOutcome::Failed => ("failed", now),
        EventOutcome::Retry { due_at } => ("pending", due_at),
    }
}

/// Queue an event if the tenant's webhook subscribes to its type (inside the caller's
/// transaction: the change it reports and the event commit together).
pub(super) fn insert_event_in(tx: &rusqlite::Connection, e: &NewEvent) -> Result<bool, StoreError> {
    Ok(tx.execute_cached(
        "INSERT INTO webhook_events (id, tenant_id, type, payload, created_at, due_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?5 WHERE EXISTS (SELECT 1 FROM webhooks w \
           WHERE w.tenant_id = ?2 AND (?3 = 'webhook.test' OR (',' || w.events || ',') LIKE ('%,' || ?3 || ',%')))",
        params![e.id, e.tenant_id.as_str(), e.kind, e.payload, e.created_at],
    )? > 0)
}

impl SqliteStore {
    pub(super) fn do_put_webhook(
        &self,
        id: &TenantId,
        w: &WebhookRow,
    ) -> Result<Option<bool>, StoreError> {
        let (id, w) = (id.clone(), w.clone());
        self.writer.write(move |tx| {
            let exists: bool = tx.query_row_cached(
                "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = ?1)",
                [id.as_str()],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(None);
            }
            let updated = tx.execute_cached(
                "UPDATE webhooks SET url = ?2, events = ?3, updated_at = ?4 WHERE tenant_id = ?1",
                params![id.as_str(), w.url, w.events_joined(), w.updated_at],
            )?;
            if updated > 0 {
                return Ok(Some(false));
            }
            tx.execute_cached(
                "INSERT INTO webhooks (tenant_id, url, events, secret, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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

    pub(super) fn do_webhook(&self, id: &TenantId) -> Result<Option<WebhookRow>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row_cached(
                "SELECT url, events, secret, created_at, updated_at FROM webhooks WHERE tenant_id = ?1",
                [id.as_str()],
                |r| {
                    let events: String = r.get(1)?;
                    Ok(WebhookRow {
                        url: r.get(0)?,
                        events: split_events(&events),
                        secret: r.get(2)?,
                        created_at: r.get(3)?,
                        updated_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    pub(super) fn do_delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer.write(move |tx| {
            let n =
                tx.execute_cached("DELETE FROM webhooks WHERE tenant_id = ?1", [id.as_str()])?;
            if n > 0 {
                tx.execute_cached(
                    "DELETE FROM webhook_events WHERE tenant_id = ?1 AND status = 'pending'",
                    [id.as_str()],
                )?;
            }
            Ok(n > 0)
        })
    }

    pub(super) fn do_set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (id, sealed) = (id.clone(), sealed.to_vec());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                "UPDATE webhooks SET secret = ?2, updated_at = ?3 WHERE tenant_id = ?1",
                params![id.as_str(), sealed, now],
            )? > 0)
        })
    }

    pub(super) fn do_insert_event(&self, e: &NewEvent) -> Result<bool, StoreError> {
        let e = e.clone();
        self.writer.write(move |tx| insert_event_in(tx, &e))
    }

    pub(super) fn do_claim_events(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<EventJob>, StoreError> {
        let owner = owner.to_string();
        self.writer.write(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, tenant_id, type, payload, attempts FROM webhook_events \
                 WHERE status = 'pending' AND due_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1) \
                 ORDER BY due_at LIMIT ?2",
            )?;
            let jobs = st
                .query_map(params![now, limit], |r| {
                    Ok(EventJob {
                        id: r.get(0)?,
                        tenant_id: TenantId::from_trusted(r.get(1)?),
                        kind: r.get(2)?,
                        payload: r.get(3)?,
                        attempts: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut lease = tx.prepare_cached(
                "UPDATE webhook_events SET lease_until = ?2, leased_by = ?3 WHERE id = ?1",
            )?;
            for j in &jobs {
                lease.execute(params![j.id, lease_until, owner])?;
            }
            Ok(jobs)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_settle_event(
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
            let (status, due) = outcome_parts(outcome, now);
            let n = tx.execute_cached(
                "UPDATE webhook_events SET attempts = ?3, status = ?4, due_at = ?5, lease_until = NULL, leased_by = NULL \
                 WHERE id = ?1 AND leased_by = ?2",
                params![event_id, owner, attempt, status, due],
            )?;
            if n > 0 {
                tx.execute_cached(
                    "INSERT INTO webhook_deliveries (tenant_id, event_id, type, attempt, status_code, error, at) \
                     SELECT tenant_id, id, type, ?2, ?3, ?4, ?5 FROM webhook_events WHERE id = ?1",
                    params![event_id, attempt, status_code, error, now],
                )?;
            }
            Ok(())
        })
    }

    pub(super) fn do_webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(
            "SELECT event_id, type, attempt, status_code, error, at FROM webhook_deliveries \
             WHERE tenant_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![id.as_str(), limit], |r| {
                Ok(DeliveryRow {
                    event_id: r.get(0)?,
                    kind: r.get(1)?,
                    attempt: r.get(2)?,
                    status_code: r.get(3)?,
                    error: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub(super) fn do_idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError> {
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

    pub(super) fn do_idem_finish(
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
                "UPDATE idempotency_keys SET status = ?4, response = ?5 \
                 WHERE tenant_id = ?1 AND key_digest = ?2 AND holder = ?3 AND status IS NULL",
                params![id.as_str(), key, holder, status, response],
            )?;
            Ok(())
        })
    }

    pub(super) fn do_idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError> {
        let (id, key, holder) = (id.clone(), key_digest.to_vec(), holder.to_string());
        self.writer.write(move |tx| {
            tx.execute_cached(
                "DELETE FROM idempotency_keys \
                 WHERE tenant_id = ?1 AND key_digest = ?2 AND holder = ?3 AND status IS NULL",
                params![id.as_str(), key, holder],
            )?;
            Ok(())
        })
    }

    pub(super) fn do_purge_integration(
        &self,
        now: Millis,
        records_before: Millis,
    ) -> Result<usize, StoreError> {
        self.writer.write(move |tx| {
            let mut n =
                tx.execute_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1", [now])?;
            // A settled event is only needed for its delivery records' type and id.
            n += tx.execute_cached(
                "DELETE FROM webhook_events WHERE status <> 'pending' AND created_at < ?1",
                [now - 24 * HOUR_MS],
            )?;
            n += tx.execute_cached(
                "DELETE FROM webhook_deliveries WHERE at < ?1",
                [records_before],
            )?;
            Ok(n)
        })
    }
}
