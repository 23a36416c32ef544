//! `otpmint stats`: a tenant's (or every tenant's) counts, as `GET /v1/tenant/stats` answers
//! them (API.md §13.4), read from the database directly.

use clap::Args;

use super::{print_columns, service_msg, CliError};
use crate::routes::stats::{stats_request, StatsOut};
use crate::service::Services;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The tenant (default: every tenant together)
    #[arg(long)]
    tenant: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (UTC); default: 7 days (by day) or 24 hours (by hour) ago
    #[arg(long)]
    from: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (UTC); default: now
    #[arg(long)]
    to: Option<String>,
    /// hour | day
    #[arg(long, default_value = "day")]
    granularity: String,
    /// purpose | locale | channel | domain
    #[arg(long)]
    group_by: Option<String>,
    /// Print the JSON the API answers
    #[arg(long)]
    json: bool,
}

pub(super) async fn stats(a: StatsArgs, s: Services) -> Result<(), CliError> {
    let tenant = match &a.tenant {
        Some(id) => Some(s.core.tenant(id).await.map_err(service_msg)?.id),
        None => None,
    };
    let r = stats_request(
        a.from.as_deref(),
        a.to.as_deref(),
        Some(&a.granularity),
        a.group_by.as_deref(),
    )
    .map_err(service_msg)?;
    let out = StatsOut::from(s.admin.stats(tenant, r).await.map_err(service_msg)?);
    if a.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| CliError(e.to_string()))?
        )?;
        return Ok(());
    }
    let header = [
        "PERIOD", "GROUP", "MINTED", "SENT", "FAILED", "VERIFIED", "EXPIRED", "TEST", "CONV",
        "P50 S", "P90 S",
    ];
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| x.to_string());
    let rows: Vec<Vec<String>> = out
        .rows
        .iter()
        .map(|r| {
            vec![
                r.period.clone(),
                r.group.clone().unwrap_or_else(|| "-".into()),
                r.minted.to_string(),
                r.sent.to_string(),
                r.failed.to_string(),
                r.verified.to_string(),
                r.expired_unverified.to_string(),
                r.test.to_string(),
                // A table for people: three places (the JSON has it exactly).
                r.conversion_rate
                    .map_or("-".to_string(), |x| format!("{:.3}", x)),
                opt(r.seconds_to_verify.p50),
                opt(r.seconds_to_verify.p90),
            ]
        })
        .collect();
    print_columns(&header, &rows)?;
    say!("({} to {}, by {})", out.from, out.to, out.granularity)?;
    Ok(())
}
