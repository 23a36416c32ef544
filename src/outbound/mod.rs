//! Outbound HTTP (API.md §4, §9): the endpoint URL rules, the Standard Webhooks signature,
//! and the one HTTP client of webhooks, HTTP transports, provider APIs and OAuth2 token
//! endpoints that connects only to addresses the host
//! policy of §4 allowed (its DNS resolver checks every address at every connection; IP
//! literals are checked before each request), follows no redirects, uses no proxy, and bounds
//! each whole request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Settings;
use crate::net_policy::{HostName, HostPolicy, HostRefusal};

mod cause;
use cause::classify;
pub use cause::{no_answer, CONNECT_TIMEOUT, MIN_REQUEST_TIME, NO_ANSWER};

/// The longest endpoint URL accepted.
pub const URL_MAX: usize = 2048;

/// Why an endpoint URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error(
        "must be an absolute https:// URL (http:// where webhooks.allow_plaintext allows it) with an ASCII host name (IDNs in punycode) or IP address, without user info or fragment, at most 2048 characters"
    )]
    Malformed,
    #[error("http:// endpoints are not allowed")]
    Plaintext,
    #[error("the endpoint's host is not allowed")]
    Host(HostRefusal),
}

/// The address policy for endpoints: §4's, with any port.
pub fn policy(settings: &Settings) -> HostPolicy {
    HostPolicy {
        allowed_ports: None,
        allow_private_hosts: settings.webhooks.allow_private_hosts,
        allow_plaintext: true,
        // The system's: `dns.resolver` is the domain check's.
        resolver: None,
    }
}

/// Parse and check an endpoint URL without DNS: scheme, form, an IP literal's address.
pub fn check_url(url: &str, settings: &Settings) -> Result<(reqwest::Url, HostName), UrlRefusal> {
    if url.len() > URL_MAX || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlRefusal::Malformed);
    }
    let u = reqwest::Url::parse(url).map_err(|_| UrlRefusal::Malformed)?;
    match u.scheme() {
        "https" => {}
        "http" if settings.webhooks.allow_plaintext => {}
        "http" => return Err(UrlRefusal::Plaintext),
        _ => return Err(UrlRefusal::Malformed),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(UrlRefusal::Malformed);
    }
    let host = match u.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(UrlRefusal::Malformed),
    };
    let port = u.port_or_known_default().unwrap_or(443);
    let name = policy(settings)
        .check_static(&host, port, false)
        .map_err(UrlRefusal::Host)?;
    Ok((u, name))
}

/// Check an endpoint URL fully, resolving its host (at registration).
pub async fn check_url_resolved(
    url: &str,
    settings: &Settings,
) -> Result<reqwest::Url, UrlRefusal> {
    check_url_form(url, settings)?;
    let (u, name) = check_url(url, settings)?;
    let port = u.port_or_known_default().unwrap_or(443);
    policy(settings)
        .resolve(&name, port)
        .await
        .map_err(UrlRefusal::Host)?;
    Ok(u)
}

/// The form the API description states for an endpoint (`domain::grammar::ENDPOINT_URL`: no
/// fragment, no user info), checked when a URL is registered (a
/// webhook's, the HTTP transport's, an OAuth2 token URL); at send time `check_url` alone (a
/// stored URL of an older, looser form, or an operator's base URL, still goes out).
pub fn check_url_form(url: &str, settings: &Settings) -> Result<(), UrlRefusal> {
    if !crate::domain::grammar::ENDPOINT_URL.matches(url) {
        // An IP address in another spelling (`https://127.1/`, `https://0x7f000001/`, which
        // the URL parser reads as the address) that the policy refuses is refused as a host
        // (422), like its usual spelling; any other fault of form is 400.
        let ip_host = reqwest::Url::parse(url).ok().is_some_and(|u| {
            u.host_str().is_some_and(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok()
            })
        });
        if let (true, Err(UrlRefusal::Host(h))) = (ip_host, check_url(url, settings)) {
            return Err(UrlRefusal::Host(h));
        }
        return Err(UrlRefusal::Malformed);
    }
    Ok(())
}

/// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, keyed with the secret's bytes.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A new secret's bytes and its shown form, `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> (Vec<u8>, String) {
    use rand::RngCore;
    let mut bytes = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let shown = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    (bytes, shown)
}

/// A refusal by the policy, carried through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(HostRefusal);

