//! HTTP only: the whole route table in one place, plus request ids and access logs.

pub mod auth;
pub mod branding;
pub mod claims;
pub mod codes;
pub mod compat;
pub mod dkim;
pub mod dto;
pub mod error;
pub mod governor;
pub mod hosted;
mod hosted_page;
mod idempotent;
pub mod links;
pub mod openapi;
pub mod ops;
mod page_kit;
pub mod provider_events;
pub mod providers;
pub(crate) mod respond;
pub mod stats;
pub(crate) mod strict;
pub mod suppressions;
pub mod templates;
pub mod tenant_bodies;
pub mod tenants;
pub mod test_mode;
pub mod transport;
mod unread_body;
pub mod webhooks;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpResponse};

use crate::domain::keys::TenantId;
use crate::service::Services;
use error::ApiError;

/// What a handler takes to reach the services.
pub type State = web::Data<AppState>;

/// Shared state of every worker.
pub struct AppState {
    pub services: Services,
    pub proxies: crate::client_ip::TrustedProxies,
}

/// The client's address (trusted-proxy aware); none without a peer address.
pub fn client_addr(req: &actix_web::HttpRequest, st: &AppState) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|p| {
        let xff = crate::client_ip::forwarded_for(req.headers());
        st.proxies.client_ip(p.ip(), xff.as_deref())
    })
}

/// Who is asking: the client IP (trusted-proxy aware) and the request id, for the audit.
pub fn request_context(
    req: &actix_web::HttpRequest,
    st: &AppState,
) -> crate::service::core::audit::RequestContext {
    let client_ip = client_addr(req, st)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    crate::service::core::audit::RequestContext {
        client_ip,
        request_id,
    }
}

pub const REQUEST_ID: &str = "x-request-id";

/// When the request began (its body must arrive within `server.request_timeout_seconds`).
#[derive(Clone, Copy)]
pub struct RequestStart(pub Instant);

/// A request id: the client's (API.md §1: echoed) if it is visible ASCII of at most
/// [`REQUEST_ID_MAX`] characters, else a fresh one. No space (a plain log line could not
/// tell it from the next field) and no `@` (an address in it would reach every log line
/// unmasked, API.md §6.11).
#[derive(Clone)]
pub struct RequestId(pub String);

/// The longest client request id kept (a W3C `traceparent` is 55, a UUID 36).
const REQUEST_ID_MAX: usize = 200;

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= REQUEST_ID_MAX
                && s.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
        })
        .map(str::to_string)
        .unwrap_or_else(|| crate::domain::keys::random_id(20))
}

/// Request id in and out, and one access-log line per request (route pattern, never the
/// raw path, so shareable keys in `/v1/otp/{key}` stay out of the logs).
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(RequestStart(start));
    // A fixed set: actix takes any token as a method (API.md §6.27).
    let method = crate::metrics::method_label(req.method());
    // Every line logged while this request is handled — on async workers, the blocking pool
    // or a hashing thread — carries its id.
    let span = tracing::info_span!("request", request_id = %id);
    let (req, body) = unread_body::share(req);
    let mut res = tracing::Instrument::instrument(next.call(req), span).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let tenant = res
        .request()
        .extensions()
        .get::<TenantId>()
        .map(|t| t.as_str().to_string())
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
    crate::metrics::inc(
        |m| &m.http_requests,
        &[route.as_str(), method, res.status().as_str()],
    );
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        tenant_id = %tenant,
        "request"
    );
    Ok(unread_body::keep_if_unread(res, body))
}

/// 405 with `Allow`: the methods the matched route answers (RFC 9110 §15.5.6). The pages
/// and links are not there at all while `server.public_url` is empty (their GET answers 404):
/// so is every other method on them.
async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let pattern = req.match_pattern().unwrap_or_default();
    let page = ["/l/", "/h/", "/pages/"]
        .iter()
        .any(|p| pattern.starts_with(p));
    let links_off = req
        .app_data::<State>()
        .is_some_and(|st| st.services.codes.links_base().is_none());
    if page && links_off {
        return ApiError::NotFound.error_response();
    }
    let mut res = ApiError::Method.error_response();
    if let Some(allow) = allow_of(&pattern) {
        if let Ok(v) = HeaderValue::from_str(&allow) {
            res.headers_mut().insert(actix_web::http::header::ALLOW, v);
        }
    }
    res
}

/// The routes outside the API description — pages, documents and OtpMint's routes — and the
/// operations routes, which answer HEAD beside the GET it describes, with the methods they
/// answer.
const PAGES: [(&str, &str); 16] = [
    ("/otp", "POST"),
    ("/verify-otp", "POST"),
    ("/reg_secretkey", "POST"),
    ("/l/{token}", "GET, HEAD, POST"),
    ("/pages/style.css", "GET, HEAD"),
    ("/pages/icon.svg", "GET, HEAD"),
    ("/pages/brand/{tenant}", "GET, HEAD"),
    ("/pages/logo/{tenant}", "GET, HEAD"),
    ("/h/{id}", "GET, HEAD"),
    ("/h/{id}/send", "GET, HEAD, POST"),
    ("/h/{id}/verify", "GET, HEAD, POST"),
    ("/", "GET, HEAD"),
    ("/openapi.json", "GET, HEAD"),
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
];

