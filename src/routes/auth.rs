//! Extractors: `TenantAuth` (bearer secret key), `AdminAuth` (admin token), `Owner` (either,
//! where the tenant and the admin share an operation); the body readers (16 KiB,
//! application/json, unknown fields and duplicates refused, errors as problem+json).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::crypto::secrets_equal;
use crate::domain::policy::{without_values, FieldError};
use crate::domain::tenant::Tenant;
use crate::service::ServiceError;

pub const BODY_LIMIT: usize = 16 * 1024;

type LocalFut<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ServiceError::Internal("app state missing".into()).into())
}

/// The bearer value, if the header is `Bearer <token>`. Two `Authorization` headers are
/// none: which one counted would depend on their order.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let mut all = req.headers().get_all(header::AUTHORIZATION);
    let v = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The tenant whose secret key is the bearer token.
pub struct TenantAuth(pub Tenant);

impl FromRequest for TenantAuth {
    type Error = ApiError;
    type Future = LocalFut<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let st = state(&req)?;
            // A missing header still costs one lookup, so timing does not tell it apart.
            let token = bearer(&req).unwrap_or_default();
            let tenant = st.services.tenants.authenticate(&token).await?;
            req.extensions_mut().insert(tenant.id.clone());
            Ok(TenantAuth(tenant))
        })
    }
}

/// Check the admin token (constant time); an empty configured token refuses everyone.
pub fn is_admin(req: &HttpRequest, st: &AppState) -> bool {
    let settings = st.services.core.settings.load();
    let configured = settings.admin.token.expose_secret();
    match bearer(req) {
        Some(t) if !configured.is_empty() => secrets_equal(t.as_bytes(), configured.as_bytes()),
        _ => false,
    }
}

/// An admin request.
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(match state(req) {
            Ok(st) if is_admin(req, &st) => Ok(AdminAuth),
            Ok(_) => Err(ServiceError::Unauthorized.into()),
            Err(e) => Err(e),
        })
    }
}

/// Who is asking — the client IP (trusted-proxy aware) and the request id — for the audit
/// (`routes::request_context`).
pub struct Ctx(pub crate::service::core::audit::RequestContext);

impl FromRequest for Ctx {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(state(req).map(|st| Ctx(super::request_context(req, &st))))
    }
}

impl std::ops::Deref for Ctx {
    type Target = crate::service::core::audit::RequestContext;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The admin twin's `{id}`.
#[derive(serde::Deserialize)]
struct TwinPath {
    id: String,
}

/// Where an operation a tenant does on itself (`/v1/tenant/…`) has the admin's twin: the
/// same path under `/v1/tenants/{id}` (API.md §8, §15.2). The route table registers both,
/// the API description documents the twin from the tenant's operation
/// (`routes::openapi`), and [`Owner`] tells them apart.
pub const ADMIN_TWIN: &str = "/v1/tenants/{id}";

/// The tenant a route acts on where the tenant and the admin share an operation
/// (templates, providers): on `/v1/tenant/…` the tenant whose secret key is the bearer
/// token; on the admin's twin (`ADMIN_TWIN/…`) the tenant `{id}`, with the admin token —
/// 401 before 404, as on every admin route.
pub struct Owner(pub Tenant);

impl FromRequest for Owner {
    type Error = ApiError;
    type Future = LocalFut<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let twin = req
            .match_pattern()
            .is_some_and(|p| p.starts_with(ADMIN_TWIN));
        if !twin {
            let auth = TenantAuth::from_request(req, payload);
            return Box::pin(async move { Ok(Owner(auth.await?.0)) });
        }
        let req = req.clone();
        Box::pin(async move {
            let st = state(&req)?;
            if !is_admin(&req, &st) {
                return Err(ServiceError::Unauthorized.into());
            }
            // Decoded as every path parameter is (`web::Path`).
            let id = web::Path::<TwinPath>::extract(&req)
                .await
                .map_err(|_| ServiceError::TenantNotFound)?;
            Ok(Owner(st.services.core.tenant(&id.id).await?))
        })
    }
}

