//! SQLite store: r2d2 + rusqlite, WAL, synchronous=FULL, busy timeout, refinery migrations,
//! and one group-commit writer thread for the writes of a running server.

mod codes;
mod disk;
mod integration;
mod outbox;
mod records;
mod writer;

use crate::storage::engine::{Dialect, Each};
use crate::storage::sql;
use writer::Writer;

use std::path::Path;
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{OptionalExtension, Row};

use super::*;

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

    /// At most one row, read by a mapper of the store's own (see `cells`).
    fn row_opt<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.query_row_cached(sql, params, |r| Ok(f(r)))
            .optional()?
            .transpose()
    }

    /// Every row, each read by a mapper of the store's own.
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError>;
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
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut st = self.prepare_cached(sql)?;
        let mut rows = st.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(r)?);
        }
        Ok(out)
    }
}

pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    writer: Writer,
    /// The database file's directory, where its `-wal` and `-shm` files are too: the disk
    /// readiness looks at.
    dir: std::path::PathBuf,
}

/// Every connection's settings. `temp_store = MEMORY`: the journal of a savepoint (every write
/// in a group commit has one) stays in memory; with the default it spills to a temporary file
/// after 64 KiB, and each page it keeps then costs a `pwrite` — about 4 % of the server's CPU
/// under load (docs/benchmarks.md, "Provider events beside mints"), and copies of pages on disk.
/// `secure_delete = ON`: a deleted row's bytes are zeroed, on the page that held it and on a
/// page it frees (`FAST` leaves freed pages as they were: a purge frees whole pages), so a
/// purged code's address and hash, or a deleted tenant's rows, are not left readable in the
/// file (found by the privacy audit: purged rows read back with `strings`, and carried into
/// every backup).
pub(super) const PRAGMAS: &str = "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
     PRAGMA temp_store = MEMORY; PRAGMA secure_delete = ON;";

impl SqliteStore {
    /// Open (creating the file and its directory) and migrate.
    pub fn open(path: &Path, pool_size: u32) -> Result<SqliteStore, StoreError> {
        Self::open_as(path, pool_size, true)
    }

    /// Open a database as its server left it: nothing is created or migrated, and one that
    /// holds no otpmint schema or keyring, or an older or newer schema, is refused (the CLI's
    /// commands, API.md §18.8).
    pub fn open_existing(path: &Path, pool_size: u32) -> Result<SqliteStore, StoreError> {
        Self::found(path)?.refuse_unless_current(&embedded::migrations::runner())?;
        Self::open_as(path, pool_size, false)
    }

    /// Open an installation to copy from (`migrate-store`): migrated to this version's
    /// schema, unless it holds none — then refused with nothing written to it.
    pub fn open_source(path: &Path, pool_size: u32) -> Result<SqliteStore, StoreError> {
        Self::found(path)?.refuse_unless_source(&embedded::migrations::runner())?;
        Self::open_as(path, pool_size, true)
    }

    /// Open an installation as it stands, its schema older than this binary's included, to
    /// read its keyring (`config check`): nothing is migrated; one that holds no installation,
    /// or a newer schema, is refused.
    pub fn open_as_found(path: &Path, pool_size: u32) -> Result<SqliteStore, StoreError> {
        Self::found(path)?.refuse_unless_source(&embedded::migrations::runner())?;
        Self::open_as(path, pool_size, false)
    }

