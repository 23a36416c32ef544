//! Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP
//! Basic `AccountSid:AuthToken` and form fields `To`, `From` (or `MessagingServiceSid`) and
//! `Body`. It answers 201 with `sid`; errors carry a numeric `code` (21211: invalid `To`).

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::DeliveryError;
use crate::outbound::ApiAnswer;

pub(super) struct Twilio;

impl Api for Twilio {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let token = c.secret("auth_token")?;
        let sid = c.setting("account_sid")?;
        let p = c.provider;
        let mut fields = vec![("To", c.out.to), ("Body", c.out.msg.text.as_str())];
        match (p.setting("messaging_service_sid"), p.setting("from")) {
            (Some(service), _) => fields.push(("MessagingServiceSid", service)),
            (None, from) => fields.push(("From", from.unwrap_or_default())),
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{sid}/Messages.json",
            c.base("https://api.twilio.com")
        );
        let auth = vec![("authorization", api::basic(sid, token))];
        Ok(Request::form(url, auth, &fields))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        let code = v.get("code").and_then(api::text_of);
        if !(200..300).contains(&a.status) {
            // 21611: the sender's queue holds more than it sends in hours; 20429: too many
            // requests. Load, not a bad message: nothing was queued.
            if let Some(c) = code.clone().filter(|c| THROTTLING.contains(&c.as_str())) {
                return Err(api::throttled(a, c));
            }
        }
        api::accepted(a, |_| v.get("sid").and_then(api::text_of), |_| code)
    }
}

/// Twilio's error codes that mean "not now".
const THROTTLING: [&str; 2] = ["21611", "20429"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::FailureKind;

    fn answer(status: u16, body: serde_json::Value) -> ApiAnswer {
        api::json_answer(status, &body)
    }

    /// A full sender queue is tried again later; an invalid number is final.
    #[test]
    fn a_full_queue_is_tried_again_later_and_an_invalid_number_is_not() {
        let full = serde_json::json!({"code": 21611, "message": "This 'From' number has exceeded the maximum number of queued messages", "status": 400});
        let e = Twilio.answer(&answer(400, full)).unwrap_err();
        assert_eq!(e.kind, FailureKind::Throttled);
        assert!(!e.maybe_delivered);
        assert_eq!(e.detail_code.as_deref(), Some("21611"));
        let invalid = serde_json::json!({"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400});
        let e = Twilio.answer(&answer(400, invalid)).unwrap_err();
        assert_eq!(e.kind, FailureKind::Permanent);
        assert_eq!(e.detail_code.as_deref(), Some("21211"));
    }
}