/// When the request's body must have arrived: `server.request_timeout_seconds` after the
/// request began (API.md §6.21).
fn body_deadline(req: &HttpRequest) -> tokio::time::Instant {
    let timeout = state(req)
        .map(|st| {
            st.services
                .core
                .settings
                .load()
                .server
                .request_timeout_seconds
        })
        .unwrap_or(10);
    let started = req
        .extensions()
        .get::<super::RequestStart>()
        .map(|s| s.0)
        .unwrap_or_else(std::time::Instant::now);
    tokio::time::Instant::from_std(started) + std::time::Duration::from_secs(timeout)
}

/// Read the body, at most `limit` bytes (413 beyond), within the request timeout.
async fn read_body_up_to(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let deadline = body_deadline(req);
    tokio::time::timeout_at(deadline, read_body_inner(req, payload, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

async fn read_body_inner(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::TooLarge(limit));
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::BadBody(vec![FieldError::new("body", "could not be read")]))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// JSON. A `charset` parameter is ignored, as RFC 8259 §11 has it: JSON is UTF-8, and
/// bytes that are not fail as invalid JSON.
/// Whether the body is declared `application/json` (parameters aside), the one request
/// media type the API description declares (API.md §18.5): another JSON-based type
/// (`application/merge-patch+json`, `application/problem+json`) means rules this API does
/// not follow, and is 415.
fn is_json(req: &HttpRequest) -> bool {
    req.mime_type().ok().flatten().is_some_and(|m| {
        m.type_() == "application" && m.subtype() == "json" && m.suffix().is_none()
    })
}

/// The body is sent as it is: a `Content-Encoding` (gzip, br, …) is not decoded here, so
/// it is refused rather than read as JSON (RFC 9110 §8.4.1).
fn unencoded(req: &HttpRequest) -> Result<(), ApiError> {
    let identity = req
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .all(|c| c.trim().eq_ignore_ascii_case("identity"));
    if identity {
        Ok(())
    } else {
        Err(ApiError::MediaType(
            "application/json without Content-Encoding",
        ))
    }
}

/// Parse a JSON object into `T`, naming the field at fault. Every body is an object, and
/// so is every struct in it (`routes::strict`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let parsed = super::strict::object(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|t| de.end().map(|()| t));
    parsed.map_err(|inner| {
        let e = serde_path_to_error::Error::new(track.path(), inner);
        let path = e.path().to_string();
        let at = (path != "." && !path.is_empty()).then_some(path);
        // serde's message names types and fields; the value it quotes goes (`without_values`).
        let inner = e.into_inner();
        let (field, message) = match inner.classify() {
            // Where the text stops being JSON is not a field.
            // A number too large for any field (`1e400`) is JSON, and said of its field.
            serde_json::error::Category::Syntax
                if inner.to_string().starts_with("number out of range") =>
            {
                (
                    at.unwrap_or_else(|| "body".to_string()),
                    "is a number out of range".to_string(),
                )
            }
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ("body".to_string(), "is not valid JSON".to_string())
            }
            _ => {
                let message = without_values(&strip_position(&inner.to_string()));
                // A missing field is named as the field, not as the object it is missing from.
                match message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.strip_suffix('`'))
                {
                    Some(name) => (
                        at.map_or_else(|| name.to_string(), |at| format!("{at}.{name}")),
                        "is required".to_string(),
                    ),
                    None => (at.unwrap_or_else(|| "body".to_string()), message),
                }
            }
        };
        ApiError::BadBody(vec![FieldError::new(field, message)])
    })
}

/// serde's message without its trailing ` at line L column C` (the last one: a value
/// quoted before it may hold the words too).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A request's body, with the request it came with, read when the handler asks: after
/// authentication, so an unauthenticated request is a 401 whatever its body. (Actix polls
/// a handler's extractors together: one that read the body itself could answer 415 or 413
/// before the 401 was known.) Every reader keeps to `server.request_timeout_seconds`.
pub struct Body {
    /// The request: its headers, and who asks for the audit (`routes::request_context`).
    pub req: HttpRequest,
    payload: Payload,
}

impl FromRequest for Body {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Body {
            req: req.clone(),
            payload: payload.take(),
        }))
    }
}

