//! PostgreSQL store: the synchronous `postgres` client behind `r2d2` (the calls already run
//! on the blocking pool), TLS per `sslmode` with rustls, refinery migrations under an
//! advisory lock. Every invariant that the SQLite store gets from its single writer is
//! enforced here by the database, so any number of instances can share it (API.md §7.2):
//! conditional updates and row locks for attempts, transaction-scoped advisory locks for
//! the quotas, the failure budget and a group's sequence numbers, unique indexes and
//! `ON CONFLICT` for secrets and keys, `FOR UPDATE SKIP LOCKED` for outbox work.

/// The database's clock in Unix milliseconds: leases are measured on it, so instances whose
/// clocks differ agree on when one ends (API.md §11.6).
macro_rules! db_now {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

mod codes;
mod commit;
mod conn;
mod integration;
mod migrations;
mod outbox;
mod records;
mod start;
mod tls;

pub use tls::check_url;

use crate::storage::engine::{Dialect, Each};
use crate::storage::sql;
use std::time::Duration;

use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

use super::{copy, QuotaRefusal, Store, StoreError};
use conn::{Conn, Db, Manager, PgConn, Tx};

/// Session advisory lock held while migrating, so instances starting together take turns.
const MIGRATION_LOCK: i64 = 0x6f74_706d_696e_7401;
use crate::storage::keyring::KEYRING_LOCK;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub pool_size: u32,
    /// Extra CA certificates (PEM) trusted for `sslmode=verify-full`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Connect and pool-wait timeout.
    pub timeout: Duration,
    /// How long opening waits for a server that is not up yet (`database.start_wait_seconds`;
    /// zero: one try, its failure at once).
    pub start_wait: Duration,
}

/// What opening a database may do to it.
#[derive(Clone, Copy)]
enum Opening {
    /// Migrate it (making the schema when there is none).
    Make,
    /// Use it as its servers left it, or refuse.
    Existing,
    /// Migrate it only when it holds an installation, else refuse.
    Source,
    /// Read it as it stands (an older schema too), or refuse.
    AsFound,
}

pub struct PgStore {
    /// Always `Some` until drop (see `Drop`).
    pool: Option<Pool<Manager>>,
    /// Opens a connection of its own, outside the pool, to ask after a commit whose answer
    /// was lost (the pool's idle connections may have broken with it).
    asker: Manager,
    /// `database.timeout_seconds`: how long such a commit is asked after.
    timeout: Duration,
}

impl PgStore {
    /// Connect (pool), migrate under an advisory lock. Runs its blocking work on a thread
    /// of its own, so it may be called from async code.
    pub fn open(opts: &PgOptions) -> Result<PgStore, StoreError> {
        Self::open_as(opts, Opening::Make)
    }

    /// Connect to a database as its servers left it: nothing is migrated, and one that holds
    /// no otpmint schema or keyring, or an older or newer schema, is refused (the CLI's
    /// commands, API.md §18.8).
    pub fn open_existing(opts: &PgOptions) -> Result<PgStore, StoreError> {
        Self::open_as(opts, Opening::Existing)
    }

    /// Connect to an installation as it stands, its schema older than this binary's
    /// included, to read its keyring (`config check`): nothing is migrated; one that holds no
    /// installation, or a newer schema, is refused.
    pub fn open_as_found(opts: &PgOptions) -> Result<PgStore, StoreError> {
        Self::open_as(opts, Opening::AsFound)
    }

    /// Connect to an installation to copy from (`migrate-store`): migrated to this version's
    /// schema, unless it holds none — then refused with nothing written to it.
    pub fn open_source(opts: &PgOptions) -> Result<PgStore, StoreError> {
        Self::open_as(opts, Opening::Source)
    }

