//! Statistics (API.md §13.4): a tenant's own (`/v1/tenant/stats`), one tenant's for the admin
//! (`/v1/tenants/{id}/stats`) and all tenants' (`/v1/stats`); the CLI's `stats` reads the
//! same request and answer.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AdminAuth, TenantAuth};
use super::dto::problems;
use super::error::ApiError;
use super::respond::json;
use super::{AppState, State};
use crate::clock::rfc3339;
use crate::domain::keys::TenantId;
use crate::domain::stats::Dim;
use crate::service::admin::stats::{Granularity, StatsAnswer, StatsRequest};
use crate::service::ServiceError;

use super::respond::{is_date_only, parse_time};

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// RFC 3339 or YYYY-MM-DD (UTC); default: 24 hours (by hour) or 7 days (by day) before `to`
    from: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (UTC); default: now. The period holding it is included.
    to: Option<String>,
    /// `hour` or `day` (default)
    granularity: Option<String>,
    /// `purpose`, `locale`, `channel` or `domain` (the recipient's)
    group_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SecondsToVerifyOut {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct StatsRowOut {
    /// The period's start, RFC 3339 (UTC).
    pub period: String,
    /// The group's value (with `group_by`; also under the dimension's own name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub named_group: BTreeMap<String, String>,
    /// Codes minted (test mints not included).
    pub minted: i64,
    /// Messages the relay accepted (a resend's too).
    pub sent: i64,
    /// Messages given up on.
    pub failed: i64,
    pub verified: i64,
    /// Codes that expired without a verify.
    pub expired_unverified: i64,
    /// Test mints (and resends) to the test inbox.
    pub test: i64,
    /// Mints the SMS fraud guard refused (API.md §17.1); not counted in `minted`.
    pub blocked: i64,
    /// The refusals by reason: `country_not_allowed`, `number_not_allowed`, `velocity`.
    pub blocked_by_reason: BTreeMap<String, i64>,
    /// Hard bounces providers reported (API.md §16.2), under the hour of the code's mint.
    pub bounced: i64,
    /// Spam complaints providers reported.
    pub complained: i64,
    /// verified / minted (null before any mint).
    pub conversion_rate: Option<f64>,
    /// Seconds from mint to verify (interpolated within buckets; null before any verify).
    pub seconds_to_verify: SecondsToVerifyOut,
}

#[derive(Serialize, ToSchema)]
pub struct StatsOut {
    pub from: String,
    pub to: String,
    pub granularity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// Periods (and groups) with any count, in order.
    pub rows: Vec<StatsRowOut>,
}

/// Round to 3 decimals (rates) or 1 (seconds).
fn round(v: Option<f64>, places: i32) -> Option<f64> {
    let f = 10f64.powi(places);
    v.map(|x| (x * f).round() / f)
}

impl From<StatsAnswer> for StatsOut {
    fn from(a: StatsAnswer) -> Self {
        let dim = a.group.map(|d| d.as_str().to_string());
        StatsOut {
            from: rfc3339(a.from),
            to: rfc3339(a.to),
            granularity: match a.granularity {
                Granularity::Hour => "hour",
                Granularity::Day => "day",
            }
            .into(),
            rows: a
                .rows
                .into_iter()
                .map(|r| {
                    let c = &r.counts;
                    StatsRowOut {
                        period: rfc3339(r.hour * crate::domain::stats::HOUR_MS),
                        named_group: match (&dim, &r.group) {
                            (Some(d), Some(g)) => BTreeMap::from([(d.clone(), g.clone())]),
                            _ => BTreeMap::new(),
                        },
                        group: r.group.clone(),
                        minted: c.minted,
                        sent: c.sent,
                        failed: c.failed,
                        verified: c.verified,
                        expired_unverified: c.expired_unverified,
                        test: c.test,
                        blocked: c.blocked.iter().sum(),
                        bounced: c.bounced,
                        complained: c.complained,
                        blocked_by_reason: crate::domain::stats::BlockReason::ALL
                            .iter()
                            .zip(c.blocked.iter())
                            .map(|(r, n)| (r.as_str().to_string(), *n))
                            .collect(),
                        // Exactly verified / minted (API.md §13.4), not rounded.
                        conversion_rate: c.conversion_rate(),
                        seconds_to_verify: SecondsToVerifyOut {
                            p50: round(c.seconds_to_verify(0.5), 1),
                            p90: round(c.seconds_to_verify(0.9), 1),
                        },
                    }
                })
                .collect(),
            group_by: dim,
        }
    }
}

/// A statistics request from its parameters (the CLI's too).
pub fn stats_request(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Option<&str>,
    group_by: Option<&str>,
) -> Result<StatsRequest, ServiceError> {
    let granularity = match granularity {
        None => Granularity::Day,
        Some(g) => Granularity::parse(g)
            .ok_or_else(|| ServiceError::field("granularity", "must be \"hour\" or \"day\""))?,
    };
    let group = match group_by {
        None => None,
        Some(g) => Some(Dim::parse_group(g).ok_or_else(|| {
            ServiceError::field(
                "group_by",
                "must be \"purpose\", \"locale\", \"channel\" or \"domain\"",
            )
        })?),
    };
    Ok(StatsRequest {
        from: from.map(|s| parse_time("from", s)).transpose()?,
        // A date alone means its whole day: `to` is that day's last millisecond.
        to: to
            .map(|s| {
                let at = parse_time("to", s)?;
                Ok::<_, ServiceError>(if is_date_only(s) {
                    at + 86_400_000 - 1
                } else {
                    at
                })
            })
            .transpose()?,
        granularity,
        group,
    })
}

async fn stats_of(st: &AppState, tenant: Option<TenantId>, q: &StatsParams) -> ApiResult {
    let r = stats_request(
        q.from.as_deref(),
        q.to.as_deref(),
        q.granularity.as_deref(),
        q.group_by.as_deref(),
    )?;
    let answer = st.services.admin.stats(tenant, r).await?;
    Ok(json(HttpResponse::Ok(), &StatsOut::from(answer)))
}

#[utoipa::path(get, path = "/v1/tenant/stats", tag = "statistics",
    description = "The calling tenant's counts by period of mint (API.md §13.4), from rollups kept in the transactions that change a code: exact across instances. A range over 400 days, or an answer over 10,000 rows, is a 400.",
    params(StatsParams),
    responses(
        (status = 200, description = "The counts", body = StatsOut),
        (status = 400, response = problems::InvalidRequest),
    ),
    security(("secret_key" = [])))]