/// The methods a route pattern answers: the API's from its OpenAPI description (one
/// source with the routes' documentation; a test holds the two together), the pages'
/// from [`PAGES`].
fn allow_of(pattern: &str) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use utoipa::OpenApi;
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut t: HashMap<String, String> = PAGES
                .iter()
                .map(|(p, m)| (p.to_string(), m.to_string()))
                .collect();
            for (path, item) in openapi::ApiDoc::openapi().paths.paths {
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    // HEAD is answered wherever GET is (RFC 9110 §9.3.2), undocumented
                    // as HTTP implies it.
                    ("HEAD", item.get.is_some() || item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, on)| on.then_some(m))
                .collect();
                t.entry(path).or_insert_with(|| methods.join(", "));
            }
            t
        })
        .get(pattern)
        .cloned()
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// GET, and HEAD answered as GET wherever GET is (RFC 9110 §9.1; health checkers and
/// link scanners send it, API.md §17.8): actix sends the head without the body.
fn get() -> actix_web::Route {
    use actix_web::guard;
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The route table.
pub fn configure(cfg: &mut web::ServiceConfig, compat: bool) {
    let r =
        |path: &str| web::resource(path.to_string()).default_service(web::to(method_not_allowed));
    // The router tries resources in this order, matching each `{…}` pattern with a regex:
    // the hot paths (mint and verify, native and compat) come first, before any pattern.
    // `/v1/otp/verify` must come before `/v1/otp/{key}`. A provider's events come next: they
    // arrive in bursts beside the mints (each pattern tried before a match costs ~1 µs).
    cfg.service(r("/v1/otp").route(web::post().to(codes::mint)))
        .service(r("/v1/otp/verify").route(web::post().to(codes::verify)));
    if compat {
        cfg.service(r("/otp").route(web::post().to(compat::otp)))
            .service(r("/verify-otp").route(web::post().to(compat::verify_otp)))
            .service(r("/reg_secretkey").route(web::post().to(compat::reg_secretkey)));
    }
    cfg.service(
        r("/v1/events/{provider}/{tenant_id}").route(web::post().to(provider_events::receive)),
    );
    cfg.service(
        r("/v1/otp/{key}")
            .route(get().to(codes::otp_status))
            .route(web::delete().to(codes::otp_cancel)),
    )
    .service(r("/v1/otp/{key}/resend").route(web::post().to(codes::resend)))
    .service(r("/v1/otp/{key}/claim").route(web::post().to(claims::claim_code)))
    .service(
        r("/l/{token}")
            .route(get().to(links::show))
            .route(web::post().to(links::confirm)),
    )
    .service(r("/pages/style.css").route(get().to(links::style)))
    .service(r("/pages/icon.svg").route(get().to(links::icon)))
    .service(r("/pages/brand/{tenant}").route(get().to(branding::brand_css)))
    .service(r("/pages/logo/{tenant}").route(get().to(branding::logo)))
    .service(r("/h/{id}").route(get().to(hosted::show)))
    .service(
        r("/h/{id}/send")
            .route(get().to(hosted::to_page))
            .route(web::post().to(hosted::send)),
    )
    .service(
        r("/h/{id}/verify")
            .route(get().to(hosted::to_page))
            .route(web::post().to(hosted::verify)),
    )
    .service(r("/v1/tenant/hosted-sessions").route(web::post().to(hosted::open)))
    .service(r("/v1/tenant/hosted-sessions/{id}").route(get().to(hosted::outcome)))
    .service(
        r("/v1/tenant/hosted-sessions/{id}/claim").route(web::post().to(claims::claim_session)),
    )
    .service(
        r("/v1/tenant/branding/logo")
            .route(web::put().to(branding::put_logo))
            .route(web::delete().to(branding::delete_logo)),
    )
    .service(r("/").route(get().to(ops::index)))
    .service(r("/healthz").route(get().to(ops::healthz)))
    .service(r("/readyz").route(get().to(ops::readyz)))
    .service(r("/metrics").route(get().to(ops::metrics)))
    .service(r("/openapi.json").route(get().to(ops::openapi)))
    .service(
        r("/v1/tenants")
            .route(web::post().to(tenants::create_tenant))
            .route(get().to(tenants::list_tenants)),
    )
    .service(
        r("/v1/tenants/{id}")
            .route(get().to(tenants::get_tenant))
            .route(web::patch().to(tenants::patch_tenant))
            .route(web::delete().to(tenants::delete_tenant)),
    )
    .service(
        r("/v1/tenants/{id}/rotate-secret").route(web::post().to(tenants::rotate_tenant_secret)),
    )
    .service(
        r("/v1/tenant")
            .route(get().to(tenants::get_self))
            .route(web::patch().to(tenants::patch_self)),
    )
    .service(r("/v1/tenant/audit").route(get().to(codes::audit)))
    .service(
        r("/v1/tenant/test-recipients")
            .route(web::put().to(test_mode::put_test_recipients))
            .route(get().to(test_mode::get_test_recipients)),
    )
    .service(r("/v1/tenant/test-inbox").route(get().to(test_mode::test_inbox)))
    .service(
        r("/v1/tenant/suppressions")
            .route(get().to(suppressions::list))
            .route(web::post().to(suppressions::add)),
    )
    .service(r("/v1/tenant/suppressions/{recipient}").route(web::delete().to(suppressions::remove)))
    .service(
        r("/v1/tenant/dkim")
            .route(web::post().to(dkim::create_dkim))
            .route(get().to(dkim::get_dkim))
            .route(web::delete().to(dkim::delete_dkim)),
    )
    .service(r("/v1/tenant/domain-check").route(get().to(dkim::domain_check)))
    .service(r("/v1/tenant/stats").route(get().to(stats::own_stats)))
    .service(r("/v1/tenants/{id}/stats").route(get().to(stats::tenant_stats)))
    .service(r("/v1/stats").route(get().to(stats::all_stats)))
    .service(
        r("/v1/tenant/webhook")
            .route(web::put().to(webhooks::put_webhook))
            .route(get().to(webhooks::get_webhook))
            .route(web::delete().to(webhooks::delete_webhook)),
    )
    .service(
        r("/v1/tenant/transport/http")
            .route(web::put().to(transport::put_http_transport))
            .route(get().to(transport::get_http_transport))
            .route(web::delete().to(transport::delete_http_transport)),
    )
    .service(
        r("/v1/tenant/transport/http/rotate-secret")
            .route(web::post().to(transport::rotate_http_transport_secret)),
    )
    .service(
        r("/v1/tenant/webhook/rotate-secret")
            .route(web::post().to(webhooks::rotate_webhook_secret)),
    )
    .service(r("/v1/tenant/webhook/test").route(web::post().to(webhooks::test_webhook)))
    .service(r("/v1/tenant/webhook/deliveries").route(get().to(webhooks::webhook_deliveries)));
    // What a tenant does on itself and the admin does for it (`auth::Owner`): each route
    // under `/v1/tenant` and under the admin's twin, `/v1/tenants/{id}`.
    for base in ["/v1/tenant", auth::ADMIN_TWIN] {
        let at = |rest: &str| r(&format!("{base}{rest}"));
        cfg.service(at("/templates").route(get().to(templates::list_templates)))
            .service(at("/templates/preview").route(web::post().to(templates::preview_template)))
            .service(
                at("/templates/{locale}")
                    .route(web::put().to(templates::put_template))
                    .route(web::delete().to(templates::delete_template)),
            )
            .service(
                at("/providers/{channel}")
                    .route(web::put().to(providers::put_provider))
                    .route(get().to(providers::get_provider))
                    .route(web::delete().to(providers::delete_provider)),
            )
            .service(
                at("/providers/{channel}/test").route(web::post().to(providers::test_provider)),
            );
    }
}

/// On OtpMint's routes, a per-IP 429 reads as OtpMint's text, not problem+json.
async fn compat_limit_body(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let compat = matches!(req.path(), "/reg_secretkey" | "/otp" | "/verify-otp");
    let res = next.call(req).await?;
    if compat && res.status() == actix_web::http::StatusCode::TOO_MANY_REQUESTS {
        let retry = res
            .headers()
            .get(actix_web::http::header::RETRY_AFTER)
            .cloned();
        let (req, _) = res.into_parts();
        let mut b = HttpResponse::TooManyRequests();
        b.content_type("text/html; charset=utf-8");
        if let Some(r) = retry {
            b.insert_header((actix_web::http::header::RETRY_AFTER, r));
        }
        return Ok(ServiceResponse::new(req, b.body("Too Many Requests")));
    }
    Ok(res.map_into_boxed_body())
}

/// The most a page's form may carry (an address, a code and a CSRF token need far less).
const FORM_LIMIT: usize = 16 * 1024;

/// The whole app for one worker.
pub fn app(
    state: web::Data<AppState>,
    governor: crate::routes::governor::IpGovernor,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let compat = state.services.core.settings.load().compat.otpmint;
    actix_web::App::new()
        .app_data(state)
        .app_data(web::QueryConfig::default().error_handler(|e, _| {
            // actix names itself ("Query deserialize error: …"); the client needs the rest.
            let text = e.to_string();
            let text = text
                .strip_prefix("Query deserialize error: ")
                .unwrap_or(&text);
            ApiError::BadBody(vec![crate::domain::policy::FieldError::new(
                "query",
                text.to_string(),
            )])
            .into()
        }))
        .app_data(
            web::FormConfig::default()
                .limit(FORM_LIMIT)
                .error_handler(|e, _| {
                    // The pages' forms are read by people: a short page of their own, not actix's
                    // text, and the same headers as every page.
                    let r = page_kit::unreadable_form(&e);
                    actix_web::error::InternalError::from_response(e, r).into()
                }),
        )
        .configure(|c| configure(c, compat))
        .default_service(web::to(not_found))
        .wrap(actix_governor::Governor::new(&governor))
        .wrap(from_fn(compat_limit_body))
        .wrap(from_fn(observe))
}
