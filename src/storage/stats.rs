//! The statistics aggregate (API.md §13.4): counts per tenant, hour of mint and dimension
//! value, added to in the transactions that change a code (so they are exact across
//! instances), read by summing a range of hours — never by scanning codes.

use rand::Rng;

use super::cells::Cells;
use super::engine::{args, Dialect, Engine, Exec};
use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::stats::{hour_of, CodeDims, Counted, Counts, Dim, BUCKETS};
use crate::domain::Millis;

/// A code's columns its counts are kept under (read by [`tally_from`]), for statements
/// that change a code and return what it is.
pub(crate) const TALLY_COLS: &str =
    "tenant_id, created_at, purpose, locale, channel, email_canonical, stats_state";

/// Where a code's counts go: its tenant, the hour of its mint, its dimensions.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub tenant: String,
    pub created_at: Millis,
    pub dims: CodeDims,
    /// Whether the code counts at all (codes from before statistics, imported and test
    /// codes do not: a test code counted once, as `test`, at its mint).
    pub counts: bool,
}

/// A [`Tally`] from the columns of [`TALLY_COLS`], starting at column `at`.
pub(crate) fn tally_from(r: &(impl Cells + ?Sized), at: usize) -> Result<Tally, StoreError> {
    let created_at = r.int(at + 1)?;
    Ok(Tally {
        tenant: r.text(at)?,
        created_at,
        dims: CodeDims::of(
            &r.text(at + 2)?,
            r.opt_text(at + 3)?.as_deref(),
            &r.text(at + 4)?,
            &r.text(at + 5)?,
        ),
        counts: r.int(at + 6)? >= STATE_COUNTED,
    })
}

/// `challenges.stats_state`: not counted; counted; counted and its unverified expiry too.
pub(crate) const STATE_NOT_COUNTED: i64 = 0;
pub(crate) const STATE_COUNTED: i64 = 1;
pub(crate) const STATE_EXPIRY_COUNTED: i64 = 2;

/// One addition to the statistics: one of `what` for a code of `tenant` minted at
/// `created_at` with these dimensions.
#[derive(Debug, Clone)]
pub(crate) struct Bump<'a> {
    pub tenant: &'a str,
    pub created_at: Millis,
    pub dims: &'a CodeDims,
    pub what: Counted,
}

impl Bump<'_> {
    pub fn hour(&self) -> i64 {
        hour_of(self.created_at)
    }
}

/// The upsert of a [`Bump`] into its five cells (one per dimension) as one statement, with
/// the backend's placeholder for parameter `i` (1-based). Parameters: 1 tenant, 2 hour,
/// 3 shard, 4 n (1), 5 purpose, 6 locale, 7 channel, 8 domain. The cells are written in
/// the order of [`cells_of`].
pub(crate) fn upsert_sql(what: Counted, ph: impl Fn(usize) -> String) -> String {
    let col = what.column();
    let bucket = what.bucket().map(|b| format!("v{b}"));
    let mut cols = format!("tenant_id, dim, value, hour, shard, {col}");
    let mut set = format!("{col} = stats.{col} + excluded.{col}");
    if let Some(b) = &bucket {
        cols.push_str(&format!(", {b}"));
        set.push_str(&format!(", {b} = stats.{b} + excluded.{b}"));
    }
    let n = ph(4);
    let amounts = if bucket.is_some() {
        format!("{n}, {n}")
    } else {
        n
    };
    let values: Vec<String> = [
        (Dim::All, "''".to_string()),
        (Dim::Purpose, ph(5)),
        (Dim::Locale, ph(6)),
        (Dim::Channel, ph(7)),
        (Dim::Domain, ph(8)),
    ]
    .into_iter()
    .map(|(d, v)| {
        format!(
            "({}, '{}', {v}, {}, {}, {amounts})",
            ph(1),
            d.as_str(),
            ph(2),
            ph(3)
        )
    })
    .collect();
    format!(
        "INSERT INTO stats ({cols}) VALUES {} \
         ON CONFLICT (tenant_id, dim, hour, value, shard) DO UPDATE SET {set}",
        values.join(", ")
    )
}

/// One cell's share of a batch of counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cell {
    pub tenant: String,
    pub hour: i64,
    pub dim: Dim,
    pub value: String,
    pub n: i64,
}

/// The cells a batch of codes adds one each to (codes that do not count left out), summed,
/// in the order every transaction writes cells in — tenant, hour, dimension, value — so
/// transactions that write several never wait on each other in a circle.
pub(crate) fn cells_of(tallies: &[Tally]) -> Vec<Cell> {
    let mut sums: std::collections::BTreeMap<(String, i64, Dim, String), i64> =
        std::collections::BTreeMap::new();
    for t in tallies.iter().filter(|t| t.counts) {
        for (dim, value) in t.dims.cells() {
            *sums
                .entry((
                    t.tenant.clone(),
                    hour_of(t.created_at),
                    dim,
                    value.to_string(),
                ))
                .or_insert(0) += 1;
        }
    }
    sums.into_iter()
        .map(|((tenant, hour, dim, value), n)| Cell {
            tenant,
            hour,
            dim,
            value,
            n,
        })
        .collect()
}

