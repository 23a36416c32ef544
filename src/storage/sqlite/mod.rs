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
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_panicking_write_fails_its_batch_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db"), 2).unwrap();
        let r: Result<(), StoreError> = store.writer.write(|_| panic!("a bug in one write"));
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        // The next write commits: the writer thread survived.
        store.write_probe().unwrap();
        let n: i64 = store
            .writer
            .write(|c| Ok(c.query_row_cached("SELECT 41 + 1", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 42);
    }

    /// A test call: runs `f` against the store, reports through a channel.
    struct TestCall<F> {
        store: std::sync::Arc<SqliteStore>,
        f: F,
        tx: std::sync::mpsc::Sender<Result<i64, StoreError>>,
    }

    impl<F> WriteCall for TestCall<F>
    where
        F: FnOnce(&SqliteStore) -> Result<i64, StoreError> + Send + 'static,
    {
        fn run(self: Box<Self>) -> Box<dyn FnOnce(Result<(), StoreError>) + Send> {
            let out = (self.f)(&self.store);
            let tx = self.tx;
            Box::new(move |committed| {
                let _ = tx.send(committed.and(out));
            })
        }
        fn fail(self: Box<Self>, e: StoreError) {
            let _ = self.tx.send(Err(e));
        }
    }

    fn count(store: &SqliteStore) -> i64 {
        store
            .conn()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_submitted_call_writes_in_the_writers_batch_and_hears_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.db"), 2).unwrap());
        store
            .writer
            .write(|c| Ok(c.execute_batch("CREATE TABLE kv (k INTEGER PRIMARY KEY)")?))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Two writes of the store's own kind inside one call: on the writer's thread they
        // run in its open batch (a wait for the writer there would never end). The second
        // fails and is rolled back alone; the first stays.
        let call = TestCall {
            store: std::sync::Arc::clone(&store),
            f: |s: &SqliteStore| {
                assert_eq!(
                    std::thread::current().name(),
                    Some("otpmint-db-writer"),
                    "the call runs on the writer's thread"
                );
                s.writer
                    .write(|c| Ok(c.execute("INSERT INTO kv (k) VALUES (1)", [])?))?;
                let dup = s.writer.write(|c| {
                    c.execute("INSERT INTO kv (k) VALUES (2)", [])?;
                    Ok(c.execute("INSERT INTO kv (k) VALUES (1)", [])?)
                });
                assert!(dup.is_err());
                s.writer
                    .write(|c| Ok(c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))?))
            },
            tx,
        };
        assert!(store.submit(Box::new(call)).is_ok());
        let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(seen, 1);
        // Answered only once durable: a fresh connection sees exactly the first row.
        assert_eq!(count(&store), 1);
        let k: i64 = store
            .conn()
            .unwrap()
            .query_row("SELECT k FROM kv", [], |r| r.get(0))
            .unwrap();
        assert_eq!(k, 1);
    }

    #[test]
    fn a_submitted_call_reads_through_its_batch_without_waiting_for_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("r.db"), 2).unwrap());
        store
            .writer
            .write(|c| Ok(c.execute_batch("CREATE TABLE kv (k INTEGER PRIMARY KEY)")?))
            .unwrap();
        // Every pooled connection is taken: a read through the pool would wait for one (and
        // time out), as it would while the callers holding them wait for the writer.
        let held = (store.pooled().unwrap(), store.pooled().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let call = TestCall {
            store: std::sync::Arc::clone(&store),
            f: |s: &SqliteStore| {
                s.writer
                    .write(|c| Ok(c.execute("INSERT INTO kv (k) VALUES (5)", [])?))?;
                // The read sees the batch's own uncommitted row.
                Ok(s.conn()?.query_row("SELECT k FROM kv", [], |r| r.get(0))?)
            },
            tx,
        };
        assert!(store.submit(Box::new(call)).is_ok());
        let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(seen, 5);
        drop(held);
        assert_eq!(count(&store), 1);
    }

    #[test]
    fn a_call_finding_the_writers_queue_full_is_refused_at_once_and_the_rest_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("q.db"), 2).unwrap());
        // Hold the writer inside a write until released.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                store.writer.write(move |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let call = |tx: &std::sync::mpsc::Sender<Result<i64, StoreError>>| {
            Box::new(TestCall {
                store: std::sync::Arc::clone(&store),
                f: |_: &SqliteStore| Ok(1),
                tx: tx.clone(),
            })
        };
        for _ in 0..writer::QUEUE_MAX {
            assert!(store.submit(call(&tx)).is_ok());
        }
        // One more than the queue holds: refused as unavailable, without waiting.
        let (over_tx, over_rx) = std::sync::mpsc::channel();
        assert!(store.submit(call(&over_tx)).is_ok());
        let refused = over_rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("busy")),
            "{refused:?}"
        );
        // Released, the writer answers every queued call.
        release_tx.send(()).unwrap();
        holder.join().unwrap().unwrap();
        for _ in 0..writer::QUEUE_MAX {
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap(),
                1
            );
        }
    }

    #[test]
    fn a_panicking_call_fails_its_batch_and_nothing_of_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("p.db"), 2).unwrap());
        store
            .writer
            .write(|c| Ok(c.execute_batch("CREATE TABLE kv (k INTEGER PRIMARY KEY)")?))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let call = TestCall {
            store: std::sync::Arc::clone(&store),
            f: |s: &SqliteStore| {
                s.writer
                    .write(|c| Ok(c.execute("INSERT INTO kv (k) VALUES (7)", [])?))?;
                panic!("a bug after a write");
            },
            tx,
        };
        assert!(store.submit(Box::new(call)).is_ok());
        // The call's channel is dropped unanswered with the batch; nothing was committed.
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
        assert_eq!(count(&store), 0);
        store.write_probe().unwrap();
    }

    #[test]
    fn a_stored_value_outside_its_type_is_reported_as_corrupt() {
        use crate::domain::tenant::{Origin, Sender, SmtpHost, TlsMode};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db"), 2).unwrap();
        let t = Tenant {
            id: TenantId::generate(),
            name: TenantName::parse("Acme").unwrap(),
            enabled: true,
            origin: Origin::Native,
            created_at: 1,
            smtp: SmtpAccount {
                host: SmtpHost::parse("mail.acme.example").unwrap(),
                port: 587,
                username: "u".into(),
                password: vec![1, 2, 3],
                from: Sender::parse("Acme <a@acme.example>").unwrap(),
                tls: TlsMode::Starttls,
                max_connections: 4,
            },
            smtp_version: 1,
            policy: Policy {
                code_length: 6,
                ttl_seconds: 600,
                max_attempts: 5,
            },
            delivery: DeliveryMode::Sync,
            default_locale: Locale::english(),
            templates_version: 0,
            webhook_events: String::new(),
        };
        store.insert_tenant(&t, &[9; 32], 1).unwrap();
        let back = store.tenant(&t.id).unwrap().unwrap();
        assert_eq!(
            (back.smtp.tls, back.origin),
            (TlsMode::Starttls, Origin::Native)
        );
        for (column, bad) in [
            ("smtp_tls", "sometimes"),
            ("origin", "elsewhere"),
            ("delivery", "carrier-pigeon"),
            ("default_locale", "not a locale!"),
        ] {
            let conn = store.conn().unwrap();
            let good: String = conn
                .query_row(&format!("SELECT {column} FROM tenants"), [], |r| r.get(0))
                .unwrap();
            conn.execute(&format!("UPDATE tenants SET {column} = ?1"), [bad])
                .unwrap();
            let r = store.tenant(&t.id);
            assert!(matches!(r, Err(StoreError::Corrupt(_))), "{column}: {r:?}");
            conn.execute(&format!("UPDATE tenants SET {column} = ?1"), [good])
                .unwrap();
        }
        assert!(store.tenant(&t.id).unwrap().is_some());
    }
}
