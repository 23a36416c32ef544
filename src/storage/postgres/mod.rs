//! PostgreSQL store: the synchronous `postgres` client behind `r2d2` (the calls already run
//! on the blocking pool), TLS per `sslmode` with rustls, refinery migrations under an
//! advisory lock. Every invariant that the SQLite store gets from its single writer is
//! enforced here by the database, so any number of instances can share it (API.md §7.2):
//! conditional updates and row locks for attempts, transaction-scoped advisory locks for
//! the quotas, the failure budget and a group's sequence numbers, unique indexes and
//! `ON CONFLICT` for secrets and keys, `FOR UPDATE SKIP LOCKED` for outbox work.

mod conn;
mod integration;
mod outbox;
mod quota;
mod tls;

use std::time::Duration;

use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

use super::integration::{
    DeliveryRow, EventJob, EventOutcome, IdemBegin, IdemClaim, NewEvent, WebhookRow,
};
use super::*;
use crate::crypto::keyring::WrappedKey;
use crate::domain::delivery::{DeliveryStatus, DeliveryView};
use conn::{Conn, Db, Manager, Params, PgConn, Tx};
use quota::{lock_all, lock_key, quota_check, quota_locks, take_send_in};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Session advisory lock held while migrating, so instances starting together take turns.
const MIGRATION_LOCK: i64 = 0x6f74_706d_696e_7401;
/// Transaction advisory lock around keyring initialisation.
const KEYRING_LOCK: i64 = 0x6f74_706d_696e_7402;

const TENANT_COLS: &str =
    "t.id, t.name, t.enabled, t.origin, t.created_at, t.smtp_host, t.smtp_port, t.smtp_username, \
     t.smtp_password, t.smtp_from, t.smtp_tls, t.smtp_version, t.code_length, t.ttl_seconds, \
     t.max_attempts, t.smtp_max_connections, t.delivery, t.default_locale, t.templates_version, t.webhook_events";
const VIEW_COLS: &str =
    "c.status, c.email, c.email_canonical, c.purpose, c.attempts, c.max_attempts, c.code_length, \
     c.created_at, c.expires_at, c.verified_at, c.delivery_mode, c.delivery_status, \
     c.delivery_attempts, c.delivery_reason, c.sent_at, \
     EXISTS(SELECT 1 FROM outbox o WHERE o.key_digest = c.key_digest AND o.leased_by IS NOT NULL)";

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub pool_size: u32,
    /// Extra CA certificates (PEM) trusted for `sslmode=verify-full`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Connect and pool-wait timeout.
    pub timeout: Duration,
}

pub struct PgStore {
    /// Always `Some` until drop (see `Drop`).
    pool: Option<Pool<Manager>>,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} out of range"))
}

fn u32_at(r: &Row, i: usize) -> Result<u32, StoreError> {
    u32::try_from(r.try_get::<_, i64>(i)?).map_err(|_| corrupt("a count"))
}

fn opt_u32(v: Option<u32>) -> Option<i64> {
    v.map(i64::from)
}

impl PgStore {
    /// Connect (pool), migrate under an advisory lock. Runs its blocking work on a thread
    /// of its own, so it may be called from async code.
    pub fn open(opts: &PgOptions) -> Result<PgStore, StoreError> {
        let opts = opts.clone();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<PgStore, StoreError> {
                let (config, tls) = tls::client_config(&opts)?;
                let manager = Manager(PostgresConnectionManager::new(config, tls));
                let pool = Pool::builder()
                    .max_size(opts.pool_size)
                    .min_idle(Some(1))
                    .connection_timeout(opts.timeout)
                    // A broken connection is noticed when used (503) and then discarded.
                    .test_on_check_out(false)
                    .build(manager)?;
                let store = PgStore { pool: Some(pool) };
                store.migrate()?;
                Ok(store)
            })
            .join()
            .unwrap_or_else(|_| Err(StoreError::Migration("database setup panicked".into())))
        })
    }

    pub fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut conn.client;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let report = embedded::migrations::runner()
            .set_migration_table_name("otpmint_schema_history")
            .run(conn)
            .map_err(|e| StoreError::Migration(e.to_string()));
        let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        let report = report?;
        unlocked?;
        Ok(report.applied_migrations().len())
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        match &self.pool {
            Some(p) => Ok(p.get()?),
            None => Err(StoreError::Unavailable("the store is closed".into())),
        }
    }

    /// Run `f` in one transaction (READ COMMITTED), committed when it returns `Ok`.
    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let PgConn { client, cache } = &mut *conn;
        let mut tx = client.transaction()?;
        let out = f(&mut Db { c: &mut tx, cache })?;
        tx.commit()?;
        Ok(out)
    }

    /// As `tx`, but a refusal rolls back whatever the transaction did so far.
    fn tx_unless_refused<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<Result<T, QuotaRefusal>, StoreError>,
    ) -> Result<Result<T, QuotaRefusal>, StoreError> {
        let mut conn = self.conn()?;
        let PgConn { client, cache } = &mut *conn;
        let mut tx = client.transaction()?;
        let out = f(&mut Db { c: &mut tx, cache })?;
        if out.is_ok() {
            tx.commit()?;
        }
        Ok(out)
    }

    fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        Ok(self.conn()?.db().query_opt(sql, params)?)
    }
}

