//! Where the bench's messages arrive: the SMTP test relay; with `--transport http` an HTTP
//! receiver the bench tenant delivers to (API.md §12.2); with `--transport provider:<kind>`
//! a fake of that provider's API (API.md §15.2); with `--transport smtp-oauth2` the relay,
//! logged in with XOAUTH2 and tokens from a test token endpoint (API.md §15.1); with
//! `--transport http-sms` text messages to an HTTP receiver that is the tenant's fallback
//! transport, the relay its primary (API.md §17.7) — each with the same per-message delay.

use std::time::Duration;

use otpmint::testkit::http::HttpReceiver;
use otpmint::testkit::oauth2::{TokenServer, CLIENT_ID, CLIENT_SECRET};
use otpmint::testkit::providers::FakeProvider;
use otpmint::testkit::smtp::{SmtpServer, SMTP_USER};
use serde_json::json;

use crate::client::Conn;

enum Kind {
    Smtp,
    Http(HttpReceiver),
    /// Text messages through the HTTP transport as fallback, SMTP primary.
    HttpSms(HttpReceiver),
    Provider(FakeProvider),
    OAuth2(TokenServer),
}

pub struct Sink {
    kind: Kind,
}

impl Sink {
    pub async fn start(transport: &str, scenarios: &[String]) -> Sink {
        let mint_only = || {
            // The verify scenarios read their codes from the relay.
            assert!(
                scenarios.iter().all(|s| s == "mint" || s == "mint-async"),
                "--transport {transport} runs the mint and mint-async scenarios only"
            );
        };
        let kind = match transport {
            "smtp" => Kind::Smtp,
            "http" => {
                mint_only();
                Kind::Http(HttpReceiver::start(false).await)
            }
            "http-sms" => {
                mint_only();
                Kind::HttpSms(HttpReceiver::start(false).await)
            }
            "smtp-oauth2" => Kind::OAuth2(TokenServer::start(SMTP_USER).await),
            other => match other.strip_prefix("provider:") {
                Some(kind) => {
                    mint_only();
                    let kind = otpmint::domain::provider::ProviderKind::parse(kind)
                        .unwrap_or_else(|| panic!("no provider {kind}"));
                    Kind::Provider(FakeProvider::start(kind.as_str()).await)
                }
                None => {
                    panic!("--transport is smtp, http, http-sms, smtp-oauth2 or provider:<kind>, not {other}")
                }
            },
        };
        Sink { kind }
    }

    /// Lines for the servers' configuration: inside `[webhooks]`, and tables at the end.
    pub fn server_config(&self) -> (String, String) {
        let ca = |p: &std::path::Path| format!("extra_root_certificates = [\"{}\"]\n", p.display());
        match &self.kind {
            Kind::Provider(f) => (
                ca(&f.rx.ca_path),
                format!(
                    "[delivery.provider_base_urls]\n{} = \"{}\"\n",
                    f.kind,
                    f.base_url()
                ),
            ),
            Kind::OAuth2(t) => (ca(&t.rx.ca_path), String::new()),
            _ => (String::new(), String::new()),
        }
    }

    /// Give the bench tenant this transport.
    pub async fn attach(&self, port: u16, sk: &str, smtp: &SmtpServer) {
        let requests = match &self.kind {
            Kind::Smtp => return,
            Kind::Http(rx) => vec![(
                "PUT",
                "/v1/tenant/transport/http",
                json!({"url": rx.url("/send"), "use": "primary"}),
            )],
            Kind::HttpSms(rx) => vec![
                (
                    "PATCH",
                    "/v1/tenant",
                    json!({"sms": {"allowed_countries": ["DE"]}}),
                ),
                (
                    "PUT",
                    "/v1/tenant/transport/http",
                    json!({"url": rx.url("/send"), "use": "fallback"}),
                ),
            ],
            Kind::Provider(f) => vec![(
                "PUT",
                if f.channel() == "sms" {
                    "/v1/tenant/providers/sms"
                } else {
                    "/v1/tenant/providers/email"
                },
                f.settings("primary"),
            )],
            Kind::OAuth2(t) => {
                smtp.accept_xoauth2(t.check());
                vec![(
                    "PATCH",
                    "/v1/tenant",
                    json!({"smtp": {"oauth2": {"token_url": t.url(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}}),
                )]
            }
        };
        let mut c = Conn::open(port).await.unwrap();
        for (method, path, body) in requests {
            let (s, b) = c
                .request(method, path, sk, body.to_string().as_bytes())
                .await
                .unwrap();
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        }
    }

    pub fn set_delay(&self, smtp: &SmtpServer, d: Duration) {
        smtp.set_delay(d);
        match &self.kind {
            Kind::Http(rx) | Kind::HttpSms(rx) => rx.set_delay(d),
            Kind::Provider(f) => f.rx.set_delay(d),
            _ => {}
        }
    }

    /// Messages arrived since the last `drain`.
    pub fn delivered(&self, smtp: &SmtpServer) -> usize {
        match &self.kind {
            Kind::Http(rx) | Kind::HttpSms(rx) => rx.requests().len(),
            Kind::Provider(f) => f.taken().len(),
            _ => smtp.messages().len(),
        }
    }

    pub fn drain(&self, smtp: &SmtpServer) {
        smtp.drain();
        match &self.kind {
            Kind::Http(rx) | Kind::HttpSms(rx) => rx.clear(),
            Kind::Provider(f) => f.clear(),
            _ => {}
        }
    }

    /// Whether the mints go to phone numbers.
    pub fn texts(&self) -> bool {
        matches!(self.kind, Kind::HttpSms(_))
    }

    /// The token endpoint's `expires_in` (with `--transport smtp-oauth2`).
    pub fn set_token_lifetime(&self, secs: u64) {
        if let Kind::OAuth2(t) = &self.kind {
            t.set_expires_in(secs);
        }
    }

    /// Requests to the OAuth2 token endpoint so far (with `--transport smtp-oauth2`).
    pub fn token_requests(&self) -> Option<u64> {
        match &self.kind {
            Kind::OAuth2(t) => Some(t.requests() as u64),
            _ => None,
        }
    }
}
