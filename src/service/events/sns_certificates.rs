//! The SNS signing certificates SES events are verified with (API.md §16.2): fetched only
//! from the hosts `sns_cert_url_allowed` admits, once per URL, and kept.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::service::{Events, ServiceError};

/// Certificates kept (by URL); SNS signs with a handful at a time.
const CERTS_KEPT: usize = 32;
pub(super) const CERT_MAX: usize = 16 * 1024;

fn certs() -> &'static Mutex<HashMap<String, Vec<u8>>> {
    static CERTS: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    CERTS.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Events {
    /// The PEM at an SNS certificate URL, fetched once and kept.
    pub(super) async fn sns_certificate(&self, url: &str) -> Result<Vec<u8>, ServiceError> {
        if let Some(c) = certs().lock().unwrap_or_else(|e| e.into_inner()).get(url) {
            return Ok(c.clone());
        }
        let pem = match self
            .hooks
            .client()
            .get(url, self.http_timeout(), CERT_MAX)
            .await
        {
            Ok((200, body)) => body,
            // No such certificate at SNS's own address: not a message SNS signed (408 and 429
            // are the host's own trouble, like a 5xx: 503).
            Ok((status, _)) if (400..500).contains(&status) && !matches!(status, 408 | 429) => {
                tracing::warn!(status, "the SNS signing certificate was not found");
                return Err(ServiceError::EventUnverified);
            }
            Ok((status, _)) => {
                tracing::warn!(status, "the SNS signing certificate could not be fetched");
                // Not the sender's fault: 503, so SNS sends it again.
                return Err(ServiceError::Unavailable(
                    "the SNS signing certificate could not be fetched".into(),
                ));
            }
            // Not to be fetched from there, or not a certificate's size: refused.
            Err(e @ ("host_not_allowed" | "malformed" | "too_large")) => {
                tracing::warn!(
                    error = e,
                    "the SNS signing certificate could not be fetched"
                );
                return Err(ServiceError::EventUnverified);
            }
            // No answer (a connect, TLS, name or time failure): SNS sends it again on 503.
            Err(e) => {
                tracing::warn!(
                    error = e,
                    "the SNS signing certificate could not be fetched"
                );
                return Err(ServiceError::Unavailable(
                    "the SNS signing certificate could not be fetched".into(),
                ));
            }
        };
        let mut kept = certs().lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= CERTS_KEPT {
            kept.clear();
        }
        kept.insert(url.to_string(), pem.clone());
        Ok(pem)
    }
}
