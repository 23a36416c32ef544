//! Postmark's Email API: `POST /email` with the server token in `X-Postmark-Server-Token`,
//! JSON `From`, `To`, `Subject`, `TextBody`, `HtmlBody`, `MessageStream`. It answers 200
//! with `MessageID` and `ErrorCode` 0; a refusal (422, 401) carries a numeric `ErrorCode`.

use serde_json::json;

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::DeliveryError;
use crate::outbound::ApiAnswer;

pub(super) struct Postmark;

impl Api for Postmark {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let token = c.secret("server_token")?.to_string();
        let msg = c.out.msg;
        let mut body = json!({
            "From": api::sender(c.setting("from")?),
            "To": c.out.to,
            "Subject": msg.subject,
            "TextBody": msg.text,
            "MessageStream": c.provider.setting("message_stream").unwrap_or("outbound"),
            "Headers": [{"Name": api::AUTO_SUBMITTED.0, "Value": api::AUTO_SUBMITTED.1}],
        });
        if let Some(html) = &msg.html {
            body["HtmlBody"] = json!(html);
        }
        let url = format!("{}/email", c.base("https://api.postmarkapp.com"));
        Ok(Request::json(
            url,
            vec![("x-postmark-server-token", token)],
            &body,
        ))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        let code = v.get("ErrorCode").and_then(api::text_of);
        // A 200 whose ErrorCode is not 0 did not send anything.
        if (200..300).contains(&a.status) && code.as_deref().is_some_and(|c| c != "0") {
            let mut refused = a.clone();
            refused.status = 422;
            return Err(api::refused(&refused, code));
        }
        api::accepted(a, |_| v.get("MessageID").and_then(api::text_of), |_| code)
    }
}
