//! SQLite store: r2d2 + rusqlite, WAL, synchronous=FULL, busy timeout, refinery migrations,
//! and one group-commit writer thread for the writes of a running server.

mod integration;
mod outbox;

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

const TENANT_COLS: &str =
    "id, name, enabled, origin, created_at, smtp_host, smtp_port, smtp_username, \
     smtp_password, smtp_from, smtp_tls, smtp_version, code_length, ttl_seconds, max_attempts, \
     smtp_max_connections, delivery, default_locale, templates_version, webhook_events";
const VIEW_COLS: &str =
    "status, email, email_canonical, purpose, attempts, max_attempts, code_length, \
     created_at, expires_at, verified_at, delivery_mode, delivery_status, delivery_attempts, \
     delivery_reason, sent_at, \
     EXISTS(SELECT 1 FROM outbox o WHERE o.key_digest = challenges.key_digest AND o.leased_by IS NOT NULL)";

pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    writer: Writer,
}

/// One write of the hot paths: `run` executes inside the batch's transaction and returns
/// what to do once the batch committed (or failed); `fail` answers when it never ran.
/// Called once the batch committed (`None`) or failed (`Some(error)`).
type Finish = Box<dyn FnOnce(Option<BatchError>) + Send>;

/// Why a batch did not commit, in a form every caller of the batch can get a copy of.
#[derive(Debug, Clone)]
struct BatchError {
    unavailable: bool,
    message: String,
}

impl BatchError {
    fn of(e: rusqlite::Error) -> BatchError {
        let e = StoreError::from(e);
        BatchError {
            unavailable: e.is_unavailable(),
            message: e.to_string(),
        }
    }
    fn aborted() -> BatchError {
        BatchError {
            unavailable: true,
            message: "the batch transaction was aborted".into(),
        }
    }
    fn into_store(self) -> StoreError {
        if self.unavailable {
            StoreError::Unavailable(self.message)
        } else {
            StoreError::Commit(self.message)
        }
    }
}

struct Job {
    run: Box<dyn FnOnce(&rusqlite::Connection) -> Finish + Send>,
    fail: Box<dyn FnOnce(BatchError) + Send>,
}

/// Group commit: one thread owns a connection and commits every queued write in one
/// durable transaction (`synchronous = FULL`), each write in its own savepoint. Callers wait
/// for the commit, so durability is unchanged; under concurrency many writes share one
/// fsync instead of paying one each.
struct Writer {
    tx: std::sync::mpsc::SyncSender<Job>,
}

const BATCH_MAX: usize = 256;
/// Writes allowed to wait for the writer; beyond this a write is refused as unavailable
/// (503) instead of queueing without bound.
const QUEUE_MAX: usize = 8192;