impl Body {
    /// A JSON body: application/json, ≤16 KiB, strict fields.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        self.json_up_to(BODY_LIMIT).await
    }

    /// A JSON body of at most `limit` bytes (the template routes take larger ones).
    pub async fn json_up_to<T: DeserializeOwned>(self, limit: usize) -> Result<T, ApiError> {
        parse_json(&self.json_bytes_up_to(limit).await?)
    }

    /// The raw bytes of a JSON body (≤16 KiB), for handlers that need them as well as the
    /// value.
    pub async fn json_bytes(self) -> Result<web::Bytes, ApiError> {
        self.json_bytes_up_to(BODY_LIMIT).await
    }

    async fn json_bytes_up_to(self, limit: usize) -> Result<web::Bytes, ApiError> {
        if !is_json(&self.req) {
            return Err(ApiError::MediaType("application/json"));
        }
        unencoded(&self.req)?;
        self.bytes_up_to(limit).await
    }

    /// A route that takes no body: none, `null` or `{}`; anything else is refused (400, or
    /// 415 when it is not JSON) and the route does nothing.
    pub async fn none(self) -> Result<(), ApiError> {
        self.optional_json::<super::dto::NoBody>().await.map(drop)
    }

    /// An optional JSON body: an empty body, or `null`, is `None`.
    pub async fn optional_json<T: DeserializeOwned>(self) -> Result<Option<T>, ApiError> {
        let req = self.req.clone();
        let bytes = self.bytes_up_to(BODY_LIMIT).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !is_json(&req) {
            return Err(ApiError::MediaType("application/json"));
        }
        unencoded(&req)?;
        // JSON `null` is no body too.
        if bytes.trim_ascii() == b"null" {
            return Ok(None);
        }
        parse_json(&bytes).map(Some)
    }

    /// The body as it came, at most `limit` bytes (413 beyond), whatever its media type.
    pub async fn bytes_up_to(mut self, limit: usize) -> Result<web::Bytes, ApiError> {
        read_body_up_to(&self.req, &mut self.payload, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        password: String,
        port: Option<u16>,
        mode: Option<Mode>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Starttls,
    }

    #[test]
    fn a_refused_value_is_never_repeated_in_the_answer() {
        for (body, field, kept) in [
            (
                r#"{"password": 1234567}"#,
                "password",
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"password": "x", "port": "S3cret"}"#,
                "port",
                "invalid type: string, expected u16",
            ),
            (
                r#"{"password": "x", "port": 99999}"#,
                "port",
                "invalid value: integer, expected u16",
            ),
            (
                r#"{"password": "x", "mode": "S3cret"}"#,
                "mode",
                "unknown variant, expected `starttls`",
            ),
            // Values made to look like the message around them.
            (
                r#"{"password": "x", "port": "S3cret at line 1"}"#,
                "port",
                "invalid type: string, expected u16",
            ),
            (
                r#"{"password": "x", "port": "x, expected S3cret"}"#,
                "port",
                "invalid type: string, expected u16",
            ),
            (
                r#"{"password": "x", "mode": "x`, expected S3cret"}"#,
                "mode",
                "unknown variant, expected `starttls`",
            ),
        ] {
            let Err(ApiError::BadBody(errors)) = parse_json::<Body>(body.as_bytes()) else {
                panic!("{body} was taken");
            };
            assert_eq!(errors.len(), 1, "{body}");
            assert_eq!(errors[0].field, field, "{body}");
            assert_eq!(errors[0].message, kept, "{body}");
        }
    }

    #[test]
    fn a_number_too_large_to_read_is_said_of_its_field_and_broken_json_of_the_body() {
        for (body, field, said) in [
            (
                r#"{"password": "x", "port": 1e400}"#,
                "port",
                "is a number out of range",
            ),
            (
                r#"{"password": "x", "port": -1e400}"#,
                "port",
                "is a number out of range",
            ),
            (
                r#"{"password": "x", "port": 1"#,
                "body",
                "is not valid JSON",
            ),
            (
                r#"{"password": "x" "port": 1}"#,
                "body",
                "is not valid JSON",
            ),
        ] {
            let Err(ApiError::BadBody(errors)) = parse_json::<Body>(body.as_bytes()) else {
                panic!("{body} was taken");
            };
            assert_eq!(
                (errors[0].field.as_str(), errors[0].message.as_str()),
                (field, said),
                "{body}"
            );
        }
    }
}
