//! The statistics aggregate (API.md §13.4): counts per tenant, hour of mint and dimension
//! value, added to in the transactions that change a code (so they are exact across
//! instances), read by summing a range of hours — never by scanning codes.

use super::cells::Cells;
use super::engine::{Dialect, Engine};
use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::stats::{Counted, Counts, Dim, BUCKETS};
use crate::domain::Millis;

mod count;

use count::shards;
pub use count::Bump;
pub(crate) use count::{
    bump_in, count_all, count_in, tally_from, Tally, STATE_COUNTED, STATE_EXPIRY_COUNTED,
    STATE_NOT_COUNTED, TALLY_COLS, TALLY_WIDTH,
};

/// What a statistics query asks for.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// `None`: every tenant together.
    pub tenant: Option<TenantId>,
    /// Hours of mint, from (inclusive) and to (exclusive).
    pub from_hour: i64,
    pub to_hour: i64,
    /// Hours per period: 1 or 24.
    pub period_hours: i64,
    /// `None`: no grouping.
    pub group: Option<Dim>,
    /// At most this many rows (one more is read, to tell that there are more).
    pub max_rows: usize,
}

/// One period (and group) of counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRow {
    /// The period's first hour.
    pub hour: i64,
    pub group: Option<String>,
    pub counts: Counts,
}

/// Every count column of a cell: the six counts, then the time-to-verify buckets.
pub(crate) const COUNT_COLS: [&str; 6 + BUCKETS + 5] = [
    "minted",
    "sent",
    "failed",
    "verified",
    "expired_unverified",
    "test",
    "v0",
    "v1",
    "v2",
    "v3",
    "v4",
    "v5",
    "v6",
    "v7",
    "v8",
    "v9",
    "v10",
    "v11",
    "v12",
    "v13",
    "v14",
    "blocked_country",
    "blocked_number",
    "blocked_velocity",
    "bounced",
    "complained",
];

/// The summing query of [`StatsQuery`], with the backend's placeholder for parameter `i`.
/// Parameters: 1 dim, 2 from hour, 3 to hour, 4 period hours, 5 limit, and 6 the tenant
/// when there is one.
pub(crate) fn query_sql(q: &StatsQuery, ph: impl Fn(usize) -> String) -> String {
    let sums: Vec<String> = COUNT_COLS
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
        .collect();
    let tenant = if q.tenant.is_some() {
        format!(" AND tenant_id = {}", ph(6))
    } else {
        String::new()
    };
    // Periods start at a multiple of their length (UTC days for 24 hours).
    format!(
        "SELECT (hour / {p}) * {p} AS period, value, {} FROM stats \
         WHERE dim = {} AND hour >= {} AND hour < {}{tenant} \
         GROUP BY period, value ORDER BY period, value LIMIT {}",
        sums.join(", "),
        ph(1),
        ph(2),
        ph(3),
        ph(5),
        p = ph(4),
    )
}

/// A row of [`query_sql`].
pub(crate) fn stats_row_from(
    r: &(impl Cells + ?Sized),
    grouped: bool,
) -> Result<StatsRow, StoreError> {
    let mut buckets = [0i64; BUCKETS];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = r.int(8 + i)?;
    }
    Ok(StatsRow {
        hour: r.int(0)?,
        group: if grouped { Some(r.text(1)?) } else { None },
        counts: Counts {
            minted: r.int(2)?,
            sent: r.int(3)?,
            failed: r.int(4)?,
            verified: r.int(5)?,
            expired_unverified: r.int(6)?,
            test: r.int(7)?,
            buckets,
            blocked: [
                r.int(8 + BUCKETS)?,
                r.int(9 + BUCKETS)?,
                r.int(10 + BUCKETS)?,
            ],
            bounced: r.int(11 + BUCKETS)?,
            complained: r.int(12 + BUCKETS)?,
        },
    })
}

/// The codes whose unverified expiry is still to be counted, once expired: counted ones
/// still pending, or failed at or after their expiry (a code failing before it expires has
/// nothing more to count). The partial index `challenges_uncounted` holds exactly these;
/// the values are literals so both planners use it.
pub(crate) const EXPIRY_UNCOUNTED: &str = "status IN ('pending', 'failed') AND stats_state = 1";

/// How long after its expiry a code is counted as expired unverified: longer than clocks of
/// instances differ, so a code one instance counts as expired no other still verifies.
pub const EXPIRY_GRACE_MS: Millis = 60_000;

/// Codes the expiry pass reads at most at once.
pub const EXPIRY_BATCH: u32 = 500;

pub trait StatsStore {
    /// Count the codes that expired unverified ([`EXPIRY_UNCOUNTED`], expired at least
    /// [`EXPIRY_GRACE_MS`] before `now`), up to [`EXPIRY_BATCH`] per call, each once however
    /// many instances run this; returns how many.
    fn count_expired(&self, now: Millis) -> Result<usize, StoreError>;
    /// Sum the counts of a range (see [`StatsQuery`]); at most `max_rows + 1` rows.
    fn stats(&self, q: &StatsQuery) -> Result<Vec<StatsRow>, StoreError>;
    /// Count one mint refused by the SMS fraud guard (`b.what` a [`Counted::Blocked`]) under
    /// the hour of `b.created_at` (the refusal's) and the mint's dimensions.
    fn count_blocked(&self, b: &Bump) -> Result<(), StoreError>;
    /// Drop the counts of hours before `before_hour`.
    fn purge_stats(&self, before_hour: i64) -> Result<usize, StoreError>;
    /// Fold the shards of each cell of the hours before `before_hour` into one row, so a
    /// long range reads one row per cell (a backend with one shard has nothing to fold).
    /// Only hours no code can still change are folded (see [`QUIET_HOURS`]).
    fn compact_stats(&self, before_hour: i64) -> Result<usize, StoreError> {
        let _ = before_hour;
        Ok(0)
    }
}