pub async fn own_stats(t: TenantAuth, st: State, q: web::Query<StatsParams>) -> ApiResult {
    stats_of(&st, Some(t.0.id.clone()), &q).await
}

#[utoipa::path(get, path = "/v1/tenants/{id}/stats", tag = "statistics",
    description = "A tenant's counts, for the admin (as `GET /v1/tenant/stats`).",
    params(("id" = String, Path, description = "Tenant id, `tnt_…`"), StatsParams),
    responses(
        (status = 200, description = "The counts", body = StatsOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn tenant_stats(
    _: AdminAuth,
    st: State,
    id: web::Path<String>,
    q: web::Query<StatsParams>,
) -> ApiResult {
    let tenant = st.services.core.tenant(&id).await?;
    stats_of(&st, Some(tenant.id), &q).await
}

#[utoipa::path(get, path = "/v1/stats", tag = "statistics",
    description = "Every tenant's counts together, for the admin (as `GET /v1/tenant/stats`).",
    params(StatsParams),
    responses(
        (status = 200, description = "The counts", body = StatsOut),
        (status = 400, response = problems::InvalidRequest),
    ),
    security(("admin_token" = [])))]
pub async fn all_stats(_: AdminAuth, st: State, q: web::Query<StatsParams>) -> ApiResult {
    stats_of(&st, None, &q).await
}
