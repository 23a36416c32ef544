//! A tenant's HTTP transport (API.md §12.2): its own HTTPS endpoint takes the messages,
//! instead of SMTP or as the last fallback, signed as webhooks are (Standard Webhooks, a
//! secret of its own) and sent by the same client (address policy at every request, no
//! redirects, no proxy). Any 2xx accepts; 408, 429 and 5xx are transient (with `Retry-After`);
//! any other answer — a redirect included — refuses the message for good.

use std::time::Duration;

use serde_json::json;

use super::{ServiceError, Services};
use crate::clock::rfc3339;
use crate::crypto::cipher::{decrypt_record, encrypt_record};
use crate::domain::delivery::DeliveryReason;
use crate::domain::tenant::{HttpTransport, HttpUse, Tenant};
use crate::mailer::DeliveryError;
use crate::service::delivery::StoredMessage;
use crate::storage::OutboxJob;
use crate::webhook::{check_url_resolved, new_secret, signature, SendResult};

pub(super) const SECRET_KIND: &str = "http-transport-secret";

/// The transport as shown, with its secret when it was made (creation, rotation).
#[derive(Debug)]
pub struct HttpShown {
    pub url: String,
    pub use_as: HttpUse,
    pub secret: Option<String>,
}

/// A message as the endpoint receives it.
pub struct HttpMessage<'a> {
    pub channel: &'a str,
    pub job: &'a OutboxJob,
    pub msg: &'a StoredMessage,
}

impl Services {
    fn seal_http_secret(&self, tenant: &Tenant, secret: &[u8]) -> Result<Vec<u8>, ServiceError> {
        Ok(encrypt_record(
            &self.keyring.get(),
            SECRET_KIND,
            tenant.id.as_str(),
            b"",
            secret,
        )?)
    }

    /// Create or replace the tenant's HTTP transport. The URL passes the address policy now
    /// (and at every request); a new transport gets a secret, shown in this answer only (a
    /// replacement keeps it).
    pub async fn put_http_transport(
        &self,
        tenant: &Tenant,
        url: &str,
        use_as: Option<&str>,
    ) -> Result<HttpShown, ServiceError> {
        let Some(use_as) = use_as.map_or(Some(HttpUse::Primary), HttpUse::parse) else {
            return Err(ServiceError::field(
                "use",
                "must be \"primary\" or \"fallback\"",
            ));
        };
        let settings = self.settings.load_full();
        let url = check_url_resolved(url, &settings)
            .await
            .map_err(super::webhooks::refused)?
            .to_string();
        let (bytes, shown) = new_secret();
        let sealed = self.seal_http_secret(tenant, &bytes)?;
        let (id, u) = (tenant.id.clone(), url.clone());
        let created = self
            .db(move |s| s.put_http(&id, &u, use_as, &sealed))
            .await?
            .ok_or(ServiceError::TenantNotFound)?;
        tracing::info!(tenant_id = %tenant.id, created, use_as = use_as.as_str(), "HTTP transport stored");
        self.outbox.breakers().forget(tenant.id.as_str());
        Ok(HttpShown {
            url,
            use_as,
            secret: created.then_some(shown),
        })
    }

    pub fn http_transport(&self, tenant: &Tenant) -> Result<HttpShown, ServiceError> {
        let h = tenant
            .http
            .as_ref()
            .ok_or(ServiceError::TransportNotFound)?;
        Ok(HttpShown {
            url: h.url.clone(),
            use_as: h.use_as,
            secret: None,
        })
    }

    pub async fn delete_http_transport(&self, tenant: &Tenant) -> Result<(), ServiceError> {
        let id = tenant.id.clone();
        if self.db(move |s| s.clear_http(&id)).await? {
            tracing::info!(tenant_id = %tenant.id, "HTTP transport deleted");
            self.outbox.breakers().forget(tenant.id.as_str());
            Ok(())
        } else {
            Err(ServiceError::TransportNotFound)
        }
    }

