//! PostgreSQL: statistics — the cells a code's change adds to (in that change's
//! transaction, on one of a few shards so concurrent instances rarely wait on one row), the
//! expiry pass, the summing query and the purge (the SQL is shared with SQLite in
//! `storage::stats`).

use crate::storage::sql;
use ::postgres::GenericClient;
use rand::Rng;

use super::conn::Db;
use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::stats::{CodeDims, Counted};
use crate::domain::Millis;
use crate::storage::stats::{
    cell_sql, cells_of, query_sql, stats_row_from, tally_from, upsert_sql, Bump, StatsQuery,
    StatsRow, StatsStore, Tally, COUNT_COLS, EXPIRY_BATCH, EXPIRY_GRACE_MS, EXPIRY_UNCOUNTED,
    STATE_EXPIRY_COUNTED, TALLY_COLS,
};
use crate::storage::StoreError;

/// Rows each cell is spread over: a transaction adds to one, chosen at random, and a query
/// sums them.
const SHARDS: i64 = 8;

/// Add a bump to its five cells, on a random shard. Callers make it the last statement of
/// their transaction, so the row locks it takes are held the shortest and never waited on
/// while holding another.
pub(super) fn bump_in(tx: &mut Db<'_, impl GenericClient>, b: &Bump<'_>) -> Result<(), StoreError> {
    let shard = rand::thread_rng().gen_range(0..SHARDS);
    tx.execute(
        &upsert_sql(b.what, |i| format!("${i}")),
        &[
            &b.tenant,
            &b.hour(),
            &shard,
            &1i32,
            &b.dims.purpose,
            &b.dims.locale,
            &b.dims.channel,
            &b.dims.domain,
        ],
    )?;
    Ok(())
}

/// Count `what` for a code as read with `TALLY_COLS` (nothing for a code that does not
/// count).
pub(super) fn count_in(
    tx: &mut Db<'_, impl GenericClient>,
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

/// Count `what` once for each of a batch of codes (those that count): summed per cell and
/// written in the one order every transaction writes cells in, on one shard, so two
/// batches never wait on each other in a circle.
pub(super) fn count_all(
    tx: &mut Db<'_, impl GenericClient>,
    tallies: &[Tally],
    what: Counted,
) -> Result<(), StoreError> {
    let shard = rand::thread_rng().gen_range(0..SHARDS);
    for c in cells_of(tallies) {
        tx.execute(
            &cell_sql(what, |i| format!("${i}")),
            &[
                &c.tenant,
                &c.dim.as_str(),
                &c.value,
                &c.hour,
                &shard,
                &i32::try_from(c.n).unwrap_or(i32::MAX),
            ],
        )?;
    }
    Ok(())
}

impl StatsStore for PgStore {
    fn count_blocked(
        &self,
        tenant: &TenantId,
        at: Millis,
        dims: &CodeDims,
        what: Counted,
    ) -> Result<(), StoreError> {
        self.tx(|tx| {
            bump_in(
                tx,
                &Bump {
                    tenant: tenant.as_str(),
                    created_at: at,
                    dims,
                    what,
                },
            )
        })
    }

    fn count_expired(&self, now: Millis) -> Result<usize, StoreError> {
        self.tx(|tx| {
            // Rows another instance is counting are skipped, not waited for; the state
            // change re-checks each under its row lock.
            let tallies = tx.rows(
                &format!(
                    "UPDATE challenges SET stats_state = $1 WHERE key_digest IN ( \
                       SELECT key_digest FROM challenges WHERE {EXPIRY_UNCOUNTED} \
                       AND expires_at <= $2 LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     AND {EXPIRY_UNCOUNTED} RETURNING {TALLY_COLS}"
                ),
                &[
                    &STATE_EXPIRY_COUNTED,
                    &(now - EXPIRY_GRACE_MS),
                    &i64::from(EXPIRY_BATCH),
                ],
                |r| tally_from(r, 0),
            )?;
            count_all(tx, &tallies, Counted::ExpiredUnverified)?;
            Ok(tallies.len())
        })
    }

    fn stats(&self, q: &StatsQuery) -> Result<Vec<StatsRow>, StoreError> {
        let sql = query_sql(q, |i| format!("${i}"));
        let dim = q.group.map_or("all", |d| d.as_str());
        let limit = i64::try_from(q.max_rows + 1).unwrap_or(i64::MAX);
        let grouped = q.group.is_some();
        let mut conn = self.conn()?;
        let mut db = conn.db();
        match &q.tenant {
            Some(t) => db.rows(
                &sql,
                &[
                    &dim,
                    &q.from_hour,
                    &q.to_hour,
                    &q.period_hours,
                    &limit,
                    &t.as_str(),
                ],
                |r| stats_row_from(r, grouped),
            ),
            None => db.rows(
                &sql,
                &[&dim, &q.from_hour, &q.to_hour, &q.period_hours, &limit],
                |r| stats_row_from(r, grouped),
            ),
        }
    }

    fn compact_stats(&self, before_hour: i64) -> Result<usize, StoreError> {
        let cols = COUNT_COLS.join(", ");
        let sums: Vec<String> = COUNT_COLS.iter().map(|c| format!("SUM({c})")).collect();
        let set: Vec<String> = COUNT_COLS
            .iter()
            .map(|c| format!("{c} = stats.{c} + excluded.{c}"))
            .collect();
        // The shards' rows go and their sums join shard 0, in one statement (rows of quiet
        // hours: no code changes them any more).
        let n = self.tx(|tx| {
            Ok(tx.execute(
                &format!(
                    "WITH moved AS (DELETE FROM stats WHERE shard > 0 AND hour < $1 \
                       AND dim IN ('all', 'purpose', 'locale', 'channel', 'domain') RETURNING *) \
                     INSERT INTO stats (tenant_id, dim, hour, value, shard, {cols}) \
                     SELECT tenant_id, dim, hour, value, 0, {} FROM moved \
                     GROUP BY tenant_id, dim, hour, value ORDER BY tenant_id, dim, hour, value \
                     ON CONFLICT (tenant_id, dim, hour, value, shard) DO UPDATE SET {}",
                    sums.join(", "),
                    set.join(", ")
                ),
                &[&before_hour],
            )?)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn purge_stats(&self, before_hour: i64) -> Result<usize, StoreError> {
        let n = self
            .conn()?
            .db()
            .execute(sql::stats::PURGE_STATS.pg, &[&before_hour])?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