    fn open_as(opts: &PgOptions, opening: Opening) -> Result<PgStore, StoreError> {
        let opts = opts.clone();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<PgStore, StoreError> {
                let (config, tls) = tls::client_config(&opts)?;
                start::wait_until_up(&config, &tls, opts.timeout, opts.start_wait)?;
                let asker = Manager(PostgresConnectionManager::new(config.clone(), tls.clone()));
                let manager = Manager(PostgresConnectionManager::new(config, tls));
                let pool = Pool::builder()
                    .max_size(opts.pool_size)
                    .min_idle(Some(1))
                    .connection_timeout(opts.timeout)
                    // A round trip only after a connection was lost (`Manager::is_valid`).
                    .test_on_check_out(true)
                    .error_handler(Box::new(conn::PoolLog))
                    .build(manager)?;
                let store = PgStore {
                    pool: Some(pool),
                    asker,
                    timeout: opts.timeout,
                };
                let ours = migrations::runner();
                match opening {
                    Opening::Make => drop(store.migrate()?),
                    Opening::Existing => store.found()?.refuse_unless_current(&ours)?,
                    Opening::AsFound => store.found()?.refuse_unless_source(&ours)?,
                    Opening::Source => {
                        store.found()?.refuse_unless_source(&ours)?;
                        store.migrate()?;
                    }
                }
                Ok(store)
            })
            .join()
            .unwrap_or_else(|_| Err(StoreError::Migration("database setup panicked".into())))
        })
    }

    pub fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut conn.client;
        // Migrations may wait for another instance's and may take long on a big database:
        // no statement or lock timeout for them (reset when they are done).
        conn.batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let report = migrations::run(conn);
        let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        let reset = conn.batch_execute("RESET statement_timeout; RESET lock_timeout");
        let report = report?;
        unlocked?;
        reset?;
        Ok(super::said_migrated(&report))
    }

    /// What the database holds, read before anything writes to it.
    fn found(&self) -> Result<super::error::Found, StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut conn.client;
        let schema: bool = conn
            .query_one(
                "SELECT to_regclass('otpmint_schema_history') IS NOT NULL",
                &[],
            )?
            .get(0);
        let applied: Option<i64> = if schema {
            conn.query_one(
                "SELECT MAX(version)::BIGINT FROM otpmint_schema_history",
                &[],
            )?
            .get(0)
        } else {
            None
        };
        let keyring: bool = conn
            .query_one("SELECT to_regclass('keyring') IS NOT NULL", &[])?
            .get(0)
            && conn
                .query_one("SELECT EXISTS (SELECT 1 FROM keyring)", &[])?
                .get(0);
        Ok(super::error::Found { applied, keyring })
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
        let (out, lost) = self.begun(|mut tx, cache| {
            let out = f(&mut Db { c: &mut tx, cache })?;
            let lost = self.commit(tx, cache)?;
            Ok((out, lost))
        })?;
        self.settled(lost)?;
        Ok(out)
    }

    /// As `tx`, but a refusal rolls back whatever the transaction did so far.
    fn tx_unless_refused<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<Result<T, QuotaRefusal>, StoreError>,
    ) -> Result<Result<T, QuotaRefusal>, StoreError> {
        let (out, lost) = self.begun(|mut tx, cache| {
            let out = f(&mut Db { c: &mut tx, cache })?;
            let lost = match out {
                Ok(_) => self.commit(tx, cache)?,
                Err(_) => None,
            };
            Ok((out, lost))
        })?;
        self.settled(lost)?;
        Ok(out)
    }

    /// `run` given a transaction begun on a pooled connection. A connection that broke
    /// while it waited in the pool (a network break or a database restart ends them all at
    /// once, and the pool finds out only by using them) fails its BEGIN before anything of
    /// the transaction was sent: it is discarded and the next one taken, so a request whose
    /// earlier transaction committed is not answered 503 half done for want of a live
    /// connection for its next.
    fn begun<R>(
        &self,
        run: impl FnOnce(
            ::postgres::Transaction<'_>,
            &mut std::collections::HashMap<String, ::postgres::Statement>,
        ) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tries = self.pool.as_ref().map_or(1, |p| p.max_size() + 1);
        let mut tried = 1;
        let mut conn = self.conn()?;
        loop {
            let PgConn { client, cache, .. } = &mut *conn;
            match client.transaction() {
                Ok(tx) => return run(tx, cache),
                Err(e) if conn::closed(&e) && tried < tries => {
                    conn::note_lost();
                    tried += 1;
                }
                Err(e) => return Err(e.into()),
            }
            // Given back (and discarded as broken) before the next is taken: with a small
            // pool, holding it would wait out the pool's timeout for a connection.
            drop(conn);
            conn = self.conn()?;
        }
    }
}

