//! SQLite: statistics — the cells a code's change adds to (in that change's transaction),
//! the expiry pass, the summing query and the purge (the SQL is shared with PostgreSQL in
//! `storage::stats`).

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::stats::{CodeDims, Counted};
use crate::domain::Millis;
use crate::storage::stats::{
    cell_sql, cells_of, query_sql, stats_row_from, tally_from, upsert_sql, Bump, StatsQuery,
    StatsRow, StatsStore, Tally, EXPIRY_BATCH, EXPIRY_GRACE_MS, EXPIRY_UNCOUNTED,
    STATE_EXPIRY_COUNTED, TALLY_COLS,
};
use crate::storage::StoreError;

/// Add a bump to its five cells (one shard: SQLite writes one at a time).
pub(super) fn bump_in(tx: &rusqlite::Connection, b: &Bump<'_>) -> Result<(), StoreError> {
    tx.execute_cached(
        &upsert_sql(b.what, |i| format!("?{i}")),
        params![
            b.tenant,
            b.hour(),
            0,
            1,
            b.dims.purpose,
            b.dims.locale,
            b.dims.channel,
            b.dims.domain
        ],
    )?;
    Ok(())
}

/// Count `what` for a code as read with `TALLY_COLS` (nothing for a code that does not
/// count).
pub(super) fn count_in(
    tx: &rusqlite::Connection,
    t: &Tally,
    what: Counted,
) -> Result<(), StoreError> {
    if !t.counts {
        return Ok(());
    }
    bump_in(
        tx,
        &Bump {
            tenant: &t.tenant,
            created_at: t.created_at,
            dims: &t.dims,
            what,
        },
    )
}

impl StatsStore for SqliteStore {
    fn count_blocked(
        &self,
        tenant: &TenantId,
        at: Millis,
        dims: &CodeDims,
        what: Counted,
    ) -> Result<(), StoreError> {
        let (t, d) = (tenant.as_str().to_string(), dims.clone());
        self.writer.write(move |tx| {
            bump_in(
                tx,
                &Bump {
                    tenant: &t,
                    created_at: at,
                    dims: &d,
                    what,
                },
            )
        })
    }

    fn count_expired(&self, now: Millis) -> Result<usize, StoreError> {
        self.writer.write(move |tx| {
            let tallies = tx.rows(
                &format!(
                    "UPDATE challenges SET stats_state = ?1 WHERE key_digest IN ( \
                       SELECT key_digest FROM challenges WHERE {EXPIRY_UNCOUNTED} \
                       AND expires_at <= ?2 LIMIT ?3) RETURNING {TALLY_COLS}"
                ),
                params![STATE_EXPIRY_COUNTED, now - EXPIRY_GRACE_MS, EXPIRY_BATCH],
                |r| tally_from(r, 0),
            )?;
            for c in cells_of(&tallies) {
                tx.execute_cached(
                    &cell_sql(Counted::ExpiredUnverified, |i| format!("?{i}")),
                    params![c.tenant, c.dim.as_str(), c.value, c.hour, 0, c.n],
                )?;
            }
            Ok(tallies.len())
        })
    }

    fn stats(&self, q: &StatsQuery) -> Result<Vec<StatsRow>, StoreError> {
        let sql = query_sql(q, |i| format!("?{i}"));
        let dim = q.group.map_or("all", |d| d.as_str());
        let limit = i64::try_from(q.max_rows + 1).unwrap_or(i64::MAX);
        let conn = self.conn()?;
        let grouped = q.group.is_some();
        match &q.tenant {
            Some(t) => conn.rows(
                &sql,
                params![
                    dim,
                    q.from_hour,
                    q.to_hour,
                    q.period_hours,
                    limit,
                    t.as_str()
                ],
                |r| stats_row_from(r, grouped),
            ),
            None => conn.rows(
                &sql,
                params![dim, q.from_hour, q.to_hour, q.period_hours, limit],
                |r| stats_row_from(r, grouped),
            ),
        }
    }

    fn purge_stats(&self, before_hour: i64) -> Result<usize, StoreError> {
        self.writer
            .write(move |tx| Ok(tx.execute_cached(sql::stats::PURGE_STATS.sqlite, [before_hour])?))
    }
}
