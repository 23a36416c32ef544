//! Resend's API: `POST /emails` with `Authorization: Bearer <api_key>`, JSON `from`, `to`,
//! `subject`, `text`, `html`, and an `Idempotency-Key` per message (a retry of the same
//! message is not sent twice). It answers 200 with `id`; errors carry `name` (for example
//! `validation_error`); a 409 `concurrent_idempotent_requests` (the key's first request is
//! still running) is tried again later.

use serde_json::json;

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::outbound::ApiAnswer;

pub(super) struct Resend;

impl Api for Resend {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let key = c.secret("api_key")?;
        let msg = c.out.msg;
        let mut body = json!({
            "from": api::sender(c.setting("from")?),
            "to": [c.out.to],
            "subject": msg.subject,
            "text": msg.text,
            "headers": {api::AUTO_SUBMITTED.0: api::AUTO_SUBMITTED.1},
        });
        if let Some(html) = &msg.html {
            body["html"] = json!(html);
        }
        let headers = vec![
            ("authorization", format!("Bearer {key}")),
            ("idempotency-key", msg.message_id.clone()),
        ];
        let url = format!("{}/emails", c.base("https://api.resend.com"));
        Ok(Request::json(url, headers, &body))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        let name = v.get("name").and_then(api::text_of);
        // The first request with this message's key is still being handled (a retry after
        // a timeout): safe to try again later, here only — the first may yet send it.
        if a.status == 409 && name.as_deref() == Some("concurrent_idempotent_requests") {
            return Err(DeliveryError::new(
                DeliveryReason::ProviderUnavailable,
                FailureKind::Transient,
                "the provider is still handling this message's first request",
            )
            .maybe_delivered(true)
            .with_retry_after(a.retry_after)
            .with_code("concurrent_idempotent_requests"));
        }
        api::accepted(a, |_| v.get("id").and_then(api::text_of), |_| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: serde_json::Value) -> ApiAnswer {
        api::json_answer(status, &body)
    }

    #[test]
    fn a_first_request_still_running_is_tried_again_later_and_other_409s_are_final() {
        let e = Resend
            .answer(&answer(
                409,
                json!({"name": "concurrent_idempotent_requests", "message": "…"}),
            ))
            .unwrap_err();
        assert!(e.is_transient() && e.maybe_delivered, "{e:?}");
        assert_eq!(
            e.detail_code.as_deref(),
            Some("concurrent_idempotent_requests")
        );
        let e = Resend
            .answer(&answer(409, json!({"name": "invalid_idempotent_request"})))
            .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(e.reason, DeliveryReason::ProviderRejected);
        let ok = Resend.answer(&answer(200, json!({"id": "re_1"}))).unwrap();
        assert_eq!(ok.message_id.as_deref(), Some("re_1"));
    }
}
