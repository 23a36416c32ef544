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
    /// PostgreSQL's own message is in the error under it (`source`): `db error` alone here.
    #[error("database: {0}")]
    Postgres(#[source] ::postgres::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("migration: {0}")]
    Migration(String),
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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
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

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