impl Drop for PgStore {
    /// The `postgres` client blocks on a runtime of its own when a connection closes, which
    /// tokio forbids on an async worker: close the pool on a plain thread.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("otpmint-pg-close".into())
                .spawn(move || drop(pool));
        }
    }
}

fn tenant_from_row(r: &Row) -> Result<TenantRow, StoreError> {
    let delivery: String = r.try_get(16)?;
    Ok(TenantRow {
        delivery: DeliveryMode::parse(&delivery).unwrap_or(DeliveryMode::Sync),
        id: TenantId::from_trusted(r.try_get(0)?),
        name: r.try_get(1)?,
        enabled: r.try_get(2)?,
        origin: r.try_get(3)?,
        created_at: r.try_get(4)?,
        smtp: SmtpRow {
            host: r.try_get(5)?,
            port: u16::try_from(r.try_get::<_, i64>(6)?).map_err(|_| corrupt("a port"))?,
            username: r.try_get(7)?,
            password: r.try_get(8)?,
            from: r.try_get(9)?,
            tls: r.try_get(10)?,
            max_connections: u32_at(r, 15)?,
        },
        smtp_version: r.try_get(11)?,
        policy: Policy {
            code_length: u32_at(r, 12)?,
            ttl_seconds: u32_at(r, 13)?,
            max_attempts: u32_at(r, 14)?,
        },
        default_locale: r.try_get(17)?,
        templates_version: r.try_get(18)?,
        webhook_events: r.try_get(19)?,
    })
}

fn view_from_row(r: &Row) -> Result<ChallengeView, StoreError> {
    let status: String = r.try_get(0)?;
    let mode: String = r.try_get(10)?;
    let delivery_status: String = r.try_get(11)?;
    let leased: bool = r.try_get(15)?;
    let delivery_status = match DeliveryStatus::parse_stored(&delivery_status) {
        Some(DeliveryStatus::Queued) if leased => DeliveryStatus::Sending,
        Some(s) => s,
        None => DeliveryStatus::Failed,
    };
    Ok(ChallengeView {
        status: status_from(&status)?,
        email: r.try_get(1)?,
        email_canonical: r.try_get(2)?,
        purpose: r.try_get(3)?,
        attempts: u32_at(r, 4)?,
        max_attempts: u32_at(r, 5)?,
        code_length: u32_at(r, 6)?,
        created_at: r.try_get(7)?,
        expires_at: r.try_get(8)?,
        verified_at: r.try_get(9)?,
        delivery: DeliveryView {
            mode: DeliveryMode::parse(&mode).unwrap_or(DeliveryMode::Sync),
            status: delivery_status,
            attempts: u32_at(r, 12)?,
            reason: r.try_get(13)?,
            sent_at: r.try_get(14)?,
        },
    })
}

