//! The per-IP limiter (actix-governor) on every route, keyed by the client IP that
//! [`TrustedProxies::client_ip`] sees; over the limit, the problem answer of routes/error.rs.

use std::net::IpAddr;

use crate::client_ip::{forwarded_for, TrustedProxies};

/// actix-governor key: the client IP as [`TrustedProxies::client_ip`] sees it.
#[derive(Clone)]
pub struct ClientIpKey(pub std::sync::Arc<TrustedProxies>);

impl actix_governor::KeyExtractor for ClientIpKey {
    type Key = IpAddr;
    type KeyExtractionError = actix_governor::SimpleKeyExtractionError<&'static str>;

    fn extract(
        &self,
        req: &actix_web::dev::ServiceRequest,
    ) -> Result<IpAddr, Self::KeyExtractionError> {
        let peer = req
            .peer_addr()
            .map(|a| a.ip())
            .ok_or_else(|| actix_governor::SimpleKeyExtractionError::new("no peer address"))?;
        let xff = forwarded_for(req.headers());
        let xff = xff.as_deref();
        // IPv6 clients per /56 (`limited_as`).
        Ok(crate::client_ip::limited_as(self.0.client_ip(peer, xff)))
    }

    fn exceed_rate_limit_response(
        &self,
        negative: &actix_governor::governor::NotUntil<
            actix_governor::governor::clock::QuantaInstant,
        >,
        _response: actix_web::HttpResponseBuilder,
    ) -> actix_web::HttpResponse {
        use actix_governor::governor::clock::{Clock, DefaultClock};
        use actix_web::ResponseError;
        crate::metrics::inc(|m| &m.rate_limited, &["ip"]);
        let wait = negative.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        super::error::ApiError::IpLimited {
            retry_after_secs: secs.max(1),
        }
        .error_response()
    }
}

/// The per-IP limiter configuration for every route.
pub type IpGovernor = actix_governor::GovernorConfig<
    ClientIpKey,
    actix_governor::governor::middleware::NoOpMiddleware<
        actix_governor::governor::clock::QuantaInstant,
    >,
>;

/// The per-IP limiter for all routes; permissive (never limits) when
/// `limits.per_ip_per_second = 0`.
pub fn ip_governor(settings: &crate::config::Settings) -> Option<IpGovernor> {
    let l = &settings.limits;
    actix_governor::GovernorConfigBuilder::default()
        .requests_per_second(u64::from(l.per_ip_per_second.max(1)))
        .burst_size(l.per_ip_burst.max(1))
        .permissive(l.per_ip_per_second == 0)
        .key_extractor(ClientIpKey(std::sync::Arc::new(TrustedProxies::parse(
            &settings.server.trusted_proxies,
        ))))
        .finish()
}
