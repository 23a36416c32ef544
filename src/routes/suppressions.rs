//! A tenant's suppression list (API.md §16.1): a page of it, an entry added by hand, an
//! entry removed. Mints to a listed recipient answer 422 `recipient_suppressed`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, Ctx, TenantAuth};
use super::dto::{problems, Problem};
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::clock::rfc3339;
use crate::domain::policy::FieldError;
use crate::domain::recipient::Recipient;
use crate::domain::suppression::{Cursor, Suppression, SuppressionReason};
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Serialize, ToSchema)]
pub struct SuppressionOut {
    /// The canonical address or E.164 number.
    pub recipient: String,
    /// `hard_bounce`, `complaint` or `manual`
    pub reason: String,
    /// `api`, or the provider whose event added it.
    pub source: String,
    pub created_at: String,
}

impl SuppressionOut {
    fn of(s: &Suppression) -> Self {
        SuppressionOut {
            recipient: s.recipient.clone(),
            reason: s.reason.as_str().into(),
            source: s.source.clone(),
            created_at: rfc3339(s.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SuppressionsOut {
    /// Newest first; at most 100.
    pub suppressions: Vec<SuppressionOut>,
    /// Give it back as `?cursor=` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionBody {
    /// An email address or an E.164 number.
    #[schema(min_length = 1, max_length = 320)]
    recipient: String,
    /// `manual` (the default; bounces and complaints come from provider events)
    #[schema(pattern = "^manual$")]
    reason: Option<String>,
}

#[utoipa::path(get, path = "/v1/tenant/suppressions", tag = "deliverability",
    description = "The tenant's suppression list, newest first, 100 a page.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page", body = SuppressionsOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 422, description = "unprocessable: `cursor` is not in the form this server gives out", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn list(t: TenantAuth, st: State, q: web::Query<PageQuery>) -> ApiResult {
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
            // Any string fits the description: a rule refuses it (422, as Schemathesis holds).
            ServiceError::rule(
                "cursor",
                "is not in the form this server gives out (give back a next_cursor as it came)",
            )
        })?),
    };
    let page = st.services.tenants.suppressions(&t.0.id, after).await?;
    Ok(json(
        HttpResponse::Ok(),
        &SuppressionsOut {
            suppressions: page.entries.iter().map(SuppressionOut::of).collect(),
            next_cursor: page.next_cursor,
        },
    ))
}

#[utoipa::path(post, path = "/v1/tenant/suppressions", tag = "deliverability",
    description = "Add a recipient by hand: mints to it answer 422 `recipient_suppressed` and send nothing (unless the tenant set `\"suppression\": \"off\"`). A recipient already listed keeps its entry (200).",
    request_body = SuppressionBody,
    responses(
        (status = 201, description = "Added", body = SuppressionOut),
        (status = 200, description = "Already listed: the entry as it was", body = SuppressionOut),
        (status = 400, response = problems::InvalidRequest),
    ),
    security(("secret_key" = [])))]
pub async fn add(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let ctx = super::request_context(&body.req, &st);
    let b: SuppressionBody = body.json().await?;
    let recipient = Recipient::parse_either(&b.recipient, "recipient");
    // Only `manual`: bounces and complaints come from provider events.
    let reason = match b.reason.as_deref().map(SuppressionReason::parse) {
        None | Some(Some(SuppressionReason::Manual)) => Ok(()),
        Some(_) => Err(FieldError::new(
            "reason",
            "must be \"manual\" (bounces and complaints come from provider events)",
        )),
    };
    // Both fields' errors in one answer.
    let recipient = match (recipient, reason) {
        (Ok(r), Ok(())) => r,
        (r, reason) => {
            let errors = [r.err(), reason.err()].into_iter().flatten().collect();
            return Err(ServiceError::Invalid(errors).into());
        }
    };
    let tenants = &st.services.tenants;
    let (entry, created) = tenants.suppress_manually(&t.0.id, &recipient, &ctx).await?;
    let status = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(json(status, &SuppressionOut::of(&entry)))
}

#[utoipa::path(delete, path = "/v1/tenant/suppressions/{recipient}", tag = "deliverability",
    description = "Remove a recipient from the list: mints to it send again.",
    params(("recipient" = String, Path, description = "The address or number as listed (or as given: it is compared in its canonical form), percent-encoded. The pattern leaves `%` out of an address (tools that unquote a value before quoting it would change it); the server still takes one sent as `%25`.")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = problems::InvalidRequest),
        (status = 404, description = "suppression_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn remove(t: TenantAuth, st: State, ctx: Ctx, path: web::Path<String>) -> ApiResult {
    let recipient = Recipient::parse_either(&path, "recipient").map_err(ServiceError::from)?;
    st.services
        .tenants
        .unsuppress(&t.0.id, &recipient, &ctx)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
