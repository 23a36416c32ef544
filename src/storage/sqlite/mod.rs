//! SQLite store: r2d2 + rusqlite, WAL, synchronous=FULL, busy timeout, refinery migrations,
//! and one group-commit writer thread for the writes of a running server.

mod codes;
mod integration;
mod keyring;
mod outbox;
mod records;
mod store;
mod tenants;
mod writer;

use writer::Writer;

use std::path::Path;
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::integration::{
    DeliveryRow, EventJob, EventOutcome, IdemBegin, IdemClaim, NewEvent, WebhookRow,
};
use super::*;
use crate::crypto::keyring::WrappedKey;
use crate::domain::delivery::{DeliveryStatus, DeliveryView};

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// Prepared statements kept per connection: every fixed statement of the store fits.
const STATEMENT_CACHE: usize = 128;

/// Statements through the connection's prepared-statement cache. The hot paths run the same
/// few statements thousands of times a second; parsing and planning each one every time was
/// a measurable share of the verify path's CPU (docs/benchmarks.md).
trait CachedSql {
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedSql for rusqlite::Connection {
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// A tenant row's columns, for queries that name the table `t`. The webhook subscription is
/// read from `webhooks` (its one home), not kept on the tenant.
const TENANT_COLS: &str =
    "t.id, t.name, t.enabled, t.origin, t.created_at, t.smtp_host, t.smtp_port, t.smtp_username, \
     t.smtp_password, t.smtp_from, t.smtp_tls, t.smtp_version, t.code_length, t.ttl_seconds, \
     t.max_attempts, t.smtp_max_connections, t.delivery, t.default_locale, t.templates_version, \
     COALESCE((SELECT w.events FROM webhooks w WHERE w.tenant_id = t.id), '')";
const VIEW_COLS: &str =
    "status, email, email_canonical, purpose, attempts, max_attempts, code_length, \
     created_at, expires_at, verified_at, delivery_mode, delivery_status, delivery_attempts, \
     delivery_reason, sent_at, \
     EXISTS(SELECT 1 FROM outbox o WHERE o.key_digest = challenges.key_digest AND o.leased_by IS NOT NULL)";

pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    writer: Writer,
}

impl SqliteStore {
    /// Open (creating the file and its directory) and migrate.
    pub fn open(path: &Path, pool_size: u32) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Migration(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        // Private from the first byte: SQLite gives its -wal and -shm files the database
        // file's mode (API.md §6.26).
        create_private(path)?;
        // WAL is a property of the file: switch once, before the pool opens its connections
        // (concurrent switches fail with "database is locked").
        {
            let c = rusqlite::Connection::open(path)?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        });
        let pool = Pool::builder()
            .max_size(pool_size)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let writer = Writer::start(path)?;
        let store = SqliteStore { pool, writer };
        store.migrate()?;
        Ok(store)
    }

    pub fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.pooled()?;
        let report = embedded::migrations::runner()
            .run(&mut *conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(report.applied_migrations().len())
    }

    /// A connection for a read: on the writer's thread, inside a call it runs (a
    /// [`crate::storage::WriteCall`]), the open batch's own, so the read sees the batch and
    /// never waits for a pooled connection that a caller waiting for the writer holds;
    /// elsewhere a pooled one.
    fn conn(&self) -> Result<Conn, StoreError> {
        match self.writer.batch_conn() {
            Some(c) => Ok(Conn::Batch(c)),
            None => Ok(Conn::Pooled(self.pooled()?)),
        }
    }

    /// A pooled connection of its own: for a transaction, a write outside the writer (the
    /// keyring's compare-and-swap re-wraps) or a backup, none of which may run inside a batch.
    fn pooled(&self) -> Result<PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }
}

/// See [`SqliteStore::conn`].
enum Conn {
    Pooled(PooledConnection<SqliteConnectionManager>),
    Batch(std::rc::Rc<rusqlite::Connection>),
}

impl std::ops::Deref for Conn {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        match self {
            Conn::Pooled(c) => c,
            Conn::Batch(c) => c,
        }
    }
}