    /// What the file holds, read before anything opens it to write.
    fn found(path: &Path) -> Result<super::error::Found, StoreError> {
        use rusqlite::OpenFlags;
        refuse_unwritable(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // With no `-wal` (or `-journal`) beside it no connection is open and the whole
        // database is in the file: read it as immutable. A read-only connection to a WAL
        // database makes `-wal` and `-shm` files, and leaves them behind when the file turns
        // out damaged.
        let c = match unused_file_uri(path) {
            Some(uri) => {
                rusqlite::Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
            }
            None => rusqlite::Connection::open_with_flags(path, flags)?,
        };
        c.busy_timeout(Duration::from_secs(5))?;
        let has_schema: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history')",
            [],
            |r| r.get(0),
        )?;
        let applied = if has_schema {
            c.query_row(
                "SELECT MAX(version) FROM refinery_schema_history",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?
        } else {
            None
        };
        // Another program's database with a table of refinery's name has no keyring either.
        let keyring = match c.query_row("SELECT EXISTS (SELECT 1 FROM keyring)", [], |r| {
            r.get::<_, bool>(0)
        }) {
            Ok(held) => held,
            Err(e) if e.to_string().contains("no such table") => false,
            Err(e) => return Err(e.into()),
        };
        Ok(super::error::Found { applied, keyring })
    }

    fn open_as(path: &Path, pool_size: u32, migrate: bool) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Migration(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        // An empty file is an empty database to SQLite: a restore that copied nothing would
        // start a new installation without a word.
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            tracing::warn!(path = %path.display(), "the database file is empty: a new installation starts in it (if a restore was meant, stop the server and copy the backup again)");
        }
        // Private from the first byte: SQLite gives its -wal and -shm files the database
        // file's mode (API.md §6.26).
        create_private(path)?;
        refuse_unwritable(path)?;
        warn_if_shared(path);
        // WAL is a property of the file: switch once, before the pool opens its connections
        // (concurrent switches fail with "database is locked").
        {
            let c = rusqlite::Connection::open(path)?;
            if c.is_readonly(rusqlite::MAIN_DB)? {
                return Err(read_only(path));
            }
            c.busy_timeout(Duration::from_secs(5))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.execute_batch(PRAGMAS)
        });
        let pool = Pool::builder()
            .max_size(pool_size)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let writer = Writer::start(path)?;
        // Where the file really is (a link's target: SQLite puts `-wal` beside it).
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = match real.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let store = SqliteStore { pool, writer, dir };
        if migrate {
            store.migrate()?;
        }
        Ok(store)
    }

    pub fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.pooled()?;
        // All in one transaction with their records: refinery otherwise commits a migration
        // and its record apart, and a stop between the two would leave a schema that the
        // next start fails to migrate again.
        let report = embedded::migrations::runner()
            .set_grouped(true)
            .run(&mut *conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(super::said_migrated(&report))
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

impl Store for SqliteStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.query_row_cached("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn write_probe(&self) -> Result<(), StoreError> {
        self.writer.write(|_| Ok(()))
    }

    fn at_stop(&self) -> Result<(), StoreError> {
        // Every page into the file and the WAL cut to nothing (found by the re-audit: a
        // stopped server's -wal still held page images of purged rows).
        let busy: i64 = self
            .pooled()?
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Unavailable(
                "a reader kept the WAL from being emptied".into(),
            ));
        }
        Ok(())
    }

    fn disk_free(&self) -> Option<u64> {
        disk::free_bytes(&self.dir)
    }

    fn disk_read_only(&self) -> bool {
        disk::read_only(&self.dir)
    }

    fn wrote_within(&self, within: Duration) -> bool {
        self.writer.took_within(within)
    }

    fn space_probe(&self) -> Result<(), StoreError> {
        // A row changed and changed back in one transaction: its page is written to the WAL
        // at the commit, and the writer sees changes (so a commit clears the full disk noted
        // before, `note_write_took_space`). Not a row written as it is: SQLite leaves a page
        // alone when an update gives a row the bytes it has (found by the filesystem audit:
        // that probe wrote nothing, and a disk refusing every write answered ready).
        self.writer.write(|c| {
            for step in ["+ 1", "- 1"] {
                c.execute(
                    &format!(
                        "UPDATE keyring SET created_at = created_at {step} WHERE rowid = (SELECT MIN(rowid) FROM keyring)"
                    ),
                    [],
                )?;
            }
            Ok(())
        })
    }

    fn submit(&self, call: Box<dyn WriteCall>) -> Result<(), Box<dyn WriteCall>> {
        self.writer.submit(call);
        Ok(())
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

/// SQLite opens a file it may read but not write read-only, without a word (or, in WAL
/// mode, fails with "unable to open database file"): such a file, or such a `-wal` or
/// `-shm` beside it, is refused, naming it — or the server would start, answer ready, and
/// refuse every write (a backup copied into place by another user, say). A file not there
/// yet is no refusal. Asked with `faccessat`, never by opening the file: closing a
/// descriptor of a database file drops every POSIX lock this process's SQLite holds on it
/// (another store of the process may have it open), and the file can be damaged.
fn refuse_unwritable(path: &Path) -> Result<(), StoreError> {
    // Where the file really is: SQLite puts `-wal` and `-shm` beside a link's target.
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let path = real.as_path();
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    for file in [path.to_path_buf(), side("-wal"), side("-shm")] {
        if !may_write(&file) {
            return Err(read_only(&file));
        }
    }
    // SQLite makes the `-wal` and `-shm` files beside the database when they are not there:
    // a directory that takes no new file is named, not the database ("attempt to write a
    // readonly database", said of a file that may be written).
    if !side("-wal").exists() || !side("-shm").exists() {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !may_write(dir) {
            return Err(StoreError::ReadOnly(format!(
                "{} cannot be written by this process (its owner or mode, or a read-only file system): otpmint creates the database's -wal and -shm files in it",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `file:…?immutable=1` for the database at `path` when no `-wal` or `-journal` file stands
/// beside it (none of its connections is open, nothing is left to recover), else `None`.
#[cfg(unix)]
fn unused_file_uri(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    // Where the file really is: SQLite puts `-wal` beside a link's target.
    let real = std::fs::canonicalize(path).ok()?;
    // A `-journal` beside it is a rollback journal a crash may have left hot: SQLite must
    // see it (a restored copy need not be in WAL mode yet).
    for side in ["-wal", "-journal"] {
        let mut file = real.as_os_str().to_owned();
        file.push(side);
        if Path::new(&file).exists() {
            return None;
        }
    }
    let mut uri = String::from("file:");
    for &b in real.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    Some(uri)
}

#[cfg(not(unix))]
fn unused_file_uri(_: &Path) -> Option<String> {
    None
}

/// False when this process may not write `file` (its effective ids, the file's mode, a
/// read-only file system); true otherwise, also when it does not exist.
#[cfg(target_os = "linux")]
fn may_write(file: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(file.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: `c` is a NUL-terminated path the call only reads; no descriptor is opened.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    let refused = |e: std::io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS));
    r == 0 || !refused(std::io::Error::last_os_error())
}

#[cfg(not(target_os = "linux"))]
fn may_write(_: &Path) -> bool {
    true
}

/// A database file others may read or write (its mode changed after otpmint made it 0600)
/// is said at start: SQLite gives its `-wal` and `-shm` files — codes' rows and recipients'
/// addresses among them — the same mode (API.md §6.26). Not changed here: the mode may be
/// meant (a backup user's group).
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:04o}"), "the database file may be read by users other than its owner, and its -wal and -shm files get the same mode: `chmod 600` it unless that is meant");
            }
        }
    }
}

fn read_only(path: &Path) -> StoreError {
    StoreError::ReadOnly(format!(
        "{} cannot be written by this process (its owner or mode, or a read-only file system): otpmint must write to it, and create files beside it",
        path.display()
    ))
}

/// Create `path` with mode 0600 if it does not exist yet.
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
    match create_new_private(path) {
        Err(StoreError::Conflict(_)) => Ok(()),
        made => made,
    }
}

