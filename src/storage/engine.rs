//! What a store method needs of a backend, so that a method whose SQL both backends agree
//! on is written once: reads of rows through [`Cells`], and one write transaction of shared
//! statements. An aggregate written this way implements its trait for every [`Engine`]
//! (`impl<E: Engine> SuppressionStore for E`, in its own `storage/<aggregate>.rs`); one whose
//! SQL, locking or batching differs per backend stays in `sqlite/` and `postgres/`.
//!
//! Values are bound as [`Arg`]s (typed, so a NULL keeps its type) and rows read through
//! `&dyn Cells`, so the mappers of `cells` serve both drivers here as they do there.

use super::cells::Cells;
use super::sql::{Arg, Shared};
use super::StoreError;

/// Which SQL a backend speaks, for the few statements built per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The placeholder of parameter `i` (1-based).
    pub(crate) fn placeholder(self, i: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{i}"),
            Dialect::Postgres => format!("${i}"),
        }
    }

    /// `q`'s text as this backend runs it.
    pub(crate) fn text(self, q: Shared) -> &'static str {
        match self {
            Dialect::Sqlite => q.sqlite,
            Dialect::Postgres => q.pg,
        }
    }
}

/// PostgreSQL's clock in Unix milliseconds (its backend's `db_now!`): leases there are
/// measured on it, so instances whose clocks differ agree on when one ends.
pub(crate) const PG_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A backend, as the written-once aggregates use it.
pub(crate) trait Engine {
    /// Which SQL it speaks.
    fn dialect(&self) -> Dialect;

    /// Every row `text` reads, each given to `f` in order (a pooled connection; on SQLite's
    /// writer thread, inside a call it runs, the open batch's).
    fn each_text(&self, text: &str, args: &[Arg], f: Each<'_>) -> Result<(), StoreError>;

    /// `f`'s statements as one transaction, committed when it returns `Ok` and rolled back
    /// when it returns an error. On SQLite it runs on the group-commit writer, in a
    /// savepoint of the next batch, as every write of a running server does; it returns
    /// once that batch is durable — or, called inside a call the writer runs (a
    /// [`crate::storage::WriteCall`]), at once, its writes part of the call's batch.
    fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Exec) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError>;

    /// `f`'s statements as a transaction of its own, outside SQLite's group commit (an
    /// IMMEDIATE transaction on a pooled connection there; a transaction on PostgreSQL):
    /// for the keyring, which changes before the writer serves a server's writes and
    /// whose compare-and-swaps stand alone.
    fn exclusive<T>(
        &self,
        f: impl FnOnce(&mut dyn Exec) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// `f`'s reads on one connection, outside a transaction (on SQLite's writer thread,
    /// inside a call it runs, the open batch's): several reads that need not see one
    /// snapshot, such as a cheap check before the write that checks again. Reads only: a
    /// write here would bypass SQLite's writer.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Exec) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// Run one statement as a write of its own (SQLite: on the writer, like
    /// [`Engine::transact`]; PostgreSQL: committed alone, no transaction around it); how
    /// many rows it changed.
    fn exec_one(&self, q: Shared, args: &[Arg]) -> Result<u64, StoreError>;

    /// Every row of `text` (this backend's), each read by `f`.
    fn rows_text<T>(
        &self,
        text: &str,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        all(|each| self.each_text(text, args, each), f)
    }

    /// The first row of `text` (this backend's), read by `f`.
    fn first_text<T>(
        &self,
        text: &str,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        first(|each| self.each_text(text, args, each), f)
    }

    /// Every row `q` reads, each read by `f`.
    fn rows<T>(
        &self,
        q: Shared,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.rows_text(self.dialect().text(q), args, f)
    }

    /// The first row `q` reads (the queries that use this read at most one; more are not
    /// an error), read by `f`.
    fn row_opt<T>(
        &self,
        q: Shared,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.first_text(self.dialect().text(q), args, f)
    }
}

/// The statements of one transaction (see [`Engine::transact`]).
pub(crate) trait Exec {
    /// Which SQL it speaks.
    fn dialect(&self) -> Dialect;

    /// Run `text` (this backend's); how many rows it changed.
    fn exec_text(&mut self, text: &str, args: &[Arg]) -> Result<u64, StoreError>;

    /// Every row `text` reads in the transaction, each given to `f` in order.
    fn each_text(&mut self, text: &str, args: &[Arg], f: Each<'_>) -> Result<(), StoreError>;

    /// Hold the named locks ([`lock_key`]), in the order given, until the transaction ends:
    /// every transaction that checks a count and then adds to it takes the same ones, so
    /// the check and the count are one step. PostgreSQL takes transaction-scoped advisory
    /// locks (any number of instances share the database); SQLite needs none, its single
    /// writer runs one write at a time.
    fn serialize(&mut self, keys: &[String]) -> Result<(), StoreError>;

    /// Run `q`; how many rows it changed.
    fn exec(&mut self, q: Shared, args: &[Arg]) -> Result<u64, StoreError> {
        let text = self.dialect().text(q);
        self.exec_text(text, args)
    }
}

impl dyn Exec + '_ {
    /// Every row `q` reads in the transaction, each read by `f`.
    pub(crate) fn rows<T>(
        &mut self,
        q: Shared,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let text = self.dialect().text(q);
        all(|each| self.each_text(text, args, each), f)
    }

    /// The first row `q` reads in the transaction, read by `f`.
    pub(crate) fn row_opt<T>(
        &mut self,
        q: Shared,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let text = self.dialect().text(q);
        self.first_text(text, args, f)
    }

    /// The first row of `text` (this backend's) in the transaction, read by `f`.
    pub(crate) fn first_text<T>(
        &mut self,
        text: &str,
        args: &[Arg],
        f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        first(|each| self.each_text(text, args, each), f)
    }
}

/// A row callback, as `each_text` takes it.
pub(crate) type Each<'a> = &'a mut dyn FnMut(&dyn Cells) -> Result<(), StoreError>;

/// Every row `read` gives its callback, each read by `f`.
fn all<T>(
    read: impl FnOnce(Each<'_>) -> Result<(), StoreError>,
    f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    read(&mut |r| {
        out.push(f(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// The first row `read` gives its callback, read by `f`.
fn first<T>(
    read: impl FnOnce(Each<'_>) -> Result<(), StoreError>,
    f: impl Fn(&dyn Cells) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut out = None;
    read(&mut |r| {
        if out.is_none() {
            out = Some(f(r)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The key of a transaction-scoped advisory lock: parts joined by a separator no part holds.
pub(crate) fn lock_key(kind: &str, parts: &[&str]) -> String {
    let mut k = String::from(kind);
    for p in parts {
        k.push('\u{1f}');
        k.push_str(p);
    }
    k
}

/// `args![a, b, …]`: the values of a shared statement, each made an [`Arg`].
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::storage::sql::Arg::from($v)),*]
    };
}
pub(crate) use args;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_keep_their_parts_apart() {
        assert_ne!(lock_key("r", &["ab", "c"]), lock_key("r", &["a", "bc"]));
        assert_eq!(lock_key("t", &["x"]), "t\u{1f}x");
    }
}