/// Resolves with the policy's resolver (`net_policy/resolver.rs`) and lets through only
/// addresses the policy allows, read from the live settings at each connection.
struct CheckedResolver {
    settings: Arc<arc_swap::ArcSwap<Settings>>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = policy(&self.settings.load());
        let host = name.as_str().to_string();
        Box::pin(async move {
            let name = HostName::parse(&host).ok_or(Refused(HostRefusal::HostNotAllowed))?;
            let addrs: Vec<SocketAddr> = policy.resolve(&name, 0).await.map_err(Refused)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("cannot read webhook root certificate {path}: {message}")]
    RootCertificate { path: PathBuf, message: String },
    #[error("webhook client: {0}")]
    Build(String),
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// The endpoint answered (2xx is success), maybe asking to wait before the next try.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: `host_not_allowed`, or one of [`NO_ANSWER`]'s causes.
    Error(&'static str),
}

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110 §10.2.3) as seen at `now`
/// (Unix seconds). A date in the past asks for no wait.
pub fn parse_retry_after(value: &str, now: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?.timestamp();
    Some(Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
}

/// A request to an outbound API (a provider, an OAuth2 token endpoint).
pub struct ApiRequest<'a> {
    pub url: &'a str,
    /// `application/json` or `application/x-www-form-urlencoded`.
    pub content_type: &'a str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// An API's answer: its status, the headers an adapter may read, and at most
/// [`API_BODY_MAX`] bytes of its body.
#[derive(Debug, Clone)]
pub struct ApiAnswer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// The most of an API's answer read (ids and error codes are short; the rest is dropped).
pub const API_BODY_MAX: usize = 64 * 1024;

/// The HTTP client for endpoints.
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
    settings: Arc<arc_swap::ArcSwap<Settings>>,
}

impl WebhookClient {
    pub fn new(
        settings: Arc<arc_swap::ArcSwap<Settings>>,
    ) -> Result<WebhookClient, ClientSetupError> {
        let s = settings.load_full();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in &s.webhooks.extra_root_certificates {
            crate::mailer::add_pem_roots(&mut roots, path)
                .map(drop)
                .map_err(|message| ClientSetupError::RootCertificate {
                    path: path.clone(),
                    message,
                })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientSetupError::Build(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(CheckedResolver {
                settings: Arc::clone(&settings),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(s.webhooks.timeout_seconds))
            // A connection not made in time fails as `connect` (nothing was sent), not as the
            // request's `timeout` (which may have reached the endpoint).
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("otpmint/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientSetupError::Build(e.to_string()))?;
        Ok(WebhookClient { client, settings })
    }

    /// POST a signed body to `url`, within `timeout` (default: `webhooks.timeout_seconds`).
    /// The URL is checked again first (an IP literal has no DNS step where the resolver could
    /// refuse it).
    pub async fn send(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> SendResult {
        let settings = self.settings.load_full();
        let u = match check_url(url, &settings) {
            Ok((u, _)) => u,
            Err(UrlRefusal::Host(_)) | Err(UrlRefusal::Plaintext) => {
                return SendResult::Error("host_not_allowed")
            }
            Err(UrlRefusal::Malformed) => return SendResult::Error("malformed"),
        };
        // The live timeout (the event's lease is sized from the same value).
        let mut req = self
            .client
            .post(u)
            .timeout(timeout.unwrap_or(Duration::from_secs(settings.webhooks.timeout_seconds)))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        match req.send().await {
            Ok(r) => SendResult::Status {
                code: r.status().as_u16(),
                retry_after: r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now().timestamp())),
            },
            Err(e) => SendResult::Error(classify(&e)),
        }
    }
}

impl WebhookClient {
    /// GET a small document (an SNS signing certificate, a subscription confirmation)
    /// under the address policy of webhook endpoints, within `timeout`, at most `max`
    /// bytes. Answers the status and the body.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max: usize,
    ) -> Result<(u16, Vec<u8>), &'static str> {
        let settings = self.settings.load_full();
        let u = match check_url(url, &settings) {
            Ok((u, _)) => u,
            Err(UrlRefusal::Host(_)) | Err(UrlRefusal::Plaintext) => {
                return Err("host_not_allowed")
            }
            Err(UrlRefusal::Malformed) => return Err("malformed"),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut resp = self
            .client
            .get(u)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    if body.len() + chunk.len() > max {
                        return Err("too_large");
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(Ok(None)) => break,
                Ok(Err(_)) => return Err("request"),
                Err(_) => return Err("timeout"),
            }
        }
        Ok((status, body))
    }

    /// POST to an API under the same address policy as webhook endpoints (the URL checked
    /// again here, every resolved address by the resolver, no redirects, no proxy), within
    /// the request's timeout. `Err`: no answer — `host_not_allowed`, or one of [`NO_ANSWER`]'s
    /// causes.
    pub async fn api(&self, req: ApiRequest<'_>) -> Result<ApiAnswer, &'static str> {
        let settings = self.settings.load_full();
        let u = match check_url(req.url, &settings) {
            Ok((u, _)) => u,
            Err(UrlRefusal::Host(_)) | Err(UrlRefusal::Plaintext) => {
                return Err("host_not_allowed")
            }
            Err(UrlRefusal::Malformed) => return Err("malformed"),
        };
        let mut r = self
            .client
            .post(u)
            .timeout(req.timeout)
            .header("content-type", req.content_type)
            .header("accept", "application/json")
            .body(req.body);
        for (k, v) in &req.headers {
            r = r.header(*k, v.as_str());
        }
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut resp = r.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now().timestamp()));
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        // The body within the same bound; past API_BODY_MAX the rest is not read.
        loop {
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    let room = API_BODY_MAX.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= API_BODY_MAX {
                        break;
                    }
                }
                Ok(Ok(None)) => break,
                // The answer's status is known: a body cut short reads as what arrived.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(ApiAnswer {
            status,
            retry_after,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", 0), Some(Duration::ZERO));
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 - 60),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 + 60),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        assert_eq!(parse_retry_after("-5", 0), None);
    }

    #[test]
    fn endpoint_urls_are_checked() {
        let mut s = crate::config::Settings::load(None).unwrap();
        for bad in [
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
            "https:///nohost",
            "not a url",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://10.0.0.1/hook",
            "https://169.254.169.254/latest",
            "https://localhost/hook",
            "https://2130706433/hook",
        ] {
            assert!(check_url(bad, &s).is_err(), "{bad} accepted");
        }
        assert_eq!(
            check_url("http://example.com/x", &s).unwrap_err(),
            UrlRefusal::Plaintext
        );
        assert!(check_url("https://hooks.example.com:8443/otp?x=1", &s).is_ok());
        s.webhooks.allow_plaintext = true;
        s.webhooks.allow_private_hosts = true;
        assert!(check_url("http://127.0.0.1:9/hook", &s).is_ok());
    }
}