/// Make `path` as a new file only its owner may read; anything already there — a link
/// included, even one that points nowhere (`O_CREAT | O_EXCL` does not follow it) — is a
/// `Conflict`.
pub(crate) fn create_new_private(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(StoreError::Conflict("the file already exists"))
        }
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl rusqlite::ToSql for sql::Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            sql::Arg::Text(v) => v.to_sql(),
            sql::Arg::Int(v) => v.to_sql(),
            sql::Arg::Int32(v) => v.to_sql(),
            sql::Arg::Bool(v) => v.to_sql(),
            sql::Arg::Blob(v) => v.to_sql(),
        }
    }
}

#[cfg(test)]
mod records_tests;
#[cfg(test)]
mod tests;

impl crate::storage::engine::Engine for SqliteStore {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn each_text(&self, text: &str, args: &[sql::Arg], f: Each<'_>) -> Result<(), StoreError> {
        let conn = self.conn()?;
        each_row(&conn, text, args, f)
    }

    fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn crate::storage::engine::Exec) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write(move |conn| f(&mut Statements(conn)))
    }

    fn exec_one(&self, q: sql::Shared, args: &[sql::Arg]) -> Result<u64, StoreError> {
        let args = args.to_vec();
        self.writer.write(move |conn| {
            Ok(conn.execute_cached(q.sqlite, rusqlite::params_from_iter(&args))? as u64)
        })
    }

    fn exclusive<T>(
        &self,
        f: impl FnOnce(&mut dyn crate::storage::engine::Exec) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pooled()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&mut Statements(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn crate::storage::engine::Exec) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn()?;
        f(&mut Statements(&conn))
    }
}

/// A connection (a write's, inside its savepoint, or a read's), as the written-once
/// aggregates run their statements on it.
struct Statements<'a>(&'a rusqlite::Connection);

impl crate::storage::engine::Exec for Statements<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec_text(&mut self, text: &str, args: &[sql::Arg]) -> Result<u64, StoreError> {
        let n = self
            .0
            .execute_cached(text, rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn each_text(&mut self, text: &str, args: &[sql::Arg], f: Each<'_>) -> Result<(), StoreError> {
        each_row(self.0, text, args, f)
    }

    fn serialize(&mut self, _keys: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Every row `text` reads on `conn`, each given to `f`.
fn each_row(
    conn: &rusqlite::Connection,
    text: &str,
    args: &[sql::Arg],
    f: Each<'_>,
) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(text)?;
    let mut rows = st.query(rusqlite::params_from_iter(args))?;
    while let Some(r) = rows.next()? {
        f(r)?;
    }
    Ok(())
}
