//! The storage error, classed so callers can answer it right (unavailable → 503, conflict,
//! corrupt, or a driver error kept whole). SQLite's codes are classed here; PostgreSQL's in
//! `postgres/conn.rs`.

/// A storage failure, classed so callers can answer it right: `Unavailable` (locked past
/// the busy timeout, disk full, I/O error, no connection, the writer busy or stopped) is a
/// 503 with Retry-After; the others are bugs or damage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// Shown with PostgreSQL's own message and SQLSTATE (the client's `Display` of a server
    /// error is `db error` alone). Not a `source`: the client's own chain would add the
    /// server's `DETAIL`, which may quote stored values, to the logged text.
    #[error("PostgreSQL: {}", pg_text(.0))]
    Postgres(::postgres::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("migration: {0}")]
    Migration(String),
    /// The database is not an installation this binary may use as it is: no otpmint schema
    /// or keyring in it, or a schema older than this binary's (the CLI's commands, API.md
    /// §18.8); `serve` makes or migrates it.
    #[error("{0}")]
    NotInstalled(String),
    /// The database holds a schema a newer otpmint made: nothing of this binary may use it
    /// (`serve` and `migrate` refuse it too).
    #[error("{0}")]
    Newer(String),
    /// The database may be read but not written by this process (refused at open).
    #[error("{0}")]
    ReadOnly(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    Commit(String),
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Unavailable(format!("no database connection: {e}"))
    }
}

/// When a write of this process last failed for want of disk space, or for the disk itself
/// (an I/O error, a file system turned read-only under the server: ext4's
/// `errors=remount-ro`) — ms on a monotonic clock from the process's first use of it, plus
/// one; 0: never. The readiness probe writes nothing that takes space, so it cannot see
/// such a disk itself: it asks this (API.md §6.24, not ready until writes succeed again).
static DISK_FULL_AT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn monotonic_ms() -> i64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(std::time::Instant::now);
    i64::try_from(base.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// How many writes met a full disk, ever (tests read it: the time above is cleared by any
/// store's commit, and tests run stores side by side).
#[cfg(test)]
static DISK_FULL_NOTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
pub(crate) fn disk_full_notes() -> u64 {
    DISK_FULL_NOTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A write met a full disk (SQLite's `SQLITE_FULL`, PostgreSQL's `53100`), or a failing or
/// read-only one (SQLite's `SQLITE_IOERR`, `SQLITE_READONLY`).
pub(crate) fn note_disk_full() {
    #[cfg(test)]
    DISK_FULL_NOTES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    DISK_FULL_AT.store(monotonic_ms() + 1, std::sync::atomic::Ordering::Relaxed);
}

/// A write that took space committed (SQLite's writer: a batch that changed rows): a full
/// disk met before it is over.
pub(crate) fn note_write_took_space() {
    if DISK_FULL_AT.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        DISK_FULL_AT.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether a write of this process met a full disk within the last `within_ms`, and no
/// write that took space (where that is known: SQLite) committed since.
pub fn disk_full_lately(within_ms: i64) -> bool {
    let at = DISK_FULL_AT.load(std::sync::atomic::Ordering::Relaxed);
    at > 0 && monotonic_ms() + 1 - at < within_ms
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            // The disk is full, or fails, or was turned read-only under the server (a file
            // read-only from the start is refused at open): until a write takes again, the
            // readiness probe writes for real.
            if matches!(f.code, C::DiskFull | C::SystemIoFailure | C::ReadOnly) {
                note_disk_full();
            }
            // A row whose key is taken already: a conflict, as PostgreSQL's 23505 is.
            if matches!(
                f.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            ) {
                // The constraint's words (table and column, no values) for whoever
                // investigates a conflict that should not have happened.
                tracing::debug!(error = %e, "SQLite: a key taken already");
                return StoreError::Conflict("already exists");
            }
            if matches!(
                f.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::DiskFull
                    | C::SystemIoFailure
                    | C::CannotOpen
                    | C::ReadOnly
                    | C::OutOfMemory
            ) {
                return StoreError::Unavailable(e.to_string());
            }
        }
        // A stored value that is not one its type allows: damage, like PostgreSQL's `Corrupt`.
        if matches!(
            e,
            rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..)
        ) {
            return StoreError::Corrupt(e.to_string());
        }
        StoreError::Sqlite(e)
    }
}

/// A PostgreSQL client error in a line: the server's message and SQLSTATE for an error the
/// server sent (`database "x" does not exist (3D000)`), else the client's own text and its
/// cause (`error connecting to server: Connection refused (os error 111)`).
pub(crate) fn pg_text(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let text = e.to_string();
    match std::error::Error::source(e) {
        Some(cause) if !text.contains(&cause.to_string()) => format!("{text}: {cause}"),
        _ => text,
    }
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Why an installation without a keyring is refused (the CLI's commands, API.md §18.8).
pub(crate) const NO_KEYRING: &str =
    "it holds no keyring: start the server once, or run `otpmint migrate`, to make one";

/// What a database held before anything wrote to it: its newest applied migration (`None`:
/// no otpmint schema) and whether it holds a keyring.
pub(crate) struct Found {
    pub(crate) applied: Option<i64>,
    pub(crate) keyring: bool,
}

impl Found {
    /// Refuse unless it is an installation this binary, whose migrations `ours` holds, may use
    /// without migrating it: the same schema, neither older (its server has not migrated it
    /// yet) nor newer (a newer otpmint made it; `serve` and `migrate` refuse it too), and a
    /// keyring (the CLI's commands, API.md §18.8).
    pub(crate) fn refuse_unless_current(&self, ours: &refinery::Runner) -> Result<(), StoreError> {
        let known = newest(ours);
        match self.applied {
            None => Err(StoreError::NotInstalled(
                "it holds no otpmint installation: start the server once, or run `otpmint migrate`, to make one"
                    .into(),
            )),
            Some(v) if v < known => Err(StoreError::NotInstalled(format!(
                "its schema (migration {v}) is older than this otpmint's (migration {known}): restart the server (it migrates at start), or stop it and run `otpmint migrate`"
            ))),
            Some(v) if v > known => Err(newer(v, known)),
            Some(_) if !self.keyring => Err(StoreError::NotInstalled(NO_KEYRING.into())),
            Some(_) => Ok(()),
        }
    }

    /// Refuse unless it holds an installation this binary may migrate (and copy from, as
    /// `migrate-store`'s source; or read as it stands, as `config check` reads the keyring of
    /// a schema `serve` would migrate): checked before anything writes to it, so that a
    /// mistyped `--from` is named, not given otpmint's schema.
    pub(crate) fn refuse_unless_source(&self, ours: &refinery::Runner) -> Result<(), StoreError> {
        let known = newest(ours);
        match self.applied {
            Some(v) if v > known => Err(newer(v, known)),
            Some(_) if self.keyring => Ok(()),
            _ => Err(StoreError::NotInstalled(
                "it holds no otpmint installation (no keyring): nothing to copy".into(),
            )),
        }
    }
}

fn newest(ours: &refinery::Runner) -> i64 {
    ours.get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

fn newer(v: i64, known: i64) -> StoreError {
    StoreError::Newer(format!(
        "its schema (migration {v}) is newer than this otpmint's (migration {known}): use the otpmint that made it"
    ))
}
