//! The ways a message leaves, behind one trait (API.md §12, §15): the tenant's relays
//! (`smtp.rs`), its own HTTPS endpoint (`http.rs`) and the providers' APIs (one file each).
//! A transport builds its request from the stored message, sends it on one session of its
//! window and classifies the answer: accepted (with the other side's id), or a
//! [`DeliveryError`] whose kind says what the route, the window and the breaker do next.
//! The route (`route.rs`), windows, breakers and deadlines know this trait only, never a
//! provider's name. A provider's file implements [`Api`] — build the request from the
//! message and the provider's settings, read the answer — and one generic transport gives
//! every provider the rest (its name, window key, secrets, timeout): adding a provider is
//! one file and one line in [`provider`].

pub(crate) mod api;
mod http;
mod mailgun;
mod postmark;
mod resend;
mod sendgrid;
pub(crate) mod ses;
pub(crate) mod sigv4;
pub(crate) mod smtp;
mod twilio;
mod unopened;
mod vonage;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::StoredMessage;
use crate::domain::delivery::{token_like, DeliveryError, DeliveryReason, FailureKind, ID_CHARS};
use crate::domain::provider::{Provider, ProviderKind};
use crate::domain::recipient::Channel;
use crate::domain::tenant::{SmtpAccount, Tenant, TransportUse};
use crate::mailer::BeforeBody;
use crate::service::core::seals::sealed_as;
use crate::service::Delivery;

pub(crate) use http::HttpEndpoint;
pub(crate) use smtp::Relay;
pub(crate) use unopened::credentials_unopened;

/// A message on its way out, as every transport sees it.
pub(crate) struct Outbound<'a> {
    pub tenant: &'a Tenant,
    /// The recipient as delivery uses it (an address with its domain in ASCII, or E.164).
    pub to: &'a str,
    pub msg: &'a StoredMessage,
    pub channel: Channel,
    /// When the code expires (the HTTP transport tells its endpoint).
    pub expires_at: crate::domain::Millis,
    /// A queued message: its send is recorded as begun just before the message leaves
    /// (SMTP: after DATA's go-ahead; HTTP: before the request), see [`Outbound::begin`].
    pub begin: Option<&'a dyn BeforeBody>,
}

impl Outbound<'_> {
    /// Just before the message leaves by an HTTP request: a queued message's send recorded
    /// as begun (API.md §19.2: a lease that runs out before this was a message never sent,
    /// given back to the queue; after it, an interrupted send, `unknown`). Not recorded,
    /// not sent.
    pub async fn begin(&self) -> Result<(), DeliveryError> {
        match self.begin {
            Some(b) if !b.ready().await => Err(DeliveryError::not_begun()),
            _ => Ok(()),
        }
    }
}

/// The other side took the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Its id for the message, when it gives one (a provider's message id).
    pub message_id: Option<String>,
}

impl Accepted {
    /// Taken, under the id the other side answered, kept only when it looks like an id
    /// ([`token_like`], at most 128 characters).
    pub fn with_id(id: Option<String>) -> Accepted {
        Accepted {
            message_id: id.and_then(|id| token_like(&id, 128, ID_CHARS)),
        }
    }
}

/// When one send must be done: the attempt's deadline and, while another transport waits
/// behind this one, when its session must be up (a transport that hangs leaves the next
/// one time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub by: Instant,
    pub setup_by: Option<Instant>,
}

impl Deadline {
    /// The same deadline started again now, `time` long (a session that waited for its
    /// place); the setup share, when there is one, is half of it again.
    pub fn restarted(&self, time: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            by: now + time,
            setup_by: self.setup_by.map(|_| now + time / 2),
        }
    }

    /// Time left for one request, at most `cap`.
    pub fn left(&self, cap: Duration) -> Duration {
        self.by.saturating_duration_since(Instant::now()).min(cap)
    }

    /// The time an HTTP request may take: what is left, within `cap`. With less left than a
    /// connect may take, none: a connect cut by the request's own timeout could not be told
    /// from a request that went out, so such a send waits like one that found no session
    /// (no attempt counted, nothing against the transport's breaker). A `cap` that is itself
    /// no longer than a connect (`delivery.http_timeout_seconds` of 1 or 2) asks for half
    /// of it: what the request started with is always a little less than `cap`.
    pub fn request_time(
        &self,
        cap: Duration,
        reason: DeliveryReason,
    ) -> Result<Duration, DeliveryError> {
        let time = self.left(cap);
        if time < least_request_time(cap) {
            return Err(DeliveryError::new(
                reason,
                FailureKind::NoSession,
                "no time left for the request",
            ));
        }
        Ok(time)
    }
}