impl<E: Engine> StatsStore for E {
    fn count_expired(&self, now: Millis) -> Result<usize, StoreError> {
        let d = self.dialect();
        // On PostgreSQL rows another instance is counting are skipped, not waited for; the
        // state change re-checks each under its row lock.
        let text = match d {
            Dialect::Sqlite => format!(
                "UPDATE challenges SET stats_state = ?1 WHERE key_digest IN ( \
                   SELECT key_digest FROM challenges WHERE {EXPIRY_UNCOUNTED} \
                   AND expires_at <= ?2 LIMIT ?3) RETURNING {TALLY_COLS}"
            ),
            Dialect::Postgres => format!(
                "UPDATE challenges SET stats_state = $1 WHERE key_digest IN ( \
                   SELECT key_digest FROM challenges WHERE {EXPIRY_UNCOUNTED} \
                   AND expires_at <= $2 LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 AND {EXPIRY_UNCOUNTED} RETURNING {TALLY_COLS}"
            ),
        };
        let batch = [
            STATE_EXPIRY_COUNTED.into(),
            (now - EXPIRY_GRACE_MS).into(),
            EXPIRY_BATCH.into(),
        ];
        self.transact(move |tx| {
            let mut tallies = Vec::new();
            tx.each_text(&text, &batch, &mut |r| {
                tallies.push(tally_from(r, 0)?);
                Ok(())
            })?;
            count_all(tx, &tallies, Counted::ExpiredUnverified)?;
            Ok(tallies.len())
        })
    }

    fn stats(&self, q: &StatsQuery) -> Result<Vec<StatsRow>, StoreError> {
        let d = self.dialect();
        let text = query_sql(q, |i| d.placeholder(i));
        let dim = q.group.map_or("all", |d| d.as_str());
        let limit = i64::try_from(q.max_rows + 1).unwrap_or(i64::MAX);
        let grouped = q.group.is_some();
        let mut args = vec![
            dim.into(),
            q.from_hour.into(),
            q.to_hour.into(),
            q.period_hours.into(),
            limit.into(),
        ];
        if let Some(t) = &q.tenant {
            args.push(t.as_str().into());
        }
        self.rows_text(&text, &args, |r| stats_row_from(r, grouped))
    }

    fn count_blocked(&self, b: &Bump) -> Result<(), StoreError> {
        let (tenant, dims, created_at, what) =
            (b.tenant.to_string(), b.dims.clone(), b.created_at, b.what);
        self.transact(move |tx| {
            let b = Bump {
                tenant: &tenant,
                created_at,
                dims: &dims,
                what,
            };
            bump_in(tx, &b)
        })
    }

    fn purge_stats(&self, before_hour: i64) -> Result<usize, StoreError> {
        let before = [before_hour.into()];
        let n = self.exec_one(super::sql::stats::PURGE_STATS, &before)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn compact_stats(&self, before_hour: i64) -> Result<usize, StoreError> {
        if shards(self.dialect()) == 1 {
            return Ok(0);
        }
        let cols = COUNT_COLS.join(", ");
        let sums: Vec<String> = COUNT_COLS.iter().map(|c| format!("SUM({c})")).collect();
        let set: Vec<String> = COUNT_COLS
            .iter()
            .map(|c| format!("{c} = stats.{c} + excluded.{c}"))
            .collect();
        // The shards' rows go and their sums join shard 0, in one statement (rows of quiet
        // hours: no code changes them any more).
        let text = format!(
            "WITH moved AS (DELETE FROM stats WHERE shard > 0 AND hour < $1 \
               AND dim IN ('all', 'purpose', 'locale', 'channel', 'domain') RETURNING *) \
             INSERT INTO stats (tenant_id, dim, hour, value, shard, {cols}) \
             SELECT tenant_id, dim, hour, value, 0, {} FROM moved \
             GROUP BY tenant_id, dim, hour, value ORDER BY tenant_id, dim, hour, value \
             ON CONFLICT (tenant_id, dim, hour, value, shard) DO UPDATE SET {}",
            sums.join(", "),
            set.join(", ")
        );
        let before = [before_hour.into()];
        let n = self.transact(move |tx| tx.exec_text(&text, &before))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Hours after which a cell no longer changes: a code's counts go to its mint's hour, and
/// nothing happens to a code after its lifetime (at most a day) and the expiry pass that
/// follows it.
pub const QUIET_HOURS: i64 = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_groups_by_period_and_names_the_tenant_only_when_asked() {
        let mut q = StatsQuery {
            tenant: None,
            from_hour: 0,
            to_hour: 48,
            period_hours: 24,
            group: None,
            max_rows: 10,
        };
        let sql = query_sql(&q, |i| format!("${i}"));
        assert!(!sql.contains("tenant_id ="), "{sql}");
        assert!(sql.contains("(hour / $4) * $4"), "{sql}");
        q.tenant = Some(TenantId::generate());
        assert!(query_sql(&q, |i| format!("${i}")).contains("tenant_id = $6"));
    }
}
