//! What every provider transport shares (API.md §15.2): its base URL (the provider's public
//! one, or the operator's `delivery.provider_base_urls` override), its sealed secrets opened
//! through the one helper for sealed values, the POST through the outbound client (the
//! webhooks' address policy, no redirects, `delivery.http_timeout_seconds`), and the mapping
//! of the answer: 2xx accepted; 408, 429 and 5xx transient (with `Retry-After`); 401 and
//! 403 `provider_auth`; any other answer `provider_rejected` with the provider's own code.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Call, Deadline, Outbound};
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::provider::{Provider, ProviderKind};
use crate::outbound::{no_answer, ApiAnswer, ApiRequest};
use crate::service::Delivery;

pub(crate) const JSON: &str = "application/json";
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// The operator's base URL for a kind (`delivery.provider_base_urls`), if any.
pub(crate) fn base_override(services: &Delivery, kind: ProviderKind) -> Option<String> {
    services
        .core
        .settings
        .load()
        .delivery
        .provider_base_urls
        .get(kind.as_str())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// One request to a provider's API.
pub(crate) struct Request {
    pub url: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// POST it through the outbound client (the webhooks' address policy, no redirects)
    /// within `timeout`: the answer, or why there was none.
    pub async fn send(
        self,
        events: &crate::service::Events,
        timeout: Duration,
    ) -> Result<ApiAnswer, &'static str> {
        let req = ApiRequest {
            url: &self.url,
            content_type: self.content_type,
            headers: self.headers,
            body: self.body,
            timeout,
        };
        events.hooks.client().api(req).await
    }

    /// A JSON body.
    pub fn json(
        url: String,
        headers: Vec<(&'static str, String)>,
        body: &serde_json::Value,
    ) -> Request {
        Request {
            url,
            content_type: JSON,
            headers,
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A form-encoded body.
    pub fn form(
        url: String,
        headers: Vec<(&'static str, String)>,
        fields: &[(&str, &str)],
    ) -> Request {
        Request {
            url,
            content_type: FORM,
            headers,
            body: form(fields),
        }
    }
}

impl Call<'_> {
    /// The base URL of the provider's API: the operator's override, else `public`.
    pub fn base(&self, public: &str) -> String {
        self.base_override
            .clone()
            .unwrap_or_else(|| public.to_string())
    }

    /// A secret the provider's settings must hold (checked when they were saved).
    pub fn secret(&self, name: &str) -> Result<&str, DeliveryError> {
        need(&self.secrets, name)
    }

    /// A setting the provider's settings must hold.
    pub fn setting(&self, name: &str) -> Result<&str, DeliveryError> {
        need(&self.provider.settings, name)
    }
}

/// A provider's secrets, opened (a blob under a data key this process has not loaded yet
/// reloads the keyring once). Not readable here: the transport is unusable, the next one
/// is tried.
pub(crate) async fn secrets(
    services: &Delivery,
    out: &Outbound<'_>,
    p: &Provider,
) -> Result<BTreeMap<String, String>, DeliveryError> {
    services
        .core
        .open_provider_secrets(&out.tenant.id, p)
        .await
        .map_err(|e| {
            let what = "the provider's secrets";
            super::credentials_unopened(&out.tenant.id, what, DeliveryReason::ProviderAuth, &e)
        })
}

/// A secret or setting the provider's settings must hold (checked when they were saved).
fn need<'a>(map: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, DeliveryError> {
    map.get(name).map(String::as_str).ok_or_else(|| {
        DeliveryError::new(
            DeliveryReason::ProviderAuth,
            FailureKind::Unusable,
            format!("the provider's settings lack {name}"),
        )
    })
}

/// A form-encoded body.
pub(crate) fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k, v);
    }
    f.finish().into_bytes()
}

/// HTTP Basic credentials.
pub(crate) fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// POST one request within the attempt's deadline and `delivery.http_timeout_seconds`, a
/// queued message's send recorded as begun just before it ([`Outbound::begin`]). No
/// answer: the host refused by policy is final, anything else transient (and, once the
/// request may have reached the provider — a timeout, a broken request — maybe delivered).
pub(crate) async fn post(
    services: &Delivery,
    out: &Outbound<'_>,
    deadline: Deadline,
    r: Request,
) -> Result<ApiAnswer, DeliveryError> {
    let cap = Duration::from_secs(services.core.settings.load().delivery.http_timeout_seconds);
    // Time enough first (not marked begun for nothing), then the mark, then the request's
    // own time from what is left.
    deadline.request_time(cap, DeliveryReason::ProviderUnreachable)?;
    out.begin().await?;
    // The mark took the time: nothing left, as if not begun.
    let timeout = deadline
        .request_time(cap, DeliveryReason::ProviderUnreachable)
        .map_err(|_| DeliveryError::not_begun())?;
    r.send(&services.events, timeout)
        .await
        .map_err(|e| match e {
            "host_not_allowed" => DeliveryError::permanent(
                DeliveryReason::ProviderHostNotAllowed,
                "the provider's host is not allowed by the address policy",
            ),
            // Nothing went out (a stored setting no request can carry): the same settings
            // would make it no better later.
            "malformed" => DeliveryError::permanent(
                DeliveryReason::ProviderRejected,
                "the request to the provider could not be made from its settings",
            ),
            cause => {
                // Once the request may have gone out, whether it was sent is unknown.
                let (words, maybe_sent) = no_answer(cause);
                DeliveryError::transient(DeliveryReason::ProviderUnreachable, words)
                    .outcome_unknown(maybe_sent)
            }
        })
}