/// Create `path` with mode 0600 if it does not exist yet.
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// A tenant and its current secret digest (callers hold the transaction).
fn insert_tenant_row(
    conn: &rusqlite::Connection,
    t: &Tenant,
    secret_digest: &[u8],
    now: Millis,
) -> Result<(), StoreError> {
    conn.execute_cached(
        "INSERT INTO tenants (id, name, enabled, origin, created_at, updated_at, smtp_host, smtp_port, \
         smtp_username, smtp_password, smtp_from, smtp_tls, smtp_version, code_length, ttl_seconds, max_attempts, \
         smtp_max_connections, delivery, default_locale) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            t.id.as_str(),
            t.name.as_str(),
            t.enabled,
            t.origin.as_str(),
            t.created_at,
            t.smtp.host.as_str(),
            t.smtp.port,
            t.smtp.username,
            t.smtp.password,
            t.smtp.from.as_str(),
            t.smtp.tls.as_str(),
            t.smtp_version,
            t.policy.code_length,
            t.policy.ttl_seconds,
            t.policy.max_attempts,
            t.smtp.max_connections,
            t.delivery.as_str(),
            t.default_locale.as_str()
        ],
    )?;
    conn.execute_cached(
        "INSERT INTO tenant_secrets (digest, tenant_id, created_at, expires_at) VALUES (?1, ?2, ?3, NULL)",
        params![secret_digest, t.id.as_str(), now],
    )?;
    Ok(())
}

/// A stored value that must be one of a set, or a conversion error naming its column.
fn stored<T>(column: usize, v: Option<T>) -> rusqlite::Result<T> {
    v.ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            "stored value out of range".into(),
        )
    })
}

fn tenant_from_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        delivery: stored(16, DeliveryMode::parse(r.get_ref(16)?.as_str()?))?,
        id: TenantId::from_trusted(r.get(0)?),
        name: TenantName::from_stored(r.get(1)?),
        enabled: r.get(2)?,
        origin: stored(3, Origin::parse(r.get_ref(3)?.as_str()?))?,
        created_at: r.get(4)?,
        smtp: SmtpAccount {
            host: SmtpHost::from_stored(r.get(5)?),
            port: r.get(6)?,
            username: r.get(7)?,
            password: r.get(8)?,
            from: Sender::from_stored(r.get(9)?),
            tls: stored(10, TlsMode::parse(r.get_ref(10)?.as_str()?))?,
            max_connections: r.get(15)?,
        },
        smtp_version: r.get(11)?,
        policy: Policy {
            code_length: r.get(12)?,
            ttl_seconds: r.get(13)?,
            max_attempts: r.get(14)?,
        },
        default_locale: stored(17, Locale::parse(r.get_ref(17)?.as_str()?))?,
        templates_version: r.get(18)?,
        webhook_events: r.get(19)?,
    })
}

fn view_from_row(r: &Row<'_>) -> rusqlite::Result<(String, ChallengeView)> {
    let status: String = r.get(0)?;
    let mode: String = r.get(10)?;
    let delivery_status: String = r.get(11)?;
    let leased: bool = r.get(15)?;
    let delivery_status = match DeliveryStatus::parse_stored(&delivery_status) {
        Some(DeliveryStatus::Queued) if leased => DeliveryStatus::Sending,
        Some(s) => s,
        None => DeliveryStatus::Failed,
    };
    Ok((
        status,
        ChallengeView {
            status: StoredStatus::Pending,
            email: r.get(1)?,
            email_canonical: r.get(2)?,
            purpose: r.get(3)?,
            attempts: r.get(4)?,
            max_attempts: r.get(5)?,
            code_length: r.get(6)?,
            created_at: r.get(7)?,
            expires_at: r.get(8)?,
            verified_at: r.get(9)?,
            delivery: DeliveryView {
                mode: DeliveryMode::parse(&mode).unwrap_or(DeliveryMode::Sync),
                status: delivery_status,
                attempts: r.get(12)?,
                reason: r.get(13)?,
                sent_at: r.get(14)?,
            },
        },
    ))
}

