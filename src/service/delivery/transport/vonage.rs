//! Vonage's SMS API: `POST /sms/json` on `rest.nexmo.com` with form fields `api_key`,
//! `api_secret`, `from`, `to` (digits, no `+`), `text` and `type=unicode` for text beyond
//! GSM's alphabet. It answers HTTP 200 even when it refused the message: the outcome is
//! `messages[0].status` ("0" accepted; "1" throttled and "5" an internal error are
//! transient; "4" bad credentials), the id `messages[0].message-id`.

use super::api::{self, FORM};
use super::{Api, Call, Sending};
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::provider::ProviderKind;

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
    fn call<'a>(&'a self, c: Call<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Call {
                services: s,
                out,
                provider: p,
                secrets,
                deadline,
            } = c;
            let key = api::need(&secrets, "api_key")?;
            let secret = api::need(&secrets, "api_secret")?;
            let to = out.to.trim_start_matches('+');
            let mut fields = vec![
                ("api_key", key),
                ("api_secret", secret),
                ("from", api::need(&p.settings, "from")?),
                ("to", to),
                ("text", out.msg.text.as_str()),
            ];
            if !out.msg.text.is_ascii() {
                fields.push(("type", "unicode"));
            }
            let url = format!(
                "{}/sms/json",
                api::base_url(s, ProviderKind::Vonage, "https://rest.nexmo.com")
            );
            let a = api::post(s, deadline, &url, FORM, Vec::new(), api::form(&fields)).await?;
            if !(200..300).contains(&a.status) {
                return Err(api::refused(&a, None));
            }
            let v = api::json(&a);
            let first = &v["messages"][0];
            match first.get("status").and_then(api::text_of).as_deref() {
                Some("0") => Ok(super::Accepted {
                    message_id: first.get("message-id").and_then(api::text_of),
                }),
                Some(status) => Err(status_failure(status)),
                None => Err(DeliveryError::transient(
                    DeliveryReason::ProviderUnavailable,
                    "the provider's answer had no message status",
                )
                .outcome_unknown(true)),
            }
        })
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