/// The upsert of one [`Cell`]. Parameters: 1 tenant, 2 dim, 3 value, 4 hour, 5 shard, 6 n.
pub(crate) fn cell_sql(what: Counted, ph: impl Fn(usize) -> String) -> String {
    let col = what.column();
    format!(
        "INSERT INTO stats (tenant_id, dim, value, hour, shard, {col}) VALUES ({}, {}, {}, {}, {}, {}) \
         ON CONFLICT (tenant_id, dim, hour, value, shard) DO UPDATE SET {col} = stats.{col} + excluded.{col}",
        ph(1),
        ph(2),
        ph(3),
        ph(4),
        ph(5),
        ph(6)
    )
}

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
    /// Count one mint refused by the SMS fraud guard (`what` a [`Counted::Blocked`]) under
    /// the hour of `at` and the mint's dimensions.
    fn count_blocked(
        &self,
        tenant: &TenantId,
        at: Millis,
        dims: &CodeDims,
        what: Counted,
    ) -> Result<(), StoreError>;
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

/// Rows each cell is spread over on PostgreSQL: a transaction adds to one, chosen at
/// random, so concurrent instances rarely wait on one row, and a query sums them. SQLite's
/// single writer adds to one.
fn shards(d: Dialect) -> i64 {
    match d {
        Dialect::Sqlite => 1,
        Dialect::Postgres => 8,
    }
}

/// The shard a transaction adds to.
fn shard(d: Dialect) -> i64 {
    rand::thread_rng().gen_range(0..shards(d))
}

/// Add a bump to its five cells, on one shard. Callers make it the last statement of their
/// transaction, so the row locks it takes are held the shortest and never waited on while
/// holding another.
pub(crate) fn bump_in(tx: &mut dyn Exec, b: &Bump<'_>) -> Result<(), StoreError> {
    let d = tx.dialect();
    let row = args![
        b.tenant,
        b.hour(),
        shard(d),
        1i32,
        b.dims.purpose.as_str(),
        b.dims.locale.as_str(),
        b.dims.channel.as_str(),
        b.dims.domain.as_str(),
    ];
    tx.exec_text(&upsert_sql(b.what, |i| d.placeholder(i)), row)?;
    Ok(())
}

/// Count `what` for a code as read with `TALLY_COLS` (nothing for a code that does not
/// count).
pub(crate) fn count_in(tx: &mut dyn Exec, t: &Tally, what: Counted) -> Result<(), StoreError> {
    if !t.counts {
        return Ok(());
    }
    let (tenant, created_at, dims) = (&t.tenant, t.created_at, &t.dims);
    bump_in(
        tx,
        &Bump {
            tenant,
            created_at,
            dims,
            what,
        },
    )
}

/// Count `what` once for each of a batch of codes (those that count): summed per cell and
/// written in the one order every transaction writes cells in, on one shard, so two
/// batches never wait on each other in a circle.
pub(crate) fn count_all(
    tx: &mut dyn Exec,
    tallies: &[Tally],
    what: Counted,
) -> Result<(), StoreError> {
    let d = tx.dialect();
    let (text, shard) = (cell_sql(what, |i| d.placeholder(i)), shard(d));
    for c in cells_of(tallies) {
        let n = i32::try_from(c.n).unwrap_or(i32::MAX);
        let row = args![c.tenant, c.dim.as_str(), c.value, c.hour, shard, n];
        tx.exec_text(&text, row)?;
    }
    Ok(())
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

    fn count_blocked(
        &self,
        tenant: &TenantId,
        at: Millis,
        dims: &CodeDims,
        what: Counted,
    ) -> Result<(), StoreError> {
        let (tenant, dims) = (tenant.to_string(), dims.clone());
        self.transact(move |tx| {
            let b = Bump {
                tenant: &tenant,
                created_at: at,
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
    fn an_upsert_writes_five_cells_and_a_verify_its_bucket() {
        let sql = upsert_sql(Counted::Verified(7), |i| format!("${i}"));
        assert!(sql.contains("verified, v1)"), "{sql}");
        assert!(sql.contains("v1 = stats.v1 + excluded.v1"), "{sql}");
        assert_eq!(sql.matches("($1, '").count(), 5, "{sql}");
        let sql = upsert_sql(Counted::Minted, |i| format!("?{i}"));
        assert!(
            (0..BUCKETS).all(|b| !sql.contains(&format!("v{b} "))),
            "{sql}"
        );
        assert!(sql.contains("(?1, 'all', '', ?2, ?3, ?4)"), "{sql}");
    }

    #[test]
    fn a_batch_sums_its_cells_in_one_order_and_leaves_out_codes_that_do_not_count() {
        let t = |tenant: &str, at: Millis, domain: &str, counts: bool| Tally {
            tenant: tenant.into(),
            created_at: at,
            dims: CodeDims::of("login", Some("en"), "email", &format!("a@{domain}")),
            counts,
        };
        let cells = cells_of(&[
            t("b", 0, "x.example", true),
            t("a", 0, "y.example", true),
            t("a", 10, "x.example", true),
            t("a", 20, "x.example", false),
        ]);
        let mut sorted = cells.clone();
        sorted.sort();
        assert_eq!(cells, sorted);
        let all_a: Vec<_> = cells
            .iter()
            .filter(|c| c.tenant == "a" && c.dim == Dim::All)
            .collect();
        assert_eq!(all_a.len(), 1);
        assert_eq!(all_a[0].n, 2);
        assert_eq!(
            cells.iter().filter(|c| c.tenant == "a").count(),
            6,
            "{cells:?}"
        );
        assert_eq!(cells.len(), 11);
    }

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
