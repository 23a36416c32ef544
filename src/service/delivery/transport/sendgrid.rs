//! SendGrid's Mail Send API v3: `POST /v3/mail/send` with `Authorization: Bearer
//! <api_key>`, JSON `personalizations[].to[]`, `from {email, name}`, `subject` and
//! `content` (text/plain first, then text/html). It answers 202 with no body and the id in
//! the `X-Message-Id` header.

use serde_json::json;

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::DeliveryError;
use crate::outbound::ApiAnswer;

pub(super) struct Sendgrid;

impl Api for Sendgrid {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let key = c.secret("api_key")?;
        let (email, name) = api::mailbox(&api::sender(c.setting("from")?));
        let mut from = json!({ "email": email });
        if let Some(n) = name {
            from["name"] = json!(n);
        }
        let msg = c.out.msg;
        let mut content = vec![json!({"type": "text/plain", "value": msg.text})];
        if let Some(html) = &msg.html {
            content.push(json!({"type": "text/html", "value": html}));
        }
        let body = json!({
            "personalizations": [{"to": [{"email": c.out.to}]}],
            "from": from,
            "subject": msg.subject,
            "content": content,
            "headers": {api::AUTO_SUBMITTED.0: api::AUTO_SUBMITTED.1},
        });
        let url = format!("{}/v3/mail/send", c.base("https://api.sendgrid.com"));
        Ok(Request::json(
            url,
            vec![("authorization", format!("Bearer {key}"))],
            &body,
        ))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let id = |a: &ApiAnswer| {
            a.headers
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // SendGrid's errors name the field at fault, not a code.
        api::accepted(a, id, |_| None)
    }
}