fn finish_view(v: Option<(String, ChallengeView)>) -> Result<Option<ChallengeView>, StoreError> {
    match v {
        None => Ok(None),
        Some((s, mut view)) => {
            view.status = status_from(&s)?;
            Ok(Some(view))
        }
    }
}

/// Every quota check of a mint, counting nothing.
fn quota_check(
    tx: &rusqlite::Connection,
    tenant: &TenantId,
    recipient: &str,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    let t = tenant.as_str();
    if q.max_failures > 0 {
        let row: Option<(i64, Millis)> = tx
            .query_row_cached(
                "SELECT failures, window_start FROM recipient_failures WHERE tenant_id = ?1 AND email_canonical = ?2",
                params![t, recipient],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some(r) = row.and_then(|(f, start)| q.failures_refusal(f, start, now)) {
            return Ok(Err(r));
        }
    }
    if q.cooldown_ms > 0 {
        let last: Option<Millis> = tx.query_row_cached(
            "SELECT MAX(at) FROM sends WHERE tenant_id = ?1 AND email_canonical = ?2",
            params![t, recipient],
            |r| r.get(0),
        )?;
        if let Some(r) = q.cooldown_refusal(last, now) {
            return Ok(Err(r));
        }
    }
    if q.recipient_max > 0 {
        let (count, oldest): (i64, Option<Millis>) = tx.query_row_cached(
            "SELECT COUNT(*), MIN(at) FROM sends WHERE tenant_id = ?1 AND email_canonical = ?2 AND at > ?3",
            params![t, recipient, q.recipient_window_start(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(r) = q.recipient_refusal(count, oldest, now) {
            return Ok(Err(r));
        }
    }
    if q.tenant_max_per_hour > 0 {
        let (count, oldest): (i64, Option<i64>) = tx.query_row_cached(
            "SELECT COALESCE(SUM(sends), 0), MIN(minute) FROM tenant_send_minutes \
             WHERE tenant_id = ?1 AND minute > ?2 AND sends > 0",
            params![t, SendQuota::tenant_minutes_after(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(r) = q.tenant_refusal(count, oldest, now) {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

/// Check every quota and, if all allow it, count one send (callers hold the write lock).
fn take_send_in(
    tx: &rusqlite::Connection,
    tenant: &TenantId,
    recipient: &str,
    q: &SendQuota,
    now: Millis,
) -> Result<Result<(), QuotaRefusal>, StoreError> {
    if let Err(r) = quota_check(tx, tenant, recipient, q, now)? {
        return Ok(Err(r));
    }
    tx.execute_cached(
        "INSERT INTO sends (tenant_id, email_canonical, at) VALUES (?1, ?2, ?3)",
        params![tenant.as_str(), recipient, now],
    )?;
    tx.execute_cached(
        "INSERT INTO tenant_send_minutes (tenant_id, minute, sends) VALUES (?1, ?2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = sends + 1",
        params![tenant.as_str(), now.div_euclid(MINUTE_MS)],
    )?;
    Ok(Ok(()))
}

/// Every row of `t`, inside the caller's read transaction.
fn export_table(
    conn: &rusqlite::Connection,
    t: &'static copy::Table,
) -> Result<Vec<Vec<copy::Value>>, StoreError> {
    use rusqlite::types::ValueRef;
    let mut st = conn.prepare(&format!("SELECT {} FROM {}", t.column_list(), t.name))?;
    let rows = st
        .query_map([], |r| {
            t.columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    Ok(match (r.get_ref(i)?, kind) {
                        (ValueRef::Null, _) => copy::Value::Null,
                        (ValueRef::Integer(v), copy::Kind::Bool) => copy::Value::Bool(v != 0),
                        (ValueRef::Integer(v), _) => copy::Value::Int(v),
                        (ValueRef::Text(v), _) => {
                            copy::Value::Text(String::from_utf8_lossy(v).into_owned())
                        }
                        (ValueRef::Blob(v), _) => copy::Value::Blob(v.to_vec()),
                        (ValueRef::Real(v), _) => copy::Value::Int(v as i64),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
