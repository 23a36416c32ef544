//! Vonage's SMS API: `POST /sms/json` on `rest.nexmo.com` with form fields `api_key`,
//! `api_secret`, `from` and `to` (numbers as digits, no `+`), `text` and `type=unicode` for
//! text beyond GSM 03.38's alphabet. It answers HTTP 200 even when it refused the message: the outcome is
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

/// GSM 03.38's default alphabet and its extension table (two septets each): the text a
/// message of `type=text` carries unchanged. Anything else needs `type=unicode`.
const GSM7: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡\
                    ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà\
                    ^{}\\[~]|€\u{0c}";

fn gsm7(text: &str) -> bool {
    text.chars().all(|c| GSM7.contains(c))
}

/// A sender number as Vonage takes numbers (digits, no `+`), or an alphanumeric sender ID
/// as given.
fn number_or_name(from: &str) -> &str {
    match from.strip_prefix('+') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits,
        _ => from,
    }
}

pub(super) struct Vonage;

impl Api for Vonage {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let text = c.out.msg.text.as_str();
        let from = c.setting("from")?;
        let mut fields = vec![
            ("api_key", c.secret("api_key")?),
            ("api_secret", c.secret("api_secret")?),
            ("from", number_or_name(from)),
            ("to", c.out.to.trim_start_matches('+')),
            ("text", text),
        ];
        if !gsm7(text) {
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
        // A long text goes as several parts, each with its own status: sent only when
        // every part is; a part refused after one was taken may have carried the code.
        let parts = v["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let status = |m: &serde_json::Value| m.get("status").and_then(api::text_of);
        let Some(first) = parts.first() else {
            return Err(no_status());
        };
        for (i, part) in parts.iter().enumerate() {
            match status(part).as_deref() {
                Some("0") => {}
                Some(s) => return Err(status_failure(s).outcome_unknown(i > 0)),
                None => return Err(no_status()),
            }
        }
        Ok(Accepted::with_id(
            first.get("message-id").and_then(api::text_of),
        ))
    }
}

/// An answer that says nothing of the message: it may have been taken.
fn no_status() -> DeliveryError {
    DeliveryError::transient(
        DeliveryReason::ProviderUnavailable,
        "the provider's answer had no message status",
    )
    .outcome_unknown(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_is_asked_for_beyond_the_gsm_alphabet_only() {
        assert!(gsm7("Dein Code für Müller: 123456 (Ä, é, ñ, £, €, [ok])"));
        assert!(!gsm7("Código: 123456"), "ó is not in GSM 03.38");
        assert!(!gsm7("`123456`"), "a backtick is ASCII but not GSM");
        assert!(!gsm7("验证码 123456"));
    }

    #[test]
    fn a_sender_number_loses_its_plus_and_a_sender_name_is_kept() {
        assert_eq!(number_or_name("+447700900000"), "447700900000");
        assert_eq!(number_or_name("447700900000"), "447700900000");
        assert_eq!(number_or_name("Acme"), "Acme");
        assert_eq!(number_or_name("+Acme"), "+Acme");
    }

    fn answer(body: &str) -> Result<Accepted, DeliveryError> {
        Vonage.answer(&ApiAnswer {
            status: 200,
            retry_after: None,
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn a_long_text_is_sent_only_when_every_part_is() {
        let both = r#"{"message-count":"2","messages":[{"status":"0","message-id":"a"},{"status":"0","message-id":"b"}]}"#;
        assert!(answer(both).is_ok());
        // The first part taken, the second refused: the code may have arrived in the first.
        let split =
            r#"{"message-count":"2","messages":[{"status":"0","message-id":"a"},{"status":"9"}]}"#;
        let e = answer(split).unwrap_err();
        assert_eq!(
            (e.reason, e.outcome_unknown, e.detail_code.as_deref()),
            (DeliveryReason::ProviderRejected, true, Some("9"))
        );
        // Refused from the first part: nothing left.
        let refused = r#"{"message-count":"1","messages":[{"status":"9"}]}"#;
        assert!(!answer(refused).unwrap_err().outcome_unknown);
        assert!(answer(r#"{"messages":[]}"#).unwrap_err().outcome_unknown);
    }

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
