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
        // An ErrorCode of 100 (maintenance) or 429 (rate limit) is "not now", whatever the
        // status; any other but 0 in a 200 did not send anything either.
        if let Some(c) = code.clone().filter(|c| c == "100" || c == "429") {
            return Err(api::throttled(a, c));
        }
        if (200..300).contains(&a.status) && code.as_deref().is_some_and(|c| c != "0") {
            let mut refused = a.clone();
            refused.status = 422;
            return Err(api::refused(&refused, code));
        }
        api::accepted(a, |_| v.get("MessageID").and_then(api::text_of), |_| code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::FailureKind;

    fn answer(status: u16, code: u32) -> ApiAnswer {
        api::json_answer(
            status,
            &serde_json::json!({"ErrorCode": code, "Message": "…"}),
        )
    }

    /// Maintenance and the rate limit are tried again later, in a 200 too; another code in
    /// a 200 is a refusal; 0 in a 200 is a send.
    #[test]
    fn maintenance_and_the_rate_limit_are_tried_again_whatever_the_status() {
        for (status, code) in [(200, 100), (200, 429), (503, 100), (429, 429)] {
            let e = Postmark.answer(&answer(status, code)).unwrap_err();
            assert_eq!(e.kind, FailureKind::Throttled, "{status} {code}");
            assert!(!e.maybe_delivered, "{status} {code}");
        }
        let e = Postmark.answer(&answer(200, 300)).unwrap_err();
        assert_eq!(e.kind, FailureKind::Permanent);
        assert!(Postmark.answer(&answer(200, 0)).is_ok());
    }
}
