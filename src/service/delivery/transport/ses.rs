//! Amazon SES v2 `SendEmail`: `POST /v2/email/outbound-emails` on
//! `email.{region}.amazonaws.com`, signed with AWS Signature Version 4 (service `ses`), JSON
//! `FromEmailAddress`, `Destination.ToAddresses`, `Content.Simple` (subject, text and HTML
//! bodies, UTF-8) and `ConfigurationSetName`. It answers 200 with `MessageId`; an error
//! names its type in the `x-amzn-ErrorType` header (`MessageRejected:…`) or the body's
//! `__type`.

use serde_json::json;

use super::api::{self, Request, JSON};
use super::sigv4::{amz_date, authorization, Signing};
use super::{Accepted, Api, Call};
use crate::domain::delivery::{DeliveryError, DeliveryReason};
use crate::outbound::ApiAnswer;

pub(crate) const PATH: &str = "/v2/email/outbound-emails";

pub(super) struct Ses;

impl Api for Ses {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let secret = c.secret("secret_access_key")?;
        let access_key_id = c.setting("access_key_id")?;
        let region = c.setting("region")?;
        let msg = c.out.msg;
        let data = |s: &str| json!({"Data": s, "Charset": "UTF-8"});
        let mut email_body = json!({ "Text": data(&msg.text) });
        if let Some(html) = &msg.html {
            email_body["Html"] = data(html);
        }
        let mut body = json!({
            // SES takes 7-bit ASCII only: a UTF-8 name encoded, the domain in IDNA form.
            "FromEmailAddress": crate::domain::tenant::Sender::from_stored(c.setting("from")?.to_string()).seven_bit(),
            "Destination": {"ToAddresses": [c.out.to]},
            "Content": {"Simple": {
                "Subject": data(&msg.subject),
                "Body": email_body,
                "Headers": [{"Name": api::AUTO_SUBMITTED.0, "Value": api::AUTO_SUBMITTED.1}],
            }},
        });
        if let Some(set) = c.provider.setting("configuration_set") {
            body["ConfigurationSetName"] = json!(set);
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let base = c.base(&format!("https://email.{region}.amazonaws.com"));
        let host = host_of(&base).ok_or_else(|| {
            DeliveryError::permanent(
                DeliveryReason::ProviderHostNotAllowed,
                "the provider's base URL has no host",
            )
        })?;
        let date = amz_date(c.now);
        let auth = authorization(&Signing {
            method: "POST",
            path: PATH,
            query: "",
            headers: &[
                ("content-type", JSON),
                ("host", &host),
                ("x-amz-date", &date),
            ],
            payload: &body,
            region,
            service: "ses",
            access_key_id,
            secret_access_key: secret,
            amz_date: &date,
        });
        Ok(Request {
            url: format!("{base}{PATH}"),
            content_type: JSON,
            headers: vec![("x-amz-date", date.clone()), ("authorization", auth)],
            body,
        })
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        api::accepted(
            a,
            |_| v.get("MessageId").and_then(api::text_of),
            |a| error_type(a, &v),
        )
    }
}

/// The error's type: the `x-amzn-ErrorType` header, else the body's `__type` (as AWS's own
/// SDKs read it), without its namespace (`…#`) or its `:…` tail.
fn error_type(a: &ApiAnswer, body: &serde_json::Value) -> Option<String> {
    let named = |t: &str| {
        // As the SDKs cut it: before the first `:`, then after the last `#`.
        let t = t.split(':').next().unwrap_or(t);
        Some(t.rsplit('#').next().unwrap_or(t).trim().to_string()).filter(|t| !t.is_empty())
    };
    a.headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .and_then(named)
        .or_else(|| body.get("__type").and_then(|t| t.as_str()).and_then(named))
}

/// The `Host` a request to `base` names (with its port when it has one): it is signed.
fn host_of(base: &str) -> Option<String> {
    let u = reqwest::Url::parse(base).ok()?;
    let h = u.host_str()?.to_string();
    Some(match u.port() {
        Some(p) => format!("{h}:{p}"),
        None => h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(header: Option<&str>, body: &str) -> ApiAnswer {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(h) = header {
            headers.insert("x-amzn-errortype", h.parse().unwrap());
        }
        ApiAnswer {
            status: 400,
            retry_after: None,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_error_type_comes_from_the_header_else_the_body() {
        let typed = |h, b| {
            let a = answer(h, b);
            error_type(&a, &api::json(&a))
        };
        let header = "MessageRejected:http://internal.amazon.com/coral/com.amazonaws.sesv2/";
        assert_eq!(
            typed(Some(header), "{}").as_deref(),
            Some("MessageRejected")
        );
        let body = r#"{"__type":"com.amazonaws.sesv2#BadRequestException","message":"x"}"#;
        assert_eq!(typed(None, body).as_deref(), Some("BadRequestException"));
        assert_eq!(
            typed(Some("NotFoundException"), body).as_deref(),
            Some("NotFoundException")
        );
        assert_eq!(typed(None, "{}"), None);
        // An empty header gives way to the body; a `#` after the `:` is not the type's.
        assert_eq!(
            typed(Some(""), body).as_deref(),
            Some("BadRequestException")
        );
        let odd = "MessageRejected:http://internal.amazon.com/a#b";
        assert_eq!(typed(Some(odd), "{}").as_deref(), Some("MessageRejected"));
        assert_eq!(typed(None, "not json"), None);
    }
}
