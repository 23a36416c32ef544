//! Vonage's SMS API: `POST /sms/json` on `rest.nexmo.com` with form fields `api_key`,
//! `api_secret`, `from`, `to` (digits, no `+`), `text` and `type=unicode` for text beyond
//! GSM's alphabet. It answers HTTP 200 even when it refused the message: the outcome is
//! `messages[0].status` ("0" accepted; "1" throttled and "5" an internal error are
//! transient; "4" bad credentials), the id `messages[0].message-id`.

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::outbound::ApiAnswer;

/// What a message status other than "0" is.
fn status_failure(status: &str) -> DeliveryError {
    let detail = format!("the provider refused the message (status {status})");
    let e = match status {
        "1" | "5" => DeliveryError::new(
            DeliveryReason::ProviderUnavailable,
            FailureKind::Throttled,
            detail,
        ),
        "4" => DeliveryError::permanent(DeliveryReason::ProviderAuth, detail),
        _ => DeliveryError::permanent(DeliveryReason::ProviderRejected, detail),
    };
    e.with_code(status)
}

pub(super) struct Vonage;

impl Api for Vonage {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let text = c.out.msg.text.as_str();
        let mut fields = vec![
            ("api_key", c.secret("api_key")?),
            ("api_secret", c.secret("api_secret")?),
            ("from", c.setting("from")?),
            ("to", c.out.to.trim_start_matches('+')),
            ("text", text),
        ];
        if !text.is_ascii() {
            fields.push(("type", "unicode"));
        }
        let url = format!("{}/sms/json", c.base("https://rest.nexmo.com"));
        Ok(Request::form(url, Vec::new(), &fields))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        if !(200..300).contains(&a.status) {
            return Err(api::refused(a, None));
        }
        let v = api::json(a);
        let first = &v["messages"][0];
        match first.get("status").and_then(api::text_of).as_deref() {
            Some("0") => Ok(Accepted {
                message_id: first.get("message-id").and_then(api::text_of),
            }),
            Some(status) => Err(status_failure(status)),
            None => Err(DeliveryError::transient(
                DeliveryReason::ProviderUnavailable,
                "the provider's answer had no message status",
            )
            .outcome_unknown(true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_status_is_transient_only_when_vonage_says_so() {
        assert!(status_failure("1").is_transient());
        assert!(status_failure("5").is_transient());
        assert_eq!(status_failure("4").reason, DeliveryReason::ProviderAuth);
        let e = status_failure("9");
        assert_eq!(
            (e.reason, e.is_transient(), e.detail_code.as_deref()),
            (DeliveryReason::ProviderRejected, false, Some("9"))
        );
    }
}
