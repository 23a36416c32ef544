//! PostgreSQL connections: the pool's manager, the per-connection statement cache every
//! query goes through, and how client errors are classed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row, Statement};
use r2d2::PooledConnection;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::storage::StoreError;

pub(super) type Conn = PooledConnection<Manager>;
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A pooled connection with the statements prepared on it: each SQL text is parsed and
/// planned once per connection, then bound and executed in one round trip.
pub(super) struct PgConn {
    pub(super) client: ::postgres::Client,
    pub(super) cache: HashMap<String, Statement>,
    /// [`LOSSES`] when this connection was made or last found alive.
    losses_seen: u64,
}

/// How many times a connection of this process was found lost (see [`Manager::is_valid`]).
static LOSSES: AtomicU64 = AtomicU64::new(0);

/// A connection was found lost: the pool's others are asked before they are used.
pub(super) fn note_lost() {
    LOSSES.fetch_add(1, Ordering::Relaxed);
}

impl PgConn {
    pub(super) fn db(&mut self) -> Db<'_, ::postgres::Client> {
        Db {
            c: &mut self.client,
            cache: &mut self.cache,
        }
    }
}

pub(super) struct Manager(pub(super) PostgresConnectionManager<MakeRustlsConnect>);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = PoolError;

    fn connect(&self) -> Result<PgConn, PoolError> {
        let losses_seen = LOSSES.load(Ordering::Relaxed);
        Ok(PgConn {
            client: self.0.connect().map_err(PoolError::Connect)?,
            cache: HashMap::new(),
            losses_seen,
        })
    }

    /// Checked at each checkout: after a connection of this process was lost (a network
    /// break or a database restart ends them all at once, and the synchronous client finds
    /// out only by using one), each pooled connection is asked once with an empty query
    /// before it is handed out, so a dead one is replaced rather than given to a request
    /// that would answer 503 for it — or, when that request's earlier transaction had
    /// committed, half done. Otherwise nothing is sent.
    fn is_valid(&self, conn: &mut PgConn) -> Result<(), PoolError> {
        let lost = LOSSES.load(Ordering::Relaxed);
        if conn.losses_seen != lost {
            conn.client
                .batch_execute("")
                .map_err(PoolError::FoundClosed)?;
            conn.losses_seen = lost;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// Why the pool has no connection to give: one could not be made, or a pooled one was found
/// closed at checkout (after a network break or a database restart; it is replaced and no
/// request sees it).
#[derive(Debug, thiserror::Error)]
pub(super) enum PoolError {
    #[error("a database connection could not be made: {}", crate::storage::error::pg_text(.0))]
    Connect(::postgres::Error),
    #[error("a pooled database connection was found closed: {}", crate::storage::error::pg_text(.0))]
    FoundClosed(::postgres::Error),
}

/// What the pool says of it: a connection found closed is a warning (once per connection);
/// one that cannot be made an error (requests wait for one, then answer 503).
#[derive(Debug)]
pub(super) struct PoolLog;

impl r2d2::HandleError<PoolError> for PoolLog {
    fn handle_error(&self, e: PoolError) {
        use crate::storage::error::pg_text;
        match e {
            PoolError::FoundClosed(e) => tracing::warn!(
                error = %pg_text(&e),
                "a pooled database connection was found closed; it is replaced"
            ),
            PoolError::Connect(e) => {
                tracing::error!(error = %pg_text(&e), "a database connection could not be made")
            }
        }
    }
}

/// Statements run on a client or a transaction through the connection's statement cache.
pub(super) struct Db<'a, C: GenericClient> {
    pub(super) c: &'a mut C,
    pub(super) cache: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, ::postgres::Error> {
        if let Some(st) = self.cache.get(sql) {
            return Ok(st.clone());
        }
        let st = self.c.prepare(sql)?;
        self.cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Run `sql` through the cache; a statement that fails (one the server no longer knows,
    /// or whose plan a migration changed) is prepared again next time.
    fn run<T>(
        &mut self,
        sql: &str,
        f: impl FnOnce(&mut C, &Statement) -> Result<T, ::postgres::Error>,
    ) -> Result<T, ::postgres::Error> {
        let st = self.statement(sql)?;
        let r = f(self.c, &st);
        if r.is_err() {
            self.cache.remove(sql);
        }
        r
    }

    pub(super) fn execute(&mut self, sql: &str, p: Params<'_>) -> Result<u64, ::postgres::Error> {
        self.run(sql, |c, st| c.execute(st, p))
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Vec<Row>, ::postgres::Error> {
        self.run(sql, |c, st| c.query(st, p))
    }

    pub(super) fn query_one(&mut self, sql: &str, p: Params<'_>) -> Result<Row, ::postgres::Error> {
        self.run(sql, |c, st| c.query_one(st, p))
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Option<Row>, ::postgres::Error> {
        self.run(sql, |c, st| c.query_opt(st, p))
    }
}

impl<C: GenericClient> Db<'_, C> {
    /// At most one row, read by a mapper of the store's own (see `cells`).
    pub(super) fn row_opt<T>(
        &mut self,
        sql: &str,
        p: Params<'_>,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.query_opt(sql, p)?.as_ref().map(f).transpose()
    }

    /// Every row, each read by a mapper of the store's own.
    pub(super) fn rows<T>(
        &mut self,
        sql: &str,
        p: Params<'_>,
        f: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, p)?.iter().map(f).collect()
    }
}

pub(super) type Tx<'a, 'b> = Db<'a, ::postgres::Transaction<'b>>;

/// Whether `e` is the server ending the session (a FATAL error: a restart, an
/// administrator's `pg_terminate_backend`, `idle_session_timeout`): the connection is gone,
/// and the statement it answered did not run.
fn ended_by_server(e: &::postgres::Error) -> bool {
    use ::postgres::error::Severity;
    e.as_db_error().is_some_and(|db| {
        matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        )
    })
}

/// Whether `e` is the connection's end (closed, reset, timed out, ended by the server), not
/// the server's answer.
pub(super) fn broke(e: &::postgres::Error) -> bool {
    if e.as_db_error().is_some() {
        return ended_by_server(e);
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    e.is_closed() || io || e.to_string().contains("timed out")
}

/// Whether `e` says the connection was closed, reset or ended by the server (not that it
/// timed out: a database that hangs is not asked again on another connection).
pub(super) fn closed(e: &::postgres::Error) -> bool {
    if e.as_db_error().is_some() {
        return ended_by_server(e);
    }
    if e.to_string().contains("timed out") {
        return false;
    }
    let io = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() != std::io::ErrorKind::TimedOut);
    e.is_closed() || io
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if code == "23505" {
                return StoreError::Conflict("already exists");
            }
            if code == "53100" {
                crate::storage::error::note_disk_full();
            }
            if ended_by_server(&e) {
                note_lost();
            }
            // Connection, resources, operator intervention, serialization and deadlock,
            // lock timeout, read-only: the database cannot take this now; try again later.
            if code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code.starts_with("58")
                || matches!(code, "40001" | "40P01" | "55P03" | "25006")
            {
                return StoreError::Unavailable(crate::storage::error::pg_text(&e));
            }
            return StoreError::Postgres(e);
        }
        if broke(&e) {
            note_lost();
            return StoreError::Unavailable(crate::storage::error::pg_text(&e));
        }
        StoreError::Postgres(e)
    }
}