impl Writer {
    fn start(path: &Path) -> Result<Writer, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE_MAX);
        std::thread::Builder::new()
            .name("otpmint-db-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                        let e = BatchError::of(e);
                        for j in jobs {
                            (j.fail)(e.clone());
                        }
                        continue;
                    }
                    let mut panicked = false;
                    let mut done = Vec::with_capacity(jobs.len());
                    for j in jobs {
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            (j.run)(&conn)
                        })) {
                            Ok(d) => done.push(d),
                            Err(_) => panicked = true,
                        }
                    }
                    // A panicked job or a transaction SQLite rolled back by itself (I/O error,
                    // disk full) fails the whole batch: nothing of it is committed.
                    let outcome = if panicked || conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                        Some(BatchError::aborted())
                    } else {
                        conn.execute_batch("COMMIT").err().map(|e| {
                            let _ = conn.execute_batch("ROLLBACK");
                            BatchError::of(e)
                        })
                    };
                    for d in done {
                        d(outcome.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Migration(format!("cannot start the database writer: {e}")))?;
        Ok(Writer { tx })
    }

    /// Run `f` in the next batch and wait until that batch is durably committed.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (rtx, rrx) = std::sync::mpsc::sync_channel::<Result<T, StoreError>>(1);
        let fail_tx = rtx.clone();
        let job = Job {
            run: Box::new(move |c| {
                let out = (|| {
                    // If SQLite already rolled the batch back, run nothing in autocommit mode.
                    if c.is_autocommit() {
                        return Err(BatchError::aborted().into_store());
                    }
                    c.execute_batch("SAVEPOINT job")?;
                    let r = f(c);
                    match &r {
                        Ok(_) => c.execute_batch("RELEASE job")?,
                        Err(_) => c.execute_batch("ROLLBACK TO job; RELEASE job")?,
                    }
                    r
                })();
                Box::new(move |commit_error: Option<BatchError>| {
                    let _ = rtx.send(match commit_error {
                        None => out,
                        Some(e) => Err(e.into_store()),
                    });
                })
            }),
            fail: Box::new(move |e: BatchError| {
                let _ = fail_tx.send(Err(e.into_store()));
            }),
        };
        self.tx.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                StoreError::Unavailable("the database writer is busy".into())
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                StoreError::Unavailable("the database writer stopped".into())
            }
        })?;
        rrx.recv()
            .map_err(|_| StoreError::Unavailable("the database writer dropped a write".into()))?
    }
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
        let mut conn = self.conn()?;
        let report = embedded::migrations::runner()
            .run(&mut *conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(report.applied_migrations().len())
    }

    fn conn(&self) -> Result<PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
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
    t: &TenantRow,
    secret_digest: &[u8],
    now: Millis,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO tenants (id, name, enabled, origin, created_at, updated_at, smtp_host, smtp_port, \
         smtp_username, smtp_password, smtp_from, smtp_tls, smtp_version, code_length, ttl_seconds, max_attempts, \
         smtp_max_connections, delivery, default_locale) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            t.id.as_str(),
            t.name,
            t.enabled,
            t.origin,
            t.created_at,
            t.smtp.host,
            t.smtp.port,
            t.smtp.username,
            t.smtp.password,
            t.smtp.from,
            t.smtp.tls,
            t.smtp_version,
            t.policy.code_length,
            t.policy.ttl_seconds,
            t.policy.max_attempts,
            t.smtp.max_connections,
            t.delivery.as_str(),
            t.default_locale
        ],
    )?;
    conn.execute(
        "INSERT INTO tenant_secrets (digest, tenant_id, created_at, expires_at) VALUES (?1, ?2, ?3, NULL)",
        params![secret_digest, t.id.as_str(), now],
    )?;
    Ok(())
}

