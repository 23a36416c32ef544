//! The tenant's own HTTPS endpoint (API.md §12.2): the message POSTed as JSON, signed as
//! webhooks are (Standard Webhooks, a secret of its own) and sent by the same client
//! (address policy at every request, no redirects, no proxy). Any 2xx accepts; 408, 429
//! and 5xx are transient (with `Retry-After`); any other answer — a redirect included —
//! refuses the message for good.

use serde_json::json;

use super::{Accepted, Deadline, Outbound, Sending, Transport};
use crate::clock::rfc3339;
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::recipient::Channel;
use crate::domain::tenant::HttpTransport;
use crate::outbound::{no_answer, signature, SendResult};
use crate::service::core::seals::Seal;
use crate::service::Delivery;

pub(crate) struct HttpEndpoint<'a> {
    h: &'a HttpTransport,
    key: String,
    /// The tenant's ceiling (its relay's `max_connections`; 0: the server's default).
    ceiling: u32,
}

impl<'a> HttpEndpoint<'a> {
    pub fn new(h: &'a HttpTransport, key: String, ceiling: u32) -> Self {
        HttpEndpoint { h, key, ceiling }
    }
}

impl Transport for HttpEndpoint<'_> {
    fn name(&self) -> String {
        "http".into()
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn ceiling(&self) -> u32 {
        self.ceiling
    }
    fn send<'a>(
        &'a self,
        s: &'a Delivery,
        out: &'a Outbound<'a>,
        deadline: Deadline,
        _sessions: usize,
    ) -> Sending<'a> {
        Box::pin(async move {
            let tenant = out.tenant;
            let secret = s
                .core
                .open(&Seal::HttpSecret { tenant: &tenant.id }, &self.h.secret)
                .await
                .map_err(|e| {
                    let what = "the HTTP transport's signing secret";
                    super::credentials_unopened(&tenant.id, what, DeliveryReason::HttpRejected, &e)
                })?;
            let msg = out.msg;
            // One id per message: a retry carries the same one, so the endpoint can drop
            // repeats.
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
                "channel": out.channel.as_str(),
                "to": out.to,
                "text": msg.text,
                "locale": msg.locale.clone().unwrap_or_else(|| tenant.default_locale.as_str().to_string()),
                "purpose": msg.purpose,
                "expires_at": rfc3339(out.expires_at),
            });
            if out.channel == Channel::Email {
                if let Some(from) = tenant.sender() {
                    body["from"] = json!(from);
                }
                body["subject"] = json!(msg.subject);
                if let Some(html) = &msg.html {
                    body["html"] = json!(html);
                }
            }
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let ts = s.core.now().div_euclid(1000);
            let headers = [
                ("webhook-id", id.clone()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", signature(&secret, &id, ts, &body)),
            ];
            // Time enough first (not marked begun for nothing), then the mark, then the
            // request's own time from what is left.
            let cap = self.timeout(s);
            deadline.request_time(cap, DeliveryReason::HttpUnreachable)?;
            out.begin().await?;
            // The mark took the time: nothing left, as if not begun.
            let timeout = deadline
                .request_time(cap, DeliveryReason::HttpUnreachable)
                .map_err(|_| DeliveryError::not_begun())?;
            match s
                .events
                .hooks
                .client()
                .send(&self.h.url, &headers, body, Some(timeout))
                .await
            {
                SendResult::Status { code, .. } if (200..300).contains(&code) => {
                    Ok(Accepted::default())
                }
                SendResult::Status { code, retry_after }
                    if code == 408 || code == 429 || code >= 500 =>
                {
                    // 408, 429 and 503 turned the message away; another 5xx (a gateway, or
                    // an endpoint that failed after it forwarded) may have delivered it:
                    // tried again here later, not at once elsewhere.
                    Err(DeliveryError::new(
                        DeliveryReason::HttpUnavailable,
                        FailureKind::Throttled,
                        format!("the endpoint answered {code}"),
                    )
                    .maybe_delivered(!matches!(code, 408 | 429 | 503))
                    .with_retry_after(retry_after))
                }
                SendResult::Status { code, .. } => Err(DeliveryError::permanent(
                    DeliveryReason::HttpRejected,
                    format!("the endpoint answered {code}"),
                )),
                SendResult::Error("host_not_allowed") => Err(DeliveryError::permanent(
                    DeliveryReason::HttpHostNotAllowed,
                    "the endpoint's host is not allowed",
                )),
                // Nothing went out, and the same settings would make it no better later.
                SendResult::Error("malformed") => Err(DeliveryError::permanent(
                    DeliveryReason::HttpRejected,
                    "the request to the endpoint could not be made from its settings",
                )),
                // Once the request may have reached the endpoint, whether it was sent is
                // unknown: not sent again, here or elsewhere.
                SendResult::Error(cause) => {
                    let (words, maybe_sent) = no_answer(cause);
                    Err(
                        DeliveryError::transient(DeliveryReason::HttpUnreachable, words)
                            .outcome_unknown(maybe_sent),
                    )
                }
            }
        })
    }
}
