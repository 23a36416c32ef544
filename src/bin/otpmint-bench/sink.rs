//! Where the bench's messages arrive: the SMTP test relay, or with `--transport http` an
//! HTTP receiver the bench tenant delivers to (API.md §12.2), with the same per-message delay.

use std::time::Duration;

use otpmint::testkit::http::HttpReceiver;
use otpmint::testkit::smtp::SmtpServer;
use serde_json::json;

use crate::client::Conn;

pub struct Sink {
    http: Option<HttpReceiver>,
}

impl Sink {
    pub async fn start(transport: &str, scenarios: &[String]) -> Sink {
        let http = match transport {
            "smtp" => None,
            "http" => {
                // The verify scenarios read their codes from the relay.
                assert!(
                    scenarios.iter().all(|s| s == "mint" || s == "mint-async"),
                    "--transport http runs the mint and mint-async scenarios only"
                );
                Some(HttpReceiver::start(false).await)
            }
            other => panic!("--transport is smtp or http, not {other}"),
        };
        Sink { http }
    }

    /// With an HTTP receiver: make it the tenant's primary transport.
    pub async fn attach(&self, port: u16, sk: &str) {
        let Some(rx) = &self.http else { return };
        let body = json!({"url": rx.url("/send"), "use": "primary"}).to_string();
        let mut c = Conn::open(port).await.unwrap();
        let (s, b) = c
            .request("PUT", "/v1/tenant/transport/http", sk, body.as_bytes())
            .await
            .unwrap();
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }

    pub fn set_delay(&self, smtp: &SmtpServer, d: Duration) {
        smtp.set_delay(d);
        if let Some(rx) = &self.http {
            rx.set_delay(d);
        }
    }

    /// Messages arrived since the last `drain`.
    pub fn delivered(&self, smtp: &SmtpServer) -> usize {
        match &self.http {
            Some(rx) => rx.requests().len(),
            None => smtp.messages().len(),
        }
    }

    pub fn drain(&self, smtp: &SmtpServer) {
        smtp.drain();
        if let Some(rx) = &self.http {
            rx.clear();
        }
    }
}