fn tenant_from_row(r: &Row<'_>) -> rusqlite::Result<TenantRow> {
    let delivery: String = r.get(16)?;
    Ok(TenantRow {
        delivery: DeliveryMode::parse(&delivery).unwrap_or(DeliveryMode::Sync),
        id: TenantId::from_trusted(r.get(0)?),
        name: r.get(1)?,
        enabled: r.get(2)?,
        origin: r.get(3)?,
        created_at: r.get(4)?,
        smtp: SmtpRow {
            host: r.get(5)?,
            port: r.get(6)?,
            username: r.get(7)?,
            password: r.get(8)?,
            from: r.get(9)?,
            tls: r.get(10)?,
            max_connections: r.get(15)?,
        },
        smtp_version: r.get(11)?,
        policy: Policy {
            code_length: r.get(12)?,
            ttl_seconds: r.get(13)?,
            max_attempts: r.get(14)?,
        },
        default_locale: r.get(17)?,
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
            .query_row(
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
        let last: Option<Millis> = tx.query_row(
            "SELECT MAX(at) FROM sends WHERE tenant_id = ?1 AND email_canonical = ?2",
            params![t, recipient],
            |r| r.get(0),
        )?;
        if let Some(r) = q.cooldown_refusal(last, now) {
            return Ok(Err(r));
        }
    }
    if q.recipient_max > 0 {
        let (count, oldest): (i64, Option<Millis>) = tx.query_row(
            "SELECT COUNT(*), MIN(at) FROM sends WHERE tenant_id = ?1 AND email_canonical = ?2 AND at > ?3",
            params![t, recipient, q.recipient_window_start(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(r) = q.recipient_refusal(count, oldest, now) {
            return Ok(Err(r));
        }
    }
    if q.tenant_max_per_hour > 0 {
        let (count, oldest): (i64, Option<i64>) = tx.query_row(
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
    tx.execute(
        "INSERT INTO sends (tenant_id, email_canonical, at) VALUES (?1, ?2, ?3)",
        params![tenant.as_str(), recipient, now],
    )?;
    tx.execute(
        "INSERT INTO tenant_send_minutes (tenant_id, minute, sends) VALUES (?1, ?2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = sends + 1",
        params![tenant.as_str(), now.div_euclid(MINUTE_MS)],
    )?;
    Ok(Ok(()))
}

impl Store for SqliteStore {
    fn write_probe(&self) -> Result<(), StoreError> {
        self.writer.write(|_| Ok(()))
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

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare(
            "SELECT kind, version, wrapped, kek_id, active FROM keyring ORDER BY kind, version",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(WrappedKey {
                    kind: r.get(0)?,
                    version: r.get(1)?,
                    wrapped: r.get(2)?,
                    kek_id: r.get(3)?,
                    active: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn init_keyring(
        &self,
        rows: &[WrappedKey],
        now: Millis,
    ) -> Result<Vec<WrappedKey>, StoreError> {
        {
            let mut conn = self.conn()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: i64 = tx.query_row("SELECT COUNT(*) FROM keyring", [], |r| r.get(0))?;
            if existing == 0 {
                for k in rows {
                    tx.execute(
                        "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![k.kind, k.version, k.wrapped, k.kek_id, k.active, now],
                    )?;
                }
            }
            tx.commit()?;
        }
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
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE keyring SET wrapped = ?3, kek_id = ?4 WHERE kind = ?1 AND version = ?2 AND kek_id = ?5",
            params![kind, version, wrapped, kek_id, old_kek_id],
        )?;
        Ok(n == 1)
    }

    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("UPDATE keyring SET active = 0 WHERE kind = ?1", [&row.kind])?;
        tx.execute(
            "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
            params![row.kind, row.version, row.wrapped, row.kek_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn set_smtp_password(&self, id: &TenantId, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE tenants SET smtp_password = ?3 WHERE id = ?1 AND smtp_password = ?2",
            params![id.as_str(), old, new],
        )?;
        Ok(n == 1)
    }

    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        if path.exists() {
            return Err(StoreError::Conflict("the backup file already exists"));
        }
        let conn = self.conn()?;
        create_private(path)?;
        let mut dst = rusqlite::Connection::open(path)?;
        {
            let backup = rusqlite::backup::Backup::new(&conn, &mut dst)?;
            backup.run_to_completion(256, Duration::from_millis(2), None)?;
        }
        // A single file, no WAL: easy to copy off the machine.
        dst.pragma_update(None, "journal_mode", "DELETE")?;
        Ok(())
    }

    fn has_data(&self) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let n: i64 = conn.query_row(
            "SELECT (SELECT COUNT(*) FROM keyring) + (SELECT COUNT(*) FROM tenants)",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn insert_tenant(
        &self,
        t: &TenantRow,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        let (t, secret_digest) = (t.clone(), secret_digest.to_vec());
        self.writer.write(move |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM tenant_secrets WHERE digest = ?1)",
                [&secret_digest],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict("secret key already registered"));
            }
            insert_tenant_row(tx, &t, &secret_digest, now)?;
            Ok(())
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"),
                [id.as_str()],
                tenant_from_row,
            )
            .optional()?)
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare(&format!(
            "SELECT {TENANT_COLS} FROM tenants ORDER BY created_at, id"
        ))?;
        let rows = st
            .query_map([], tenant_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        now: Millis,
    ) -> Result<Option<TenantRow>, StoreError> {
        let (id, c) = (id.clone(), c.clone());
        self.writer.write(move |tx| {
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = ?1)",
            [id.as_str()],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        if let Some(name) = &c.name {
            tx.execute(
                "UPDATE tenants SET name = ?2 WHERE id = ?1",
                params![id.as_str(), name],
            )?;
        }
        if let Some(enabled) = c.enabled {
            tx.execute(
                "UPDATE tenants SET enabled = ?2 WHERE id = ?1",
                params![id.as_str(), enabled],
            )?;
        }
        if let Some(s) = &c.smtp {
            tx.execute(
                "UPDATE tenants SET smtp_host = ?2, smtp_port = ?3, smtp_username = ?4, smtp_password = ?5, \
                 smtp_from = ?6, smtp_tls = ?7, smtp_max_connections = ?8, smtp_version = smtp_version + 1 WHERE id = ?1",
                params![id.as_str(), s.host, s.port, s.username, s.password, s.from, s.tls, s.max_connections],
            )?;
        }
        if let Some(d) = c.delivery {
            tx.execute(
                "UPDATE tenants SET delivery = ?2 WHERE id = ?1",
                params![id.as_str(), d.as_str()],
            )?;
        }
        if let Some(p) = &c.policy {
            tx.execute(
                "UPDATE tenants SET code_length = ?2, ttl_seconds = ?3, max_attempts = ?4 WHERE id = ?1",
                params![id.as_str(), p.code_length, p.ttl_seconds, p.max_attempts],
            )?;
        }
        if let Some(l) = &c.default_locale {
            tx.execute(
                "UPDATE tenants SET default_locale = ?2 WHERE id = ?1",
                params![id.as_str(), l],
            )?;
        }
        tx.execute(
            "UPDATE tenants SET updated_at = ?2 WHERE id = ?1",
            params![id.as_str(), now],
        )?;
        let row = tx.query_row(
            &format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"),
            [id.as_str()],
            tenant_from_row,
        )?;
        Ok(Some(row))
        })
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer.write(move |conn| {
            Ok(conn.execute("DELETE FROM tenants WHERE id = ?1", [id.as_str()])? > 0)
        })
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TemplateRow>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(
            "SELECT locale, subject, text, html, updated_at FROM templates \
             WHERE tenant_id = ?1 ORDER BY locale",
        )?;
        let rows = st
            .query_map([id.as_str()], |r| {
                Ok(TemplateRow {
                    locale: r.get(0)?,
                    subject: r.get(1)?,
                    text: r.get(2)?,
                    html: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn put_template(&self, id: &TenantId, t: &TemplateRow) -> Result<bool, StoreError> {
        let (id, t) = (id.clone(), t.clone());
        self.writer.write(move |tx| {
            if tx.execute(
                "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = ?1",
                [id.as_str()],
            )? == 0
            {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO templates (tenant_id, locale, subject, text, html, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (tenant_id, locale) DO UPDATE SET subject = excluded.subject, \
                 text = excluded.text, html = excluded.html, updated_at = excluded.updated_at",
                params![
                    id.as_str(),
                    t.locale,
                    t.subject,
                    t.text,
                    t.html,
                    t.updated_at
                ],
            )?;
            Ok(true)
        })
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        let (id, locale) = (id.clone(), locale.to_string());
        self.writer.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM templates WHERE tenant_id = ?1 AND locale = ?2",
                params![id.as_str(), locale],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = ?1",
                    [id.as_str()],
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
        let conn = self.conn()?;
        let cols = TENANT_COLS
            .split(", ")
            .map(|c| format!("t.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {cols} FROM tenant_secrets s JOIN tenants t ON t.id = s.tenant_id \
                     WHERE s.digest = ?1 AND (s.expires_at IS NULL OR s.expires_at > ?2) AND t.enabled = 1"
                ),
                params![digest, now],
                tenant_from_row,
            )
            .optional()?)
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (id, new_digest) = (id.clone(), new_digest.to_vec());
        self.writer.write(move |tx| {
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = ?1)",
            [id.as_str()],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(false);
        }
        // Old secrets end at `old_until` (or keep an earlier end they already had).
        tx.execute(
            "UPDATE tenant_secrets SET expires_at = MIN(COALESCE(expires_at, ?2), ?2) WHERE tenant_id = ?1",
            params![id.as_str(), old_until],
        )?;
        tx.execute(
            "DELETE FROM tenant_secrets WHERE tenant_id = ?1 AND expires_at <= ?2",
            params![id.as_str(), now],
        )?;
        tx.execute(
            "INSERT INTO tenant_secrets (digest, tenant_id, created_at, expires_at) VALUES (?1, ?2, ?3, NULL)",
            params![new_digest, id.as_str(), now],
        )?;
        Ok(true)
        })
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
        let (tenant, key_digest, q) = (tenant.clone(), key_digest.to_vec(), *q);
        let max_failures: i64 = if q.max_failures == 0 {
            i64::MAX
        } else {
            q.max_failures.into()
        };
        // The attempt and the recipient's failure budget are taken together (one savepoint),
        // so neither can be overrun by concurrent guesses; a match or a release gives the
        // budget back.
        self.writer.write(move |tx| {
            let res = tx
                .query_row(
                    "UPDATE challenges SET attempts = attempts + 1 \
                     WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3 AND status = 'pending' \
                       AND attempts < max_attempts AND expires_at > ?4 AND code_length = ?7 \
                       AND NOT EXISTS (SELECT 1 FROM recipient_failures f WHERE f.tenant_id = challenges.tenant_id \
                           AND f.email_canonical = challenges.email_canonical AND f.failures >= ?5 AND f.window_start + ?6 > ?4) \
                     RETURNING code_hash, attempts, max_attempts, email, email_canonical, purpose, locale",
                    params![key_digest, tenant.as_str(), flavor.as_str(), now, max_failures, q.recipient_window_ms, code_len],
                    |r| {
                        Ok(Reservation {
                            code_hash: r.get(0)?,
                            attempts: r.get(1)?,
                            max_attempts: r.get(2)?,
                            email: r.get(3)?,
                            email_canonical: r.get(4)?,
                            purpose: r.get(5)?,
                            locale: r.get(6)?,
                        })
                    },
                )
                .optional()?;
            if let Some(r) = &res {
                if q.max_failures > 0 {
                    tx.execute(
                        "INSERT INTO recipient_failures (tenant_id, email_canonical, failures, window_start) VALUES (?1, ?2, 1, ?3) \
                         ON CONFLICT (tenant_id, email_canonical) DO UPDATE SET \
                           failures = CASE WHEN window_start + ?4 <= ?3 THEN 1 ELSE failures + 1 END, \
                           window_start = CASE WHEN window_start + ?4 <= ?3 THEN ?3 ELSE window_start END",
                        params![tenant.as_str(), r.email_canonical, now, q.recipient_window_ms],
                    )?;
                }
            }
            Ok(res)
        })
    }

    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
    ) -> Result<(), StoreError> {
        let (tenant, key_digest, recipient) =
            (tenant.clone(), key_digest.to_vec(), recipient.to_string());
        self.writer.write(move |tx| {
            tx.execute(
                "UPDATE challenges SET attempts = attempts - 1 WHERE key_digest = ?1 AND tenant_id = ?2 AND attempts > 0",
                params![key_digest, tenant.as_str()],
            )?;
            tx.execute(
                "UPDATE recipient_failures SET failures = failures - 1 WHERE tenant_id = ?1 AND email_canonical = ?2 AND failures > 0",
                params![tenant.as_str(), recipient],
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
        let (tenant, key_digest, event) = (tenant.clone(), key_digest.to_vec(), event.cloned());
        self.writer.write(move |conn| {
            let n = conn.execute(
                "UPDATE challenges SET status = 'verified', verified_at = ?3, ended_at = ?3 \
                 WHERE key_digest = ?1 AND tenant_id = ?2 AND status = 'pending' AND expires_at > ?3",
                params![key_digest, tenant.as_str(), now],
            )?;
            if let (1, Some(e)) = (n, &event) {
                integration::insert_event_in(conn, e)?;
            }
            Ok(n == 1)
        })
    }

    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<TenantId>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT c.tenant_id FROM challenges c JOIN tenants t ON t.id = c.tenant_id \
                 WHERE c.key_digest = ?1 AND c.flavor = ?2 AND t.enabled = 1",
                params![key_digest, flavor.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(TenantId::from_trusted))
    }

    fn challenge(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<ChallengeView>, StoreError> {
        let conn = self.conn()?;
        let v = conn
            .query_row(
                &format!("SELECT {VIEW_COLS} FROM challenges WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3"),
                params![key_digest, tenant.as_str(), flavor.as_str()],
                view_from_row,
            )
            .optional()?;
        finish_view(v)
    }

    fn cancel(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError> {
        let (tenant, key_digest) = (tenant.clone(), key_digest.to_vec());
        self.writer.write(move |tx| {
            let n = tx.execute(
                "UPDATE challenges SET status = 'cancelled', ended_at = ?4 WHERE key_digest = ?1 AND tenant_id = ?2 \
                 AND flavor = ?3 AND status = 'pending' AND expires_at > ?4 AND attempts < max_attempts",
                params![key_digest, tenant.as_str(), flavor.as_str(), now],
            )?;
            let v = tx
                .query_row(
                    &format!("SELECT {VIEW_COLS} FROM challenges WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3"),
                    params![key_digest, tenant.as_str(), flavor.as_str()],
                    view_from_row,
                )
                .optional()?;
            Ok(finish_view(v)?.map(|v| (n == 1, v)))
        })
    }

    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError> {
        self.writer.write(move |conn| {
            let n = conn.execute(
                "DELETE FROM challenges WHERE (ended_at IS NOT NULL AND ended_at < ?1) OR expires_at < ?1",
                [before],
            )?;
            conn.execute("DELETE FROM sends WHERE at < ?1", [sends_before])?;
            conn.execute(
                "DELETE FROM tenant_send_minutes WHERE minute < ?1",
                [sends_before.div_euclid(MINUTE_MS)],
            )?;
            conn.execute("DELETE FROM recipient_failures WHERE window_start < ?1", [sends_before])?;
            Ok(n)
        })
    }

    fn import(
        &self,
        tenants: &[(TenantRow, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut counts = ImportCounts::default();
        for (t, digest) in tenants {
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM tenant_secrets WHERE digest = ?1)",
                [digest],
                |r| r.get(0),
            )?;
            if taken {
                counts.tenants_present += 1;
                continue;
            }
            insert_tenant_row(&tx, t, digest, now)?;
            counts.tenants_added += 1;
        }
        for ic in codes {
            let c = &ic.code;
            let present: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM challenges WHERE key_digest = ?1)",
                [&c.key_digest],
                |r| r.get(0),
            )?;
            if present {
                counts.codes_present += 1;
                continue;
            }
            let owner: Option<String> = tx
                .query_row(
                    "SELECT tenant_id FROM tenant_secrets WHERE digest = ?1",
                    [&ic.owner_secret_digest],
                    |r| r.get(0),
                )
                .optional()?;
            let owner = owner.ok_or(StoreError::Corrupt("imported code has no owner".into()))?;
            tx.execute(
                "INSERT INTO challenges (key_digest, tenant_id, flavor, email, email_canonical, purpose, seq, code_hash, \
                 status, attempts, max_attempts, code_length, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
                   (SELECT COALESCE(MAX(seq), 0) + 1 FROM challenges WHERE tenant_id = ?2 AND email_canonical = ?5 AND purpose = ?6 AND flavor = ?3), \
                   ?7, 'pending', ?8, ?9, ?10, ?11, ?12)",
                params![
                    c.key_digest, owner, c.flavor.as_str(), c.email, c.email_canonical, c.purpose, c.code_hash,
                    ic.attempts, c.max_attempts, c.code_length, c.created_at, c.expires_at
                ],
            )?;
            counts.codes_added += 1;
        }
        tx.commit()?;
        Ok(counts)
    }

    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let events = events.to_vec();
        self.writer.write(move |tx| {
            // A tenant deleted meanwhile has no audit: skip its events.
            let mut st = tx.prepare_cached(
                "INSERT INTO audit (tenant_id, at, event, recipient, outcome, client_ip, request_id) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1)",
            )?;
            for e in &events {
                st.execute(params![e.tenant_id, e.at, e.event, e.recipient, e.outcome, e.client_ip, e.request_id])?;
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
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(
            "SELECT id, tenant_id, at, event, recipient, outcome, client_ip, request_id FROM audit \
             WHERE tenant_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = st
            .query_map(
                params![tenant.as_str(), before.unwrap_or(i64::MAX), limit],
                |r| {
                    Ok(AuditEvent {
                        id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        at: r.get(2)?,
                        event: r.get(3)?,
                        recipient: r.get(4)?,
                        outcome: r.get(5)?,
                        client_ip: r.get(6)?,
                        request_id: r.get(7)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn purge_audit(&self, before: Millis) -> Result<usize, StoreError> {
        self.writer
            .write(move |conn| Ok(conn.execute("DELETE FROM audit WHERE at < ?1", [before])?))
    }

    fn take_send(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        let (tenant, recipient, q) = (tenant.clone(), recipient.to_string(), *q);
        self.writer
            .write(move |tx| take_send_in(tx, &tenant, &recipient, &q, now))
    }

    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        let conn = self.conn()?;
        quota_check(&conn, tenant, recipient, q, now)
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
        let conn = self.conn()?;
        let row: Option<(i64, Millis)> = conn
            .query_row(
                "SELECT failures, window_start FROM recipient_failures WHERE tenant_id = ?1 AND email_canonical = ?2",
                params![tenant.as_str(), recipient],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(f, start)| q.failures_until(f, start, now)))
    }

    fn export_snapshot(&self) -> Result<copy::Snapshot, StoreError> {
        let mut conn = self.conn()?;
        // A deferred transaction: its first read fixes the snapshot every table is read in.
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        for t in copy::TABLES {
            out.push((t, export_table(&tx, t)?));
        }
        tx.commit()?;
        Ok(out)
    }

    fn import_snapshot(&self, s: &copy::Snapshot) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM keyring) OR EXISTS(SELECT 1 FROM tenants)",
            [],
            |r| r.get(0),
        )?;
        if held {
            return Err(StoreError::Conflict(
                "the target database already holds an installation",
            ));
        }
        for (t, rows) in s {
            let marks = (1..=t.columns.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut st = tx.prepare(&format!(
                "INSERT INTO {} ({}) VALUES ({marks})",
                t.name,
                t.column_list()
            ))?;
            for row in rows {
                st.execute(rusqlite::params_from_iter(row.iter().map(|v| match v {
                    copy::Value::Null => V::Null,
                    copy::Value::Int(i) => V::Integer(*i),
                    copy::Value::Bool(b) => V::Integer(i64::from(*b)),
                    copy::Value::Text(s) => V::Text(s.clone()),
                    copy::Value::Blob(b) => V::Blob(b.clone()),
                })))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn clear_failures(&self, tenant: &TenantId, recipient: &str) -> Result<(), StoreError> {
        let (tenant, recipient) = (tenant.clone(), recipient.to_string());
        self.writer.write(move |conn| {
            conn.execute(
                "DELETE FROM recipient_failures WHERE tenant_id = ?1 AND email_canonical = ?2",
                params![tenant.as_str(), recipient],
            )?;
            Ok(())
        })
    }
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
            .write(|c| Ok(c.query_row("SELECT 41 + 1", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 42);
    }
}