/// The least time left for which a request bounded by `cap` is started: a connect's bound,
/// or half of a `cap` no longer than that (`delivery.http_timeout_seconds` of 1 or 2, where a
/// connect slower than the request's time cannot be told from a request that went out).
fn least_request_time(cap: Duration) -> Duration {
    if cap <= crate::outbound::MIN_REQUEST_TIME {
        cap / 2
    } else {
        crate::outbound::MIN_REQUEST_TIME
    }
}

pub(crate) type Sending<'a> =
    Pin<Box<dyn Future<Output = Result<Accepted, DeliveryError>> + Send + 'a>>;

/// One way out.
pub(crate) trait Transport: Send + Sync {
    /// Its name in delivery records: `smtp`, `smtp_fallback`, `http`, `provider:postmark`.
    fn name(&self) -> String;
    /// The key of its window and breaker in this process.
    fn key(&self) -> &str;
    /// The ceiling of its window as the tenant chose it (0: the server's default).
    fn ceiling(&self) -> u32;
    /// How long an attempt may take when this transport comes first: an HTTP request's
    /// bound (`delivery.http_timeout_seconds`) unless the transport says otherwise.
    fn timeout(&self, services: &Delivery) -> Duration {
        Duration::from_secs(services.core.settings.load().delivery.http_timeout_seconds)
    }
    /// A failure known before any session, from the settings alone (a relay whose login
    /// would travel unencrypted): the attempt fails with it at once, taking no place in the
    /// window or in `delivery.max_sessions`.
    fn refused_at_once(&self) -> Option<DeliveryError> {
        None
    }
    /// Send one message on one session of its window (`sessions`: the window's size now).
    /// The last thing before the message itself leaves is `out.begin()` (or, for SMTP, the
    /// mailer's `BeforeBody` after DATA's go-ahead): not begun, not sent.
    fn send<'a>(
        &'a self,
        services: &'a Delivery,
        out: &'a Outbound<'a>,
        deadline: Deadline,
        sessions: usize,
    ) -> Sending<'a>;
}

/// What a provider's request is built from: the message, the provider's settings and
/// opened secrets, where its API is and what time it is (a signature names the time).
pub(crate) struct Call<'a> {
    pub out: &'a Outbound<'a>,
    pub provider: &'a Provider,
    /// The provider's secrets, opened.
    pub secrets: BTreeMap<String, String>,
    /// The operator's base URL for this kind (`delivery.provider_base_urls`), if any.
    pub base_override: Option<String>,
    pub now: crate::domain::Millis,
}

/// A provider's API as its documentation describes it: the request built from a message
/// and the provider's settings, the answer read into accepted-with-id or a failure. Both
/// are plain functions; [`ProviderTransport`] sends the request (`api::post`).
pub(crate) trait Api: Send + Sync {
    fn request(&self, c: &Call<'_>) -> Result<api::Request, DeliveryError>;
    fn answer(&self, a: &crate::outbound::ApiAnswer) -> Result<Accepted, DeliveryError>;
}

/// Each kind's API: one line per kind.
fn api_of(kind: ProviderKind) -> &'static dyn Api {
    match kind {
        ProviderKind::Postmark => &postmark::Postmark,
        ProviderKind::Resend => &resend::Resend,
        ProviderKind::Sendgrid => &sendgrid::Sendgrid,
        ProviderKind::Mailgun => &mailgun::Mailgun,
        ProviderKind::Ses => &ses::Ses,
        ProviderKind::Twilio => &twilio::Twilio,
        ProviderKind::Vonage => &vonage::Vonage,
    }
}

/// A provider as a transport: its API behind the trait every route knows.
pub(crate) struct ProviderTransport<'a> {
    provider: &'a Provider,
    key: String,
}

impl<'a> ProviderTransport<'a> {
    pub fn new(provider: &'a Provider, key: String) -> Self {
        ProviderTransport { provider, key }
    }
}