    /// A new signing secret; the old one stops signing at once.
    pub async fn rotate_http_secret(&self, tenant: &Tenant) -> Result<HttpShown, ServiceError> {
        let h = tenant
            .http
            .as_ref()
            .ok_or(ServiceError::TransportNotFound)?;
        let (bytes, shown) = new_secret();
        let sealed = self.seal_http_secret(tenant, &bytes)?;
        let id = tenant.id.clone();
        if !self.db(move |s| s.set_http_secret(&id, &sealed)).await? {
            return Err(ServiceError::TransportNotFound);
        }
        tracing::info!(tenant_id = %tenant.id, "HTTP transport secret rotated");
        Ok(HttpShown {
            url: h.url.clone(),
            use_as: h.use_as,
            secret: Some(shown),
        })
    }

    /// The signing secret's bytes. A blob sealed under a data key this process has not seen
    /// (another process rotated it) reloads the keyring once.
    async fn http_secret(
        &self,
        tenant: &Tenant,
        h: &HttpTransport,
    ) -> Result<Vec<u8>, ServiceError> {
        self.open_with_keyring(&h.secret, |ring| {
            decrypt_record(ring, SECRET_KIND, tenant.id.as_str(), b"", &h.secret)
        })
        .await
    }

    /// POST one message to the tenant's endpoint, within `timeout`.
    pub(crate) async fn send_http(
        &self,
        tenant: &Tenant,
        h: &HttpTransport,
        m: &HttpMessage<'_>,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        let failed = |reason, detail: &str, transient, maybe_delivered| DeliveryError {
            reason,
            detail: detail.to_string(),
            maybe_delivered,
            transient,
            refused: false,
            retry_after: None,
        };
        let secret = self.http_secret(tenant, h).await.map_err(|e| {
            tracing::error!(tenant_id = %tenant.id, error = %e, "the HTTP transport's secret cannot be decrypted");
            failed(DeliveryReason::HttpRejected, "the signing secret cannot be decrypted", false, false)
        })?;
        let (job, msg) = (m.job, m.msg);
        // One id per message: a retry carries the same one, so the endpoint can drop repeats.
        let id = format!(
            "msg_{}",
            msg.message_id
                .trim_matches(['<', '>'])
                .split('@')
                .next()
                .unwrap_or_default()
        );
        let mut body = json!({
            "id": id,
            "channel": m.channel,
            "to": job.recipient,
            "text": msg.text,
            "locale": msg.locale.clone().unwrap_or_else(|| tenant.default_locale.as_str().to_string()),
            "purpose": msg.purpose,
            "expires_at": rfc3339(job.expires_at),
        });
        if m.channel == "email" {
            body["from"] = json!(tenant.smtp.from.as_str());
            body["subject"] = json!(msg.subject);
            if let Some(html) = &msg.html {
                body["html"] = json!(html);
            }
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let ts = self.now().div_euclid(1000);
        let headers = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature(&secret, &id, ts, &body)),
        ];
        match self
            .hooks
            .client()
            .send(&h.url, &headers, body, Some(timeout))
            .await
        {
            SendResult::Status { code, .. } if (200..300).contains(&code) => Ok(()),
            SendResult::Status { code, retry_after }
                if code == 408 || code == 429 || code >= 500 =>
            {
                // 408, 429 and 503 turned the message away; another 5xx (a gateway, or an
                // endpoint that failed after it forwarded) may have delivered it: tried again
                // here later, not at once elsewhere.
                let maybe = !matches!(code, 408 | 429 | 503);
                let mut e = failed(
                    DeliveryReason::HttpUnavailable,
                    &format!("the endpoint answered {code}"),
                    true,
                    maybe,
                );
                e.retry_after = retry_after;
                Err(e)
            }
            SendResult::Status { code, .. } => Err(failed(
                DeliveryReason::HttpRejected,
                &format!("the endpoint answered {code}"),
                false,
                false,
            )),
            SendResult::Error("host_not_allowed") => Err(failed(
                DeliveryReason::HttpHostNotAllowed,
                "the endpoint's host is not allowed",
                false,
                false,
            )),
            // The request may have reached the endpoint: not sent elsewhere at once.
            SendResult::Error(e @ ("timeout" | "request")) => {
                Err(failed(DeliveryReason::HttpUnreachable, e, true, true))
            }
            SendResult::Error(e) => Err(failed(DeliveryReason::HttpUnreachable, e, true, false)),
        }
    }
}