impl Store for PgStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.client.simple_query("SELECT 1")?;
        Ok(())
    }

    /// Whether writes would succeed now, consuming no transaction id and no sequence value
    /// (API.md §6.28): the lock every write of a code takes, waited for at most
    /// `lock_timeout` (a table held locked answers 503), on a server that takes writes.
    fn write_probe(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction()?;
        tx.batch_execute("LOCK TABLE challenges, outbox IN ROW EXCLUSIVE MODE")?;
        let read_only: bool = tx
            .query_one(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                &[],
            )?
            .try_get(0)?;
        tx.rollback()?;
        if read_only {
            return Err(StoreError::Unavailable("the database is read-only".into()));
        }
        Ok(())
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

/// Take transaction-scoped advisory locks, in the order given (every caller uses the order
/// recipient → group → tenant, so two transactions never wait on each other in a circle; the
/// tenant's lock, shared by all its mints, is taken last and held the shortest).
fn lock_all(tx: &mut Db<'_, impl GenericClient>, keys: &[String]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) WITH ORDINALITY AS l(k, n) ORDER BY n",
        &[&keys],
    )?;
    Ok(())
}

/// A shared value as the driver binds it (a NULL keeps its type).
fn bound(a: &sql::Arg) -> &(dyn ToSql + Sync) {
    match a {
        sql::Arg::Text(v) => v,
        sql::Arg::Int(v) => v,
        sql::Arg::Int32(v) => v,
        sql::Arg::Bool(v) => v,
        sql::Arg::Blob(v) => v,
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
                        copy::Kind::Count => r
                            .try_get::<_, Option<i32>>(i)?
                            .map_or(copy::Value::Null, |v| copy::Value::Int(v.into())),
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

impl crate::storage::engine::Engine for PgStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    /// A read whose pooled connection turns out closed, reset or ended by the server (the
    /// database restarted, or ended the session, while the connection sat idle) is read
    /// again once on another: a read changes nothing, and the first request after a restart
    /// is not answered 503 for a connection the pool did not yet know was dead. A read that
    /// timed out is not (a database that hangs is not asked again).
    fn each_text(&self, text: &str, args: &[sql::Arg], f: Each<'_>) -> Result<(), StoreError> {
        let args: Vec<_> = args.iter().map(bound).collect();
        let mut again = true;
        loop {
            let mut conn = self.conn()?;
            match conn.db().query(text, &args) {
                Ok(rows) => {
                    drop(conn);
                    for r in rows {
                        f(&r)?;
                    }
                    return Ok(());
                }
                Err(e) if again && conn::closed(&e) => {
                    conn::note_lost();
                    again = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn crate::storage::engine::Exec) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.tx(|tx| f(tx))
    }

    fn exec_one(&self, q: sql::Shared, args: &[sql::Arg]) -> Result<u64, StoreError> {
        crate::storage::engine::Exec::exec(&mut self.conn()?.db(), q, args)
    }

    fn exclusive<T>(
        &self,
        f: impl FnOnce(&mut dyn crate::storage::engine::Exec) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.tx(|tx| f(tx))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn crate::storage::engine::Exec) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.conn()?.db())
    }
}

impl<C: GenericClient> crate::storage::engine::Exec for Db<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec_text(&mut self, text: &str, args: &[sql::Arg]) -> Result<u64, StoreError> {
        let args: Vec<_> = args.iter().map(bound).collect();
        Ok(self.execute(text, &args)?)
    }

    fn each_text(&mut self, text: &str, args: &[sql::Arg], f: Each<'_>) -> Result<(), StoreError> {
        let args: Vec<_> = args.iter().map(bound).collect();
        for r in self.query(text, &args)? {
            f(&r)?;
        }
        Ok(())
    }

    fn serialize(&mut self, keys: &[String]) -> Result<(), StoreError> {
        lock_all(self, keys)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shared_clock_is_the_backends_own() {
        assert_eq!(crate::storage::engine::PG_NOW, db_now!());
    }
}