impl Transport for ProviderTransport<'_> {
    fn name(&self) -> String {
        self.provider.transport_name()
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn ceiling(&self) -> u32 {
        // Requests in flight follow the server's default ceiling.
        0
    }
    fn send<'a>(
        &'a self,
        services: &'a Delivery,
        out: &'a Outbound<'a>,
        deadline: Deadline,
        _sessions: usize,
    ) -> Sending<'a> {
        Box::pin(async move {
            let kind = self.provider.kind;
            let call = Call {
                out,
                provider: self.provider,
                secrets: api::secrets(services, out, self.provider).await?,
                base_override: api::base_override(services, kind),
                now: services.core.now(),
            };
            let api = api_of(kind);
            let request = api.request(&call)?;
            api.answer(&api::post(services, out, deadline, request).await?)
        })
    }
}

fn provider(p: &Provider, key: String) -> Box<dyn Transport + '_> {
    Box::new(ProviderTransport::new(p, key))
}

/// The transports of a channel, in order (API.md §15.3). Email: the one marked primary —
/// the relay, unless the email provider or the HTTP transport says `primary` — then the
/// fallbacks: the fallback relay, the email provider, the HTTP transport. SMS: the SMS
/// provider and the HTTP transport, primary first.
///
/// The primary's window is keyed by the tenant (the sender's claims count it); the others
/// have their own.
pub(crate) fn route(tenant: &Tenant, channel: Channel) -> Vec<Box<dyn Transport + '_>> {
    let id = tenant.id.as_str();
    let own = |what: &str| format!("{id}/{what}");
    let primary_key = id.to_string();
    let is_primary = |u: TransportUse| u == TransportUse::Primary;
    fn relay<'t>(
        tenant: &'t Tenant,
        a: &'t SmtpAccount,
        fallback: bool,
        key: String,
    ) -> Box<dyn Transport + 't> {
        Box::new(Relay::new(tenant, a, fallback, key))
    }
    let http = tenant.http.as_ref();
    let ceiling = tenant.smtp.as_ref().map_or(0, |a| a.max_connections);
    let mut out: Vec<Box<dyn Transport + '_>> = Vec::new();
    match channel {
        Channel::Email => {
            let provider_first = tenant
                .provider(Channel::Email)
                .filter(|p| is_primary(p.use_as));
            let http_first = http.filter(|h| is_primary(h.use_as));
            match (provider_first, http_first, &tenant.smtp) {
                (Some(p), _, _) => out.push(provider(p, primary_key)),
                (None, Some(h), _) => {
                    out.push(Box::new(HttpEndpoint::new(h, primary_key, ceiling)))
                }
                (None, None, Some(a)) => out.push(relay(tenant, a, false, primary_key)),
                (None, None, None) => {}
            }
            if let Some(f) = &tenant.smtp_fallback {
                out.push(relay(tenant, f, true, sealed_as(&tenant.id, true)));
            }
            if let Some(p) = tenant
                .provider(Channel::Email)
                .filter(|p| !is_primary(p.use_as))
            {
                out.push(provider(p, own("provider")));
            }
            if let Some(h) = http.filter(|h| !is_primary(h.use_as)) {
                out.push(Box::new(HttpEndpoint::new(h, own("http"), ceiling)));
            }
        }
        // Any other channel (SMS): its provider and the HTTP endpoint, primary first. A
        // text message never waits in an email transport's window: its transports have
        // windows of their own, except the HTTP endpoint when it is the tenant's primary
        // transport (one endpoint, one window).
        other => {
            let p = tenant.provider(other);
            let provider_first = p.is_some_and(|p| is_primary(p.use_as))
                || http.is_none_or(|h| !is_primary(h.use_as));
            let channel_provider = p.map(|p| provider(p, own(other.as_str())));
            let endpoint = http.map(|h| {
                let key = if is_primary(h.use_as) {
                    primary_key.clone()
                } else {
                    own("http")
                };
                Box::new(HttpEndpoint::new(h, key, ceiling)) as Box<dyn Transport + '_>
            });
            if provider_first {
                out.extend(channel_provider);
                out.extend(endpoint);
            } else {
                out.extend(endpoint);
                out.extend(channel_provider);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::tenant::HttpTransport;

    #[test]
    fn a_restarted_deadline_has_the_whole_time_again_and_keeps_its_setup_share() {
        let now = Instant::now();
        let spent = Deadline {
            by: now,
            setup_by: None,
        };
        let d = spent.restarted(Duration::from_secs(4));
        assert!(d.by >= now + Duration::from_secs(4));
        assert!(d.setup_by.is_none());
        let shared = Deadline {
            by: now,
            setup_by: Some(now),
        };
        let d = shared.restarted(Duration::from_secs(4));
        let setup = d.setup_by.unwrap();
        assert!(setup >= now + Duration::from_secs(2) && setup < d.by);
    }

    #[test]
    fn a_request_starts_with_its_whole_bound_left_however_short_that_bound() {
        for secs in [1, 2, 3, 4, 10] {
            let cap = Duration::from_secs(secs);
            let d = Deadline {
                by: Instant::now() + cap,
                setup_by: None,
            };
            // A moment passed since the deadline was set: a little less than `cap` is left.
            std::thread::sleep(Duration::from_millis(5));
            let time = d.request_time(cap, DeliveryReason::HttpUnreachable);
            assert!(time.is_ok_and(|t| t <= cap && t > cap / 2), "{secs} s");
        }
        // With less left than a connect may take (or half a short bound), none.
        let d = Deadline {
            by: Instant::now() + Duration::from_millis(400),
            setup_by: None,
        };
        for secs in [1, 10] {
            let e = d.request_time(Duration::from_secs(secs), DeliveryReason::HttpUnreachable);
            assert!(
                e.is_err_and(|e| e.kind == FailureKind::NoSession),
                "{secs} s"
            );
        }
        // A bound longer than a connect's still wants a connect's time left.
        let d = Deadline {
            by: Instant::now() + Duration::from_millis(1600),
            setup_by: None,
        };
        let e = d.request_time(Duration::from_secs(3), DeliveryReason::HttpUnreachable);
        assert!(e.is_err_and(|e| e.kind == FailureKind::NoSession));
    }

    fn names(t: &Tenant, c: Channel) -> Vec<(String, String)> {
        route(t, c)
            .iter()
            .map(|r| (r.name(), r.key().replace(t.id.as_str(), "T")))
            .collect()
    }

    fn provider_of(kind: ProviderKind, use_as: TransportUse) -> Provider {
        Provider {
            kind,
            use_as,
            settings: BTreeMap::new(),
            sealed: Vec::new(),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn routes_follow_the_documented_order_per_channel() {
        let mut t = Tenant::sample();
        assert_eq!(names(&t, Channel::Email), pairs(&[("smtp", "T")]));
        assert!(names(&t, Channel::Sms).is_empty());
        t.smtp_fallback = t.smtp.clone();
        t.providers.insert(
            Channel::Email,
            provider_of(ProviderKind::Postmark, TransportUse::Fallback),
        );
        t.http = Some(HttpTransport {
            url: "https://h.example/x".into(),
            use_as: TransportUse::Fallback,
            secret: Vec::new(),
        });
        assert_eq!(
            names(&t, Channel::Email),
            pairs(&[
                ("smtp", "T"),
                ("smtp_fallback", "T/fallback"),
                ("provider:postmark", "T/provider"),
                ("http", "T/http"),
            ])
        );
        // A provider marked primary replaces the relay, which is then not used.
        t.providers.insert(
            Channel::Email,
            provider_of(ProviderKind::Ses, TransportUse::Primary),
        );
        assert_eq!(
            names(&t, Channel::Email),
            pairs(&[
                ("provider:ses", "T"),
                ("smtp_fallback", "T/fallback"),
                ("http", "T/http"),
            ])
        );
        // A tenant without a relay and nothing primary: the fallbacks.
        t.providers.insert(
            Channel::Email,
            provider_of(ProviderKind::Resend, TransportUse::Fallback),
        );
        t.smtp = None;
        t.smtp_fallback = None;
        assert_eq!(
            names(&t, Channel::Email),
            pairs(&[("provider:resend", "T/provider"), ("http", "T/http")])
        );
        // SMS: the provider first unless the endpoint is the primary transport.
        t.providers.insert(
            Channel::Sms,
            provider_of(ProviderKind::Twilio, TransportUse::Fallback),
        );
        assert_eq!(
            names(&t, Channel::Sms),
            pairs(&[("provider:twilio", "T/sms"), ("http", "T/http")])
        );
        t.http.as_mut().unwrap().use_as = TransportUse::Primary;
        assert_eq!(
            names(&t, Channel::Sms),
            pairs(&[("http", "T"), ("provider:twilio", "T/sms")])
        );
        t.providers.remove(&Channel::Sms);
        assert_eq!(names(&t, Channel::Sms), pairs(&[("http", "T")]));
    }
}
