//! Statistics use cases (API.md §13.4): a range of a tenant's (or every tenant's) counts by
//! hour or day, optionally grouped, read from the rollups the code transactions keep; the
//! pass that counts codes that expired unverified; the purge of old counts.

use crate::domain::keys::TenantId;
use crate::domain::named::named_enum;
use crate::domain::stats::{Dim, HOUR_MS, MAX_RANGE_DAYS, MAX_ROWS};
use crate::domain::Millis;
use crate::service::{Admin, ServiceError};
use crate::storage::stats::QUIET_HOURS;
use crate::storage::{StatsQuery, StatsRow};

named_enum! {
    /// Hours or days.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Granularity {
        Hour = "hour",
        Day = "day",
    }
}

impl Granularity {
    fn hours(self) -> i64 {
        match self {
            Granularity::Hour => 1,
            Granularity::Day => 24,
        }
    }
}

/// A statistics request, parsed (times in ms).
#[derive(Debug, Clone)]
pub struct StatsRequest {
    /// Default: `to` less 24 hours (by hour) or 7 days (by day).
    pub from: Option<Millis>,
    /// Default: now.
    pub to: Option<Millis>,
    pub granularity: Granularity,
    pub group: Option<Dim>,
}

/// The answer: the range as resolved, and its rows.
#[derive(Debug, Clone)]
pub struct StatsAnswer {
    pub from: Millis,
    pub to: Millis,
    pub granularity: Granularity,
    pub group: Option<Dim>,
    pub rows: Vec<StatsRow>,
}

/// The default range: the last 7 days by day, the last 24 hours by hour.
const DEFAULT_DAYS: i64 = 7;

impl Admin {
    /// Counts of `tenant` (`None`: all tenants together) over a range of mint times. The
    /// range covers whole periods: from the start of `from`'s period to the end of `to`'s.
    pub async fn stats(
        &self,
        tenant: Option<TenantId>,
        r: StatsRequest,
    ) -> Result<StatsAnswer, ServiceError> {
        let period_ms = r.granularity.hours() * HOUR_MS;
        let to = r.to.unwrap_or_else(|| self.core.now());
        let from = r.from.unwrap_or(match r.granularity {
            Granularity::Hour => to - 24 * HOUR_MS,
            Granularity::Day => to - DEFAULT_DAYS * 24 * HOUR_MS,
        });
        if from > to {
            return Err(ServiceError::field("from", "must not be after `to`"));
        }
        if to - from > MAX_RANGE_DAYS * 24 * HOUR_MS {
            return Err(ServiceError::field(
                "from",
                format!("is more than {MAX_RANGE_DAYS} days before `to`: a range covers at most {MAX_RANGE_DAYS} days"),
            ));
        }
        let from_p = from.div_euclid(period_ms);
        let to_p = to.div_euclid(period_ms) + 1;
        // The answer's `to` is the end of `to`'s period: it must be a time RFC 3339 can
        // write (`9999-12-31` as `to` would end at `+10000-01-01T00:00:00Z`).
        const YEAR_10000: Millis = 253_402_300_800_000;
        if to_p
            .checked_mul(period_ms)
            .is_none_or(|end| end >= YEAR_10000)
        {
            return Err(ServiceError::field(
                "to",
                "must end before the year 10000 (its period ends at the answer's `to`)",
            ));
        }
        let q = StatsQuery {
            tenant,
            from_hour: from_p * r.granularity.hours(),
            to_hour: to_p * r.granularity.hours(),
            period_hours: r.granularity.hours(),
            group: r.group,
            max_rows: MAX_ROWS,
        };
        let rows = self.core.db(move |s| s.stats(&q)).await?;
        if rows.len() > MAX_ROWS {
            return Err(ServiceError::field(
                "group_by",
                format!(
                    "the answer would have more than {MAX_ROWS} rows; narrow the range or use a coarser granularity"
                ),
            ));
        }
        Ok(StatsAnswer {
            from: from_p * period_ms,
            to: to_p * period_ms,
            granularity: r.granularity,
            group: r.group,
            rows,
        })
    }

    /// Count the codes that expired unverified since the last pass; returns how many.
    pub async fn count_expired(&self) -> Result<usize, ServiceError> {
        let now = self.core.now();
        let mut total = 0;
        loop {
            let n = self.core.write(move |s| s.count_expired(now)).await?;
            total += n;
            if n < crate::storage::stats::EXPIRY_BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Drop counts older than `stats.retention_days`, and fold the shards of quiet hours.
    pub async fn purge_stats(&self) -> Result<usize, ServiceError> {
        let now = self.core.now();
        let days = i64::from(self.core.settings.load().stats.retention_days);
        let before = (now - days * 24 * HOUR_MS).div_euclid(HOUR_MS);
        let quiet = now.div_euclid(HOUR_MS) - QUIET_HOURS;
        self.core
            .write_long(move |s| {
                s.compact_stats(quiet)?;
                s.purge_stats(before)
            })
            .await
    }
}