/// A JSON body, or null.
pub(crate) fn json(a: &ApiAnswer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null)
}

/// The failure a non-2xx answer is, with the provider's own error code.
pub(crate) fn refused(a: &ApiAnswer, code: Option<String>) -> DeliveryError {
    let detail = format!("the provider answered {}", a.status);
    let e = match a.status {
        401 | 403 => DeliveryError::permanent(DeliveryReason::ProviderAuth, detail),
        // 408, 429 and 503 turned the message away; another 5xx may have come after the
        // provider took it: tried again here later, not at once elsewhere.
        408 | 429 | 500..=599 => DeliveryError::new(
            DeliveryReason::ProviderUnavailable,
            FailureKind::Throttled,
            detail,
        )
        .maybe_delivered(!matches!(a.status, 408 | 429 | 503))
        .with_retry_after(a.retry_after),
        _ => DeliveryError::permanent(DeliveryReason::ProviderRejected, detail),
    };
    match code {
        Some(c) => e.with_code(c),
        None => e,
    }
}

/// As [`refused`], for an answer whose own error code says the provider turned the message
/// away for load — its sending rate or quota — whatever the HTTP status (SES names its
/// throttling in a 400, Twilio a full sender queue): nothing was taken, so it is tried
/// again later, honouring `Retry-After`, as a 429 is.
pub(crate) fn throttled(a: &ApiAnswer, code: String) -> DeliveryError {
    DeliveryError::new(
        DeliveryReason::ProviderUnavailable,
        FailureKind::Throttled,
        format!("the provider answered {}: its rate or quota", a.status),
    )
    .maybe_delivered(false)
    .with_retry_after(a.retry_after)
    .with_code(code)
}

/// Accepted when 2xx, else [`refused`] with the code `code_of` finds in the answer.
pub(crate) fn accepted(
    a: &ApiAnswer,
    id: impl FnOnce(&ApiAnswer) -> Option<String>,
    code_of: impl FnOnce(&ApiAnswer) -> Option<String>,
) -> Result<super::Accepted, DeliveryError> {
    if (200..300).contains(&a.status) {
        Ok(super::Accepted::with_id(id(a)))
    } else {
        Err(refused(a, code_of(a)))
    }
}

/// A JSON member as text (a string, or a number written out).
pub(crate) fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The address and display name of a mailbox (`Acme <a@acme.example>`).
/// The header every message carries (API.md §8) that tells auto-responders not to answer
/// it; each email API takes it in its own field for custom headers.
pub(crate) const AUTO_SUBMITTED: (&str, &str) = ("Auto-Submitted", "auto-generated");

/// The tenant's sender as a JSON API takes it: its domain in its IDNA ASCII form (as SMTP
/// and SES send it), its name as it is.
pub(crate) fn sender(from: &str) -> String {
    crate::domain::tenant::Sender::from_stored(from.to_string()).ascii_domain()
}

pub(crate) fn mailbox(from: &str) -> (String, Option<String>) {
    match from.parse::<lettre::message::Mailbox>() {
        Ok(m) => (m.email.to_string(), m.name.filter(|n| !n.is_empty())),
        Err(_) => (from.to_string(), None),
    }
}

/// A provider's answer with this status and JSON body (for the providers' tests).
#[cfg(test)]
pub(super) fn json_answer(status: u16, body: &serde_json::Value) -> ApiAnswer {
    ApiAnswer {
        status,
        retry_after: None,
        headers: Default::default(),
        body: body.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> ApiAnswer {
        ApiAnswer {
            status,
            retry_after: Some(Duration::from_secs(7)),
            headers: Default::default(),
            body: Vec::new(),
        }
    }

    #[test]
    fn answers_map_to_the_documented_outcomes() {
        let e = refused(&answer(401), Some("10".into()));
        assert_eq!(
            (e.reason, e.kind, e.detail_code.as_deref()),
            (
                DeliveryReason::ProviderAuth,
                FailureKind::Permanent,
                Some("10")
            )
        );
        assert_eq!(
            refused(&answer(403), None).reason,
            DeliveryReason::ProviderAuth
        );
        for s in [408, 429, 503] {
            let e = refused(&answer(s), None);
            assert!(e.is_transient() && !e.maybe_delivered, "{s}");
            assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        }
        for s in [500, 502, 504] {
            let e = refused(&answer(s), None);
            assert!(e.is_transient() && e.maybe_delivered, "{s}");
        }
        // A code is kept only when it looks like one: never markup, an echo or a message.
        for odd in [
            "300\n<script>",
            "<b>",
            "To=%2B49151&Body=123456",
            "a code with spaces",
        ] {
            let e = refused(&answer(422), Some(odd.into()));
            assert_eq!(
                (e.reason, e.kind, e.detail_code.as_deref()),
                (
                    DeliveryReason::ProviderRejected,
                    FailureKind::Permanent,
                    None
                ),
                "{odd}"
            );
        }
        let e = refused(&answer(422), Some("MessageRejected".into()));
        assert_eq!(e.detail_code.as_deref(), Some("MessageRejected"));
        assert!(accepted(&answer(202), |_| Some("id".into()), |_| None).is_ok());
        assert_eq!(
            mailbox("Acme <no-reply@acme.example>"),
            ("no-reply@acme.example".into(), Some("Acme".into()))
        );
        assert_eq!(
            String::from_utf8(form(&[("To", "+49 1"), ("Body", "a&b=c")])).unwrap(),
            "To=%2B49+1&Body=a%26b%3Dc"
        );
    }
}
