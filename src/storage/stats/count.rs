//! How counts are added: a code's tally (where its counts go), the upsert of one count into
//! its five cells, and a batch's counts summed per cell — inside the transaction that
//! changes the code, as its last statements, on one shard.

use rand::Rng;

use crate::domain::stats::{hour_of, CodeDims, Counted, Dim};
use crate::domain::Millis;
use crate::storage::cells::Cells;
use crate::storage::engine::{args, Dialect, Exec};
use crate::storage::StoreError;

/// A code's columns its counts are kept under (read by [`tally_from`]), for statements
/// that change a code and return what it is.
pub(crate) const TALLY_COLS: &str =
    "tenant_id, created_at, purpose, locale, channel, email_canonical, stats_state";
/// How many columns [`TALLY_COLS`] names: a statement's next column is at this index.
pub(crate) const TALLY_WIDTH: usize = 7;

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
pub struct Bump<'a> {
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

/// Rows each cell is spread over on PostgreSQL: a transaction adds to one, chosen at
/// random, so concurrent instances rarely wait on one row, and a query sums them. SQLite's
/// single writer adds to one.
pub(super) fn shards(d: Dialect) -> i64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stats::{Dim, BUCKETS};

    #[test]
    fn the_tally_width_is_the_number_of_tally_columns() {
        assert_eq!(TALLY_COLS.split(',').count(), TALLY_WIDTH);
    }

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
}
