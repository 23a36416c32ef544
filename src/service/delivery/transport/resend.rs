//! Resend's API: `POST /emails` with `Authorization: Bearer <api_key>`, JSON `from`, `to`,
//! `subject`, `text`, `html`, and an `Idempotency-Key` per message (a retry of the same
//! message is not sent twice). It answers 200 with `id`; errors carry `name` (for example
//! `validation_error`).

use serde_json::json;

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::DeliveryError;
use crate::outbound::ApiAnswer;

pub(super) struct Resend;

impl Api for Resend {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let key = c.secret("api_key")?;
        let msg = c.out.msg;
        let mut body = json!({
            "from": c.setting("from")?,
            "to": [c.out.to],
            "subject": msg.subject,
            "text": msg.text,
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
        api::accepted(
            a,
            |_| v.get("id").and_then(api::text_of),
            |_| v.get("name").and_then(api::text_of),
        )
    }
}