/// A tenant and its current secret digest, inside the caller's transaction; a secret
/// already registered (to anyone) is a conflict, enforced by the primary key.
fn insert_tenant_row(
    tx: &mut Db<'_, impl GenericClient>,
    t: &TenantRow,
    secret_digest: &[u8],
    now: Millis,
) -> Result<bool, StoreError> {
    tx.execute(
        "INSERT INTO tenants (id, name, enabled, origin, created_at, updated_at, smtp_host, smtp_port, \
         smtp_username, smtp_password, smtp_from, smtp_tls, smtp_version, code_length, ttl_seconds, max_attempts, \
         smtp_max_connections, delivery, default_locale) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            &t.id.as_str(),
            &t.name,
            &t.enabled,
            &t.origin,
            &t.created_at,
            &t.smtp.host,
            &i64::from(t.smtp.port),
            &t.smtp.username,
            &t.smtp.password,
            &t.smtp.from,
            &t.smtp.tls,
            &t.smtp_version,
            &i64::from(t.policy.code_length),
            &i64::from(t.policy.ttl_seconds),
            &i64::from(t.policy.max_attempts),
            &i64::from(t.smtp.max_connections),
            &t.delivery.as_str(),
            &t.default_locale,
        ],
    )?;
    let n = tx.execute(
        "INSERT INTO tenant_secrets (digest, tenant_id, created_at, expires_at) VALUES ($1, $2, $3, NULL) \
         ON CONFLICT (digest) DO NOTHING",
        &[&secret_digest, &t.id.as_str(), &now],
    )?;
    Ok(n == 1)
}

/// Insert a pending code with the next sequence number of its group. The group's advisory
/// lock is held until commit, so numbers are taken one at a time and in commit order; the
/// unique index on the group's sequence is the backstop.
#[allow(clippy::too_many_arguments)]
fn insert_challenge(
    tx: &mut Db<'_, impl GenericClient>,
    c: &NewChallenge,
    tenant_id: &str,
    status_attempts: u32,
    delivery: (&str, &str, u32, Option<Millis>),
) -> Result<(), StoreError> {
    lock_all(
        tx,
        &[lock_key(
            "g",
            &[tenant_id, &c.email_canonical, &c.purpose, c.flavor.as_str()],
        )],
    )?;
    let (mode, dstatus, dattempts, sent_at) = delivery;
    tx.execute(
        "INSERT INTO challenges (key_digest, tenant_id, flavor, email, email_canonical, purpose, seq, code_hash, \
         status, attempts, max_attempts, code_length, created_at, expires_at, \
         delivery_mode, delivery_status, delivery_attempts, sent_at, locale) \
         VALUES ($1, $2, $3, $4, $5, $6, \
           (SELECT COALESCE(MAX(seq), 0) + 1 FROM challenges WHERE tenant_id = $2 AND email_canonical = $5 AND purpose = $6 AND flavor = $3), \
           $7, 'pending', $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        &[
            &c.key_digest,
            &tenant_id,
            &c.flavor.as_str(),
            &c.email,
            &c.email_canonical,
            &c.purpose,
            &c.code_hash,
            &i64::from(status_attempts),
            &i64::from(c.max_attempts),
            &i64::from(c.code_length),
            &c.created_at,
            &c.expires_at,
            &mode,
            &dstatus,
            &i64::from(dattempts),
            &sent_at,
            &c.locale,
        ],
    )?;
    Ok(())
}

