//! DKIM per tenant (API.md §16.3): make a key and read the TXT record to publish, read it
//! again, remove every key.

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, TenantAuth};
use super::dto::{problems, Problem};
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::clock::rfc3339;
use crate::domain::dkim::{shown_key, DkimAlgorithm, DkimKey};
use crate::service::tenants::dkim::NewDkimKey;
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DkimBody {
    /// The domain the key signs for: the sender's domain or a parent of it
    /// (`acme.example` signs mail from `no-reply@acme.example` and `…@mail.acme.example`).
    domain: String,
    /// The DNS selector (default `otpmint1`, then `otpmint2`, … for a second key).
    selector: Option<String>,
    /// `ed25519` or `rsa2048`
    #[schema(pattern = "^(ed25519|rsa2048)$")]
    algorithm: String,
}

/// A key and the DNS TXT record to publish for it.
#[derive(Serialize, ToSchema)]
pub struct DkimRecordOut {
    pub domain: String,
    pub selector: String,
    /// `{selector}._domainkey.{domain}`
    pub name: String,
    /// `v=DKIM1; k=…; p=…`
    pub value: String,
    /// `ed25519` or `rsa2048`
    pub algorithm: String,
    pub created_at: String,
}

impl DkimRecordOut {
    fn of(k: &DkimKey) -> Self {
        DkimRecordOut {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            name: k.record_name(),
            value: k.record_value(),
            algorithm: k.algorithm.as_str().into(),
            created_at: rfc3339(k.created_at),
        }
    }
}

/// The key that signs, its record, and every key the tenant holds (oldest first).
#[derive(Serialize, ToSchema)]
pub struct DkimOut {
    #[serde(flatten)]
    pub signing: DkimRecordOut,
    pub keys: Vec<DkimRecordOut>,
}

#[utoipa::path(post, path = "/v1/tenant/dkim", tag = "deliverability",
    description = "Make a DKIM key pair (the private key sealed, never shown) and answer the TXT record to publish. While a key exists, every SMTP message whose `from` domain equals or is a subdomain of `domain` is signed (relaxed/relaxed) by the newest key; a second key with another selector rotates.",
    request_body = DkimBody,
    responses(
        (status = 201, description = "The key's record", body = DkimRecordOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 409, description = "conflict: a key with this selector exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unprocessable: the tenant holds the most keys it may", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn create_dkim(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let b: DkimBody = body.json().await?;
    let algorithm = DkimAlgorithm::parse(&b.algorithm)
        .ok_or_else(|| ServiceError::field("algorithm", "must be \"ed25519\" or \"rsa2048\""))?;
    let key = st
        .services
        .tenants
        .create_dkim_key(
            &t.0.id,
            NewDkimKey {
                domain: b.domain,
                selector: b.selector,
                algorithm,
            },
        )
        .await?;
    Ok(json(HttpResponse::Created(), &DkimRecordOut::of(&key)))
}

#[utoipa::path(get, path = "/v1/tenant/dkim", tag = "deliverability",
    description = "The signing key's record (the newest the sender's domain aligns with, else the newest), and every key the tenant holds.",
    responses(
        (status = 200, body = DkimOut),
        (status = 404, description = "dkim_not_found: the tenant has no DKIM key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn get_dkim(t: TenantAuth, st: State) -> ApiResult {
    let tenant = st.services.core.tenant(t.0.id.as_str()).await?;
    // The key that signs the tenant's mail (the newest its sender aligns with), else the
    // newest.
    let from = tenant.sender().and_then(crate::domain::dkim::sender_domain);
    let signing = shown_key(&tenant.dkim, from.as_deref()).ok_or(ServiceError::DkimNotFound)?;
    Ok(json(
        HttpResponse::Ok(),
        &DkimOut {
            signing: DkimRecordOut::of(signing),
            keys: tenant.dkim.iter().map(DkimRecordOut::of).collect(),
        },
    ))
}

#[utoipa::path(delete, path = "/v1/tenant/dkim", tag = "deliverability",
    description = "Remove every DKIM key: messages are no longer signed.",
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "dkim_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn delete_dkim(t: TenantAuth, st: State) -> ApiResult {
    st.services.tenants.delete_dkim_keys(&t.0.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct SpfOut {
    pub found: bool,
    pub record: Option<String>,
    /// Whether the record includes the relay's or provider's SPF domain (absent when
    /// otpmint does not know which that is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub includes_relay: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct DkimCheckOut {
    pub found: bool,
    /// The published key is the tenant's signing key.
    pub matches_key: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DmarcOut {
    pub found: bool,
    /// The record's `p=` as published (`none`, `quarantine` or `reject` in a well-formed
    /// record).
    pub policy: Option<String>,
    /// otpmint's DKIM signature aligns with the sender's domain under the record's `adkim`.
    pub aligned: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DomainCheckOut {
    /// The sender's domain checked.
    pub domain: String,
    pub spf: SpfOut,
    pub dkim: DkimCheckOut,
    pub dmarc: DmarcOut,
    /// One plain sentence per problem found (empty: nothing to do).
    pub advice: Vec<String>,
}

impl From<crate::service::tenants::domain_check::DomainCheck> for DomainCheckOut {
    fn from(c: crate::service::tenants::domain_check::DomainCheck) -> Self {
        DomainCheckOut {
            domain: c.domain,
            spf: SpfOut {
                found: c.spf.found,
                record: c.spf.record,
                includes_relay: c.spf.includes_relay,
            },
            dkim: DkimCheckOut {
                found: c.dkim.found,
                matches_key: c.dkim.matches_key,
            },
            dmarc: DmarcOut {
                found: c.dmarc.found,
                policy: c.dmarc.policy,
                aligned: c.dmarc.aligned,
            },
            advice: c.advice,
        }
    }
}

#[utoipa::path(get, path = "/v1/tenant/domain-check", tag = "deliverability",
    description = "Look up the sender domain's SPF, DKIM (the stored selector) and DMARC records through the system resolver (or `dns.resolver`) and answer what is found, with one plain sentence of advice per problem. Ends within 5 s.",
    responses(
        (status = 200, body = DomainCheckOut),
        (status = 422, description = "unprocessable: the tenant has no sender address", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn domain_check(t: TenantAuth, st: State) -> ApiResult {
    let c = st.services.tenants.check_domain(t.0.id.as_str()).await?;
    Ok(json(
        super::respond::no_store(HttpResponse::Ok()),
        &DomainCheckOut::from(c),
    ))
}
