//! PostgreSQL: retention purges, and migrate-store's copy of a whole installation (read
//! through a portal, written by binary COPY, a part at a time).

use crate::storage::sql;
use ::postgres::binary_copy::BinaryCopyInWriter;
use ::postgres::types::{ToSql, Type};

use super::{export_rows, PgStore, KEYRING_LOCK};
use crate::domain::Millis;
use crate::storage::records::{batched_purges, in_batches, purge_batch, purge_in};
use crate::storage::{copy, RecordStore, StoreError};

impl RecordStore for PgStore {
    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError> {
        // Outside a transaction: each statement commits on its own.
        let mut conn = self.conn()?;
        let n = in_batches(|| purge_batch(&mut conn.db(), sql::records::PURGE_CHALLENGES, before))?;
        for (q, cutoff) in batched_purges(before, sends_before) {
            in_batches(|| purge_batch(&mut conn.db(), q, cutoff))?;
        }
        purge_in(&mut conn.db(), sends_before)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn export_rows(&self, sink: &mut copy::Sink<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        // A copy reads whole tables: no statement timeout for it.
        tx.batch_execute("SET LOCAL statement_timeout = 0")?;
        for t in copy::TABLES {
            // Read through a portal, a few rows at a time: never a whole table in memory. A
            // fetch takes about a quarter of a part's bytes (16 rows first, then as many as
            // the rows so far say fit, at most 500).
            let portal = tx.bind(&format!("SELECT {} FROM {}", t.column_list(), t.name), &[])?;
            let mut parts = copy::Parts::new(sink, t);
            let (mut fetch, mut rows_read, mut bytes_read) = (16usize, 0usize, 0usize);
            loop {
                let rows = tx.query_portal(&portal, i32::try_from(fetch).unwrap_or(16))?;
                let fetched = rows.len();
                for row in export_rows(t, &rows)? {
                    bytes_read += copy::row_size(&row);
                    parts.push(row)?;
                }
                if fetched < fetch {
                    break;
                }
                rows_read += fetched;
                let per_row = bytes_read / rows_read.max(1) + 1;
                fetch = (copy::PART_BYTES / 4 / per_row).clamp(1, 500);
            }
            parts.finish()?;
        }
        tx.commit()?;
        Ok(())
    }

    fn import_rows(&self, source: &mut copy::Source<'_>) -> Result<(), StoreError> {
        self.tx(|tx| {
            tx.c.batch_execute("SET LOCAL statement_timeout = 0")?;
            // Also keeps two copies into one database from interleaving.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYRING_LOCK])?;
            let held = tx.query_one(sql::records::IMPORT_SNAPSHOT.pg, &[])?;
            copy::held(held.try_get(0)?, held.try_get(1)?)?;
            source(&mut |t, rows| {
                // A part in one COPY (binary): one round trip, not one a row. COPY writes
                // an identity column's copied numbers as given.
                let types: Vec<Type> = t.columns.iter().map(|(_, k)| pg_type(*k)).collect();
                let into = format!("COPY {} ({}) FROM STDIN BINARY", t.name, t.column_list());
                let mut w = BinaryCopyInWriter::new(tx.c.copy_in(&into)?, &types);
                for row in rows {
                    let values = row
                        .iter()
                        .zip(t.columns)
                        .map(|(v, (col, kind))| pg_value(v, *kind, t.name, col))
                        .collect::<Result<Vec<_>, _>>()?;
                    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
                    w.write(&refs)?;
                }
                w.finish()?;
                Ok(())
            })?;
            for t in copy::TABLES {
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

    fn backup_to(&self, _path: &std::path::Path) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "`otpmint backup` copies a SQLite database; back up PostgreSQL with pg_dump",
        ))
    }
}

/// PostgreSQL's type of a copied column.
fn pg_type(kind: copy::Kind) -> Type {
    match kind {
        copy::Kind::Int => Type::INT8,
        copy::Kind::Count => Type::INT4,
        copy::Kind::Text => Type::TEXT,
        copy::Kind::Blob => Type::BYTEA,
        copy::Kind::Bool => Type::BOOL,
    }
}

/// A copied value as PostgreSQL takes it into a column of `kind` (`table.col`, for errors).
fn pg_value(
    v: &copy::Value,
    kind: copy::Kind,
    table: &str,
    col: &str,
) -> Result<Box<dyn ToSql + Sync>, StoreError> {
    Ok(match (v, kind) {
        (copy::Value::Int(i), copy::Kind::Bool) => Box::new(*i != 0),
        // A count past PostgreSQL's INTEGER is damage, never cut down.
        (copy::Value::Int(i), copy::Kind::Count) => Box::new(i32::try_from(*i).map_err(|_| {
            StoreError::Corrupt(format!("{table}.{col} holds {i}, past a count's range"))
        })?),
        (copy::Value::Int(i), _) => Box::new(*i),
        (copy::Value::Bool(b), _) => Box::new(*b),
        (copy::Value::Text(s), _) => Box::new(s.clone()),
        (copy::Value::Blob(b), _) => Box::new(b.clone()),
        (copy::Value::Null, copy::Kind::Int) => Box::new(None::<i64>),
        (copy::Value::Null, copy::Kind::Count) => Box::new(None::<i32>),
        (copy::Value::Null, copy::Kind::Text) => Box::new(None::<String>),
        (copy::Value::Null, copy::Kind::Blob) => Box::new(None::<Vec<u8>>),
        (copy::Value::Null, copy::Kind::Bool) => Box::new(None::<bool>),
    })
}