impl Store for PgStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.client.simple_query("SELECT 1")?;
        Ok(())
    }

    fn write_probe(&self) -> Result<(), StoreError> {
        // Assigning a transaction id is a write: it fails on a read-only or stuck server.
        self.conn()?.client.simple_query("SELECT txid_current()")?;
        Ok(())
    }

    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError> {
        let rows = self.conn()?.db().query(
            "SELECT kind, version, wrapped, kek_id, active FROM keyring ORDER BY kind, version",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(WrappedKey {
                    kind: r.try_get(0)?,
                    version: u32_at(r, 1)?,
                    wrapped: r.try_get(2)?,
                    kek_id: r.try_get(3)?,
                    active: r.try_get(4)?,
                })
            })
            .collect()
    }

    fn init_keyring(
        &self,
        rows: &[WrappedKey],
        now: Millis,
    ) -> Result<Vec<WrappedKey>, StoreError> {
        // One instance makes the keyring; the others, waiting on the lock, find it made.
        self.tx(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYRING_LOCK])?;
            let existing: i64 = tx
                .query_one("SELECT COUNT(*) FROM keyring", &[])?
                .try_get(0)?;
            if existing == 0 {
                for k in rows {
                    tx.execute(
                        "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&k.kind, &i64::from(k.version), &k.wrapped, &k.kek_id, &k.active, &now],
                    )?;
                }
            }
            Ok(())
        })?;
        self.keyring()
    }

    fn rewrap_key(
        &self,
        kind: &str,
        version: u32,
        wrapped: &[u8],
        kek_id: &str,
        old_kek_id: &str,
    ) -> Result<bool, StoreError> {
        let n = self.conn()?.db().execute(
            "UPDATE keyring SET wrapped = $3, kek_id = $4 WHERE kind = $1 AND version = $2 AND kek_id = $5",
            &[&kind, &i64::from(version), &wrapped, &kek_id, &old_kek_id],
        )?;
        Ok(n == 1)
    }

    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError> {
        // The primary key (kind, version) refuses a version another rotation took first.
        self.tx(|tx| {
            tx.execute("UPDATE keyring SET active = FALSE WHERE kind = $1", &[&row.kind])?;
            tx.execute(
                "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES ($1, $2, $3, $4, TRUE, $5)",
                &[&row.kind, &i64::from(row.version), &row.wrapped, &row.kek_id, &now],
            )?;
            Ok(())
        })
    }

    fn set_smtp_password(&self, id: &TenantId, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let n = self.conn()?.db().execute(
            "UPDATE tenants SET smtp_password = $3 WHERE id = $1 AND smtp_password = $2",
            &[&id.as_str(), &old, &new],
        )?;
        Ok(n == 1)
    }

    fn backup_to(&self, _path: &std::path::Path) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "`otpmint backup` copies a SQLite database; back up PostgreSQL with pg_dump",
        ))
    }

    fn has_data(&self) -> Result<bool, StoreError> {
        let row = self.conn()?.db().query_one(
            "SELECT EXISTS(SELECT 1 FROM keyring) OR EXISTS(SELECT 1 FROM tenants)",
            &[],
        )?;
        Ok(row.try_get(0)?)
    }

    fn insert_tenant(
        &self,
        t: &TenantRow,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.tx(|tx| {
            if insert_tenant_row(tx, t, secret_digest, now)? {
                Ok(())
            } else {
                Err(StoreError::Conflict("secret key already registered"))
            }
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError> {
        self.query_opt(
            &format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1"),
            &[&id.as_str()],
        )?
        .map(|r| tenant_from_row(&r))
        .transpose()
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        self.conn()?
            .db()
            .query(
                &format!("SELECT {TENANT_COLS} FROM tenants t ORDER BY t.created_at, t.id"),
                &[],
            )?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        now: Millis,
    ) -> Result<Option<TenantRow>, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            // Locks the row for the rest of the change, and says whether it exists.
            if tx.execute(
                "UPDATE tenants SET updated_at = $2 WHERE id = $1",
                &[&id, &now],
            )? == 0
            {
                return Ok(None);
            }
            if let Some(name) = &c.name {
                tx.execute("UPDATE tenants SET name = $2 WHERE id = $1", &[&id, name])?;
            }
            if let Some(enabled) = c.enabled {
                tx.execute(
                    "UPDATE tenants SET enabled = $2 WHERE id = $1",
                    &[&id, &enabled],
                )?;
            }
            if let Some(s) = &c.smtp {
                tx.execute(
                    "UPDATE tenants SET smtp_host = $2, smtp_port = $3, smtp_username = $4, smtp_password = $5, \
                     smtp_from = $6, smtp_tls = $7, smtp_max_connections = $8, smtp_version = smtp_version + 1 WHERE id = $1",
                    &[&id, &s.host, &i64::from(s.port), &s.username, &s.password, &s.from, &s.tls, &i64::from(s.max_connections)],
                )?;
            }
            if let Some(d) = c.delivery {
                tx.execute(
                    "UPDATE tenants SET delivery = $2 WHERE id = $1",
                    &[&id, &d.as_str()],
                )?;
            }
            if let Some(p) = &c.policy {
                tx.execute(
                    "UPDATE tenants SET code_length = $2, ttl_seconds = $3, max_attempts = $4 WHERE id = $1",
                    &[&id, &i64::from(p.code_length), &i64::from(p.ttl_seconds), &i64::from(p.max_attempts)],
                )?;
            }
            if let Some(l) = &c.default_locale {
                tx.execute(
                    "UPDATE tenants SET default_locale = $2 WHERE id = $1",
                    &[&id, l],
                )?;
            }
            let row = tx.query_one(
                &format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1"),
                &[&id],
            )?;
            Ok(Some(tenant_from_row(&row)?))
        })
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .execute("DELETE FROM tenants WHERE id = $1", &[&id.as_str()])?
            > 0)
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TemplateRow>, StoreError> {
        self.conn()?
            .db()
            .query(
                "SELECT locale, subject, text, html, updated_at FROM templates \
                 WHERE tenant_id = $1 ORDER BY locale",
                &[&id.as_str()],
            )?
            .iter()
            .map(|r| {
                Ok(TemplateRow {
                    locale: r.try_get(0)?,
                    subject: r.try_get(1)?,
                    text: r.try_get(2)?,
                    html: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    fn put_template(&self, id: &TenantId, t: &TemplateRow) -> Result<bool, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            // Locks the tenant row: template changes of one tenant take turns.
            if tx.execute(
                "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = $1",
                &[&id],
            )? == 0
            {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO templates (tenant_id, locale, subject, text, html, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id, locale) DO UPDATE SET subject = excluded.subject, \
                 text = excluded.text, html = excluded.html, updated_at = excluded.updated_at",
                &[&id, &t.locale, &t.subject, &t.text, &t.html, &t.updated_at],
            )?;
            Ok(true)
        })
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            let n = tx.execute(
                "DELETE FROM templates WHERE tenant_id = $1 AND locale = $2",
                &[&id, &locale],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = $1",
                    &[&id],
                )?;
            }
            Ok(n > 0)
        })
    }

    fn put_webhook(&self, id: &TenantId, w: &WebhookRow) -> Result<Option<bool>, StoreError> {
        self.do_put_webhook(id, w)
    }

    fn webhook(&self, id: &TenantId) -> Result<Option<WebhookRow>, StoreError> {
        self.do_webhook(id)
    }

    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError> {
        self.do_delete_webhook(id)
    }

    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.do_set_webhook_secret(id, sealed, now)
    }

    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError> {
        self.do_insert_event(e)
    }

    fn claim_events(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<EventJob>, StoreError> {
        self.do_claim_events(owner, now, lease_until, limit)
    }

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
        self.do_settle_event(event_id, owner, attempt, outcome, status_code, error, now)
    }

    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.do_webhook_deliveries(id, limit)
    }

    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError> {
        self.do_idem_begin(c)
    }

    fn idem_finish(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
        status: u16,
        response: &[u8],
    ) -> Result<(), StoreError> {
        self.do_idem_finish(id, key_digest, holder, status, response)
    }

    fn idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError> {
        self.do_idem_release(id, key_digest, holder)
    }

    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError> {
        self.do_purge_integration(now, records_before)
    }

    fn tenant_by_secret(
        &self,
        digest: &[u8],
        now: Millis,
    ) -> Result<Option<TenantRow>, StoreError> {
        self.query_opt(
            &format!(
                "SELECT {TENANT_COLS} FROM tenant_secrets s JOIN tenants t ON t.id = s.tenant_id \
                 WHERE s.digest = $1 AND (s.expires_at IS NULL OR s.expires_at > $2) AND t.enabled"
            ),
            &[&digest, &now],
        )?
        .map(|r| tenant_from_row(&r))
        .transpose()
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            // Lock the tenant: two rotations at once take turns.
            if tx
                .query_opt("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&id])?
                .is_none()
            {
                return Ok(false);
            }
            tx.execute(
                "UPDATE tenant_secrets SET expires_at = LEAST(COALESCE(expires_at, $2), $2) WHERE tenant_id = $1",
                &[&id, &old_until],
            )?;
            tx.execute(
                "DELETE FROM tenant_secrets WHERE tenant_id = $1 AND expires_at <= $2",
                &[&id, &now],
            )?;
            tx.execute(
                "INSERT INTO tenant_secrets (digest, tenant_id, created_at, expires_at) VALUES ($1, $2, $3, NULL)",
                &[&new_digest, &id, &now],
            )?;
            Ok(true)
        })
    }

    fn insert_code(
        &self,
        c: &NewChallenge,
        m: &NewOutbox,
        q: Option<&SendQuota>,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        self.do_insert_code(c, m, q, now)
    }

    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Vec<OutboxJob>, StoreError> {
        self.do_claim(c)
    }

    fn outbox_sent(
        &self,
        key_digest: &[u8],
        attempts: u32,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        self.do_sent(key_digest, attempts, now, event)
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
        self.do_retry(key_digest, owner, attempts, due_at, reason, maybe_delivered)
    }

    fn outbox_failed(
        &self,
        key_digest: &[u8],
        attempts: u32,
        reason: &str,
        maybe_delivered: bool,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        self.do_failed(key_digest, attempts, reason, maybe_delivered, now, event)
    }

    fn outbox_sweep(&self, now: Millis) -> Result<Vec<Swept>, StoreError> {
        self.do_sweep(now)
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        self.do_stats(now)
    }

    fn reserve_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        code_len: u32,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError> {
        let max_failures: i64 = if q.max_failures == 0 {
            i64::MAX
        } else {
            q.max_failures.into()
        };
        let t = tenant.as_str();
        self.tx(|tx| {
            if q.max_failures > 0 {
                // The recipient's failure budget is shared by all its codes: take its lock
                // (the same one a mint's quota check takes) before reading it.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('r' || chr(31) || tenant_id || chr(31) || email_canonical, 0)) \
                     FROM challenges WHERE key_digest = $1 AND tenant_id = $2",
                    &[&key_digest, &t],
                )?;
            }
            // The row lock of the UPDATE serialises guesses on one key: a concurrent guess
            // re-checks `attempts < max_attempts` on the committed row.
            let row = tx.query_opt(
                "UPDATE challenges c SET attempts = attempts + 1 \
                 WHERE key_digest = $1 AND tenant_id = $2 AND flavor = $3 AND status = 'pending' \
                   AND attempts < max_attempts AND expires_at > $4 AND code_length = $7 \
                   AND NOT EXISTS (SELECT 1 FROM recipient_failures f WHERE f.tenant_id = c.tenant_id \
                       AND f.email_canonical = c.email_canonical AND f.failures >= $5 AND f.window_start + $6 > $4) \
                 RETURNING code_hash, attempts, max_attempts, email, email_canonical, purpose, locale",
                &[&key_digest, &t, &flavor.as_str(), &now, &max_failures, &q.recipient_window_ms, &i64::from(code_len)],
            )?;
            let Some(row) = row else { return Ok(None) };
            let res = Reservation {
                code_hash: row.try_get(0)?,
                attempts: u32_at(&row, 1)?,
                max_attempts: u32_at(&row, 2)?,
                email: row.try_get(3)?,
                email_canonical: row.try_get(4)?,
                purpose: row.try_get(5)?,
                locale: row.try_get(6)?,
            };
            if q.max_failures > 0 {
                tx.execute(
                    "INSERT INTO recipient_failures (tenant_id, email_canonical, failures, window_start) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (tenant_id, email_canonical) DO UPDATE SET \
                       failures = CASE WHEN recipient_failures.window_start + $4 <= $3 THEN 1 ELSE recipient_failures.failures + 1 END, \
                       window_start = CASE WHEN recipient_failures.window_start + $4 <= $3 THEN $3 ELSE recipient_failures.window_start END",
                    &[&t, &res.email_canonical, &now, &q.recipient_window_ms],
                )?;
            }
            Ok(Some(res))
        })
    }

    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
    ) -> Result<(), StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            tx.execute(
                "UPDATE challenges SET attempts = attempts - 1 WHERE key_digest = $1 AND tenant_id = $2 AND attempts > 0",
                &[&key_digest, &t],
            )?;
            tx.execute(
                "UPDATE recipient_failures SET failures = failures - 1 WHERE tenant_id = $1 AND email_canonical = $2 AND failures > 0",
                &[&t, &recipient],
            )?;
            Ok(())
        })
    }

    fn finish_verify(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE challenges SET status = 'verified', verified_at = $3, ended_at = $3 \
                 WHERE key_digest = $1 AND tenant_id = $2 AND status = 'pending' AND expires_at > $3",
                &[&key_digest, &tenant.as_str(), &now],
            )?;
            if let (1, Some(e)) = (n, event) {
                integration::insert_event_in(tx, e)?;
            }
            Ok(n == 1)
        })
    }

    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<TenantId>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT c.tenant_id FROM challenges c JOIN tenants t ON t.id = c.tenant_id \
                 WHERE c.key_digest = $1 AND c.flavor = $2 AND t.enabled",
                &[&key_digest, &flavor.as_str()],
            )?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .map(TenantId::from_trusted))
    }

    fn challenge(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<ChallengeView>, StoreError> {
        self.query_opt(
            &format!("SELECT {VIEW_COLS} FROM challenges c WHERE c.key_digest = $1 AND c.tenant_id = $2 AND c.flavor = $3"),
            &[&key_digest, &tenant.as_str(), &flavor.as_str()],
        )?
        .map(|r| view_from_row(&r))
        .transpose()
    }

    fn cancel(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE challenges SET status = 'cancelled', ended_at = $4 WHERE key_digest = $1 AND tenant_id = $2 \
                 AND flavor = $3 AND status = 'pending' AND expires_at > $4 AND attempts < max_attempts",
                &[&key_digest, &t, &flavor.as_str(), &now],
            )?;
            let v = tx.query_opt(
                &format!("SELECT {VIEW_COLS} FROM challenges c WHERE c.key_digest = $1 AND c.tenant_id = $2 AND c.flavor = $3"),
                &[&key_digest, &t, &flavor.as_str()],
            )?;
            Ok(v.map(|r| view_from_row(&r)).transpose()?.map(|v| (n == 1, v)))
        })
    }

    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError> {
        // Each statement is idempotent: instances purging at once delete each row once.
        let mut conn = self.conn()?;
        let mut conn = conn.db();
        let n = conn.execute(
            "DELETE FROM challenges WHERE (ended_at IS NOT NULL AND ended_at < $1) OR expires_at < $1",
            &[&before],
        )?;
        conn.execute("DELETE FROM sends WHERE at < $1", &[&sends_before])?;
        conn.execute(
            "DELETE FROM tenant_send_minutes WHERE minute < $1",
            &[&sends_before.div_euclid(MINUTE_MS)],
        )?;
        conn.execute(
            "DELETE FROM recipient_failures WHERE window_start < $1",
            &[&sends_before],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn import(
        &self,
        tenants: &[(TenantRow, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError> {
        self.tx(|tx| {
            let mut counts = ImportCounts::default();
            for (t, digest) in tenants {
                let taken: bool = tx
                    .query_one(
                        "SELECT EXISTS(SELECT 1 FROM tenant_secrets WHERE digest = $1)",
                        &[digest],
                    )?
                    .try_get(0)?;
                if taken {
                    counts.tenants_present += 1;
                    continue;
                }
                if !insert_tenant_row(tx, t, digest, now)? {
                    return Err(StoreError::Conflict("secret key already registered"));
                }
                counts.tenants_added += 1;
            }
            for ic in codes {
                let c = &ic.code;
                let present: bool = tx
                    .query_one(
                        "SELECT EXISTS(SELECT 1 FROM challenges WHERE key_digest = $1)",
                        &[&c.key_digest],
                    )?
                    .try_get(0)?;
                if present {
                    counts.codes_present += 1;
                    continue;
                }
                let owner: String = tx
                    .query_opt(
                        "SELECT tenant_id FROM tenant_secrets WHERE digest = $1",
                        &[&ic.owner_secret_digest],
                    )?
                    .ok_or(StoreError::Corrupt("imported code has no owner".into()))?
                    .try_get(0)?;
                insert_challenge(
                    tx,
                    c,
                    &owner,
                    ic.attempts,
                    ("sync", "sent", 1, Some(c.created_at)),
                )?;
                counts.codes_added += 1;
            }
            Ok(counts)
        })
    }

    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.tx(|tx| {
            // A tenant deleted meanwhile has no audit: skip its events.
            for e in events {
                tx.execute(
                    "INSERT INTO audit (tenant_id, at, event, recipient, outcome, client_ip, request_id) \
                     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
                    &[&e.tenant_id, &e.at, &e.event, &e.recipient, &e.outcome, &e.client_ip, &e.request_id],
                )?;
            }
            Ok(())
        })
    }

    fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.conn()?
            .db()
            .query(
                "SELECT id, tenant_id, at, event, recipient, outcome, client_ip, request_id FROM audit \
                 WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&tenant.as_str(), &before.unwrap_or(i64::MAX), &i64::from(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get(0)?,
                    tenant_id: r.try_get(1)?,
                    at: r.try_get(2)?,
                    event: r.try_get(3)?,
                    recipient: r.try_get(4)?,
                    outcome: r.try_get(5)?,
                    client_ip: r.try_get(6)?,
                    request_id: r.try_get(7)?,
                })
            })
            .collect()
    }

    fn purge_audit(&self, before: Millis) -> Result<usize, StoreError> {
        let n = self
            .conn()?
            .db()
            .execute("DELETE FROM audit WHERE at < $1", &[&before])?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn take_send(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        self.tx(|tx| {
            lock_all(tx, &quota_locks(tenant, recipient, q))?;
            take_send_in(tx, tenant, recipient, q, now)
        })
    }

    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        quota_check(&mut self.conn()?.db(), tenant, recipient, q, now)
    }

    fn failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        if q.max_failures == 0 {
            return Ok(None);
        }
        let row = self.query_opt(
            "SELECT failures, window_start FROM recipient_failures WHERE tenant_id = $1 AND email_canonical = $2",
            &[&tenant.as_str(), &recipient],
        )?;
        let Some(row) = row else { return Ok(None) };
        Ok(q.failures_until(row.try_get(0)?, row.try_get(1)?, now))
    }

    fn export_snapshot(&self) -> Result<copy::Snapshot, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let mut out = Vec::new();
        for t in copy::TABLES {
            let rows = tx.query(&format!("SELECT {} FROM {}", t.column_list(), t.name), &[])?;
            out.push((t, export_rows(t, &rows)?));
        }
        tx.commit()?;
        Ok(out)
    }

    fn import_snapshot(&self, s: &copy::Snapshot) -> Result<(), StoreError> {
        self.tx(|tx| {
            // Also keeps two copies into one database from interleaving.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYRING_LOCK])?;
            let held: bool = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM keyring) OR EXISTS(SELECT 1 FROM tenants)",
                    &[],
                )?
                .try_get(0)?;
            if held {
                return Err(StoreError::Conflict(
                    "the target database already holds an installation",
                ));
            }
            for (t, rows) in s {
                let marks = (1..=t.columns.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let overriding = if t.identity.is_some() {
                    " OVERRIDING SYSTEM VALUE"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO {} ({}){overriding} VALUES ({marks})",
                    t.name,
                    t.column_list()
                );
                for row in rows {
                    let values: Vec<Box<dyn ToSql + Sync>> = row
                        .iter()
                        .zip(t.columns)
                        .map(|(v, (_, kind))| -> Box<dyn ToSql + Sync> {
                            match (v, kind) {
                                (copy::Value::Int(i), copy::Kind::Bool) => Box::new(*i != 0),
                                (copy::Value::Int(i), _) => Box::new(*i),
                                (copy::Value::Bool(b), _) => Box::new(*b),
                                (copy::Value::Text(s), _) => Box::new(s.clone()),
                                (copy::Value::Blob(b), _) => Box::new(b.clone()),
                                (copy::Value::Null, copy::Kind::Int) => Box::new(None::<i64>),
                                (copy::Value::Null, copy::Kind::Text) => Box::new(None::<String>),
                                (copy::Value::Null, copy::Kind::Blob) => Box::new(None::<Vec<u8>>),
                                (copy::Value::Null, copy::Kind::Bool) => Box::new(None::<bool>),
                            }
                        })
                        .collect();
                    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
                    tx.execute(&sql, &refs)?;
                }
                if let Some(col) = t.identity {
                    // The next number the table hands out comes after the copied ones.
                    tx.execute(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{0}', '{col}'), COALESCE(MAX({col}), 1), MAX({col}) IS NOT NULL) FROM {0}",
                            t.name
                        ),
                        &[],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn clear_failures(&self, tenant: &TenantId, recipient: &str) -> Result<(), StoreError> {
        self.conn()?.db().execute(
            "DELETE FROM recipient_failures WHERE tenant_id = $1 AND email_canonical = $2",
            &[&tenant.as_str(), &recipient],
        )?;
        Ok(())
    }
}

/// Rows read from `t`, as copy values.
fn export_rows(t: &'static copy::Table, rows: &[Row]) -> Result<Vec<Vec<copy::Value>>, StoreError> {
    rows.iter()
        .map(|r| {
            t.columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    Ok(match kind {
                        copy::Kind::Int => r
                            .try_get::<_, Option<i64>>(i)?
                            .map_or(copy::Value::Null, copy::Value::Int),
                        copy::Kind::Text => r
                            .try_get::<_, Option<String>>(i)?
                            .map_or(copy::Value::Null, copy::Value::Text),
                        copy::Kind::Blob => r
                            .try_get::<_, Option<Vec<u8>>>(i)?
                            .map_or(copy::Value::Null, copy::Value::Blob),
                        copy::Kind::Bool => r
                            .try_get::<_, Option<bool>>(i)?
                            .map_or(copy::Value::Null, copy::Value::Bool),
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_counts_widen() {
        assert_eq!(opt_u32(Some(3)), Some(3));
        assert_eq!(opt_u32(None), None);
    }
}
