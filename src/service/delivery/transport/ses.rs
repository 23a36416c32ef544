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

/// The error types that mean "not now": a rate or a quota (as the AWS SDKs class them).
const THROTTLING: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "LimitExceededException",
];

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
        let key = Key {
            access_key_id,
            secret_access_key: secret,
            region,
        };
        signed(&key, "ses", &base, PATH, JSON, body, c.now).ok_or_else(|| {
            DeliveryError::permanent(
                DeliveryReason::ProviderHostNotAllowed,
                "the provider's base URL has no host",
            )
        })
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        let kind = error_type(a, &v);
        if !(200..300).contains(&a.status) {
            // The sending rate or the daily quota, which SES answers with a 400 (the AWS
            // SDKs retry these by name, whatever the status).
            if let Some(k) = kind.filter(|k| THROTTLING.contains(&k.as_str())) {
                return Err(api::throttled(a, k));
            }
        }
        api::accepted(
            a,
            |_| v.get("MessageId").and_then(api::text_of),
            |a| error_type(a, &v),
        )
    }
}

/// STS's `GetCallerIdentity` (`POST /` on `sts.{region}.amazonaws.com`, form-encoded
/// `Action=GetCallerIdentity&Version=2011-06-15`, SigV4 with service `sts`), signed with the
/// tenant's SES credentials: it answers the account that owns them, which needs no
/// permission. An operator may point it elsewhere (`delivery.provider_base_urls.sts`: a
/// VPC endpoint, LocalStack, the tests' fake). `None` when that base has no host.
pub(crate) fn caller_identity(
    key: &Key<'_>,
    base_override: Option<&str>,
    now: crate::domain::Millis,
) -> Option<Request> {
    let base = base_override.map_or_else(
        || format!("https://sts.{}.amazonaws.com", key.region),
        str::to_string,
    );
    let body = api::form(&[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]);
    signed(key, "sts", &base, "/", api::FORM, body, now)
}

/// The credentials a request is signed with.
pub(crate) struct Key<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
}

/// A POST of `body` to `path` on `base`, signed for `service` (its content type, host and
/// date signed). `None` when `base` has no host.
fn signed(
    key: &Key<'_>,
    service: &str,
    base: &str,
    path: &str,
    content_type: &'static str,
    body: Vec<u8>,
    now: crate::domain::Millis,
) -> Option<Request> {
    let host = host_of(base)?;
    let date = amz_date(now);
    let auth = authorization(&Signing {
        method: "POST",
        path,
        query: "",
        headers: &[
            ("content-type", content_type),
            ("host", &host),
            ("x-amz-date", &date),
        ],
        payload: &body,
        region: key.region,
        service,
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        amz_date: &date,
    });
    Some(Request {
        url: format!("{base}{path}"),
        content_type,
        headers: vec![("x-amz-date", date), ("authorization", auth)],
        body,
    })
}

/// The account (twelve digits) a `GetCallerIdentity` answer names: its documented XML
/// (`<Account>…</Account>`), or the JSON STS gives when asked for it.
pub(crate) fn caller_account(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let account = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v
            .pointer("/GetCallerIdentityResponse/GetCallerIdentityResult/Account")?
            .as_str()?
            .to_string(),
        Err(_) => {
            let start = text.find("<Account>")? + "<Account>".len();
            let len = text[start..].find("</Account>")?;
            text[start..start + len].trim().to_string()
        }
    };
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
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

    /// A quota or rate error is tried again later whatever its status; a rejection is not.
    #[test]
    fn a_throttling_error_in_a_400_is_tried_again_later_and_a_rejection_is_not() {
        use crate::domain::delivery::FailureKind;
        for t in [
            "ThrottlingException",
            "LimitExceededException",
            "Throttling",
        ] {
            let header = format!("{t}:http://internal.amazon.com/coral/com.amazonaws.sesv2/");
            let e = Ses
                .answer(&answer(
                    Some(&header),
                    r#"{"message":"Maximum sending rate exceeded."}"#,
                ))
                .unwrap_err();
            assert_eq!(e.kind, FailureKind::Throttled, "{t}");
            assert!(!e.maybe_delivered, "{t}");
            assert_eq!(e.detail_code.as_deref(), Some(t));
        }
        let e = Ses
            .answer(&answer(
                None,
                r#"{"__type":"MessageRejected","message":"Email address is not verified."}"#,
            ))
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::Permanent);
    }

    #[test]
    fn the_callers_account_is_read_from_xml_or_json_and_only_as_twelve_digits() {
        let xml = |a: &str| {
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                 <GetCallerIdentityResult><Arn>arn:aws:iam::{a}:user/Alice</Arn>\
                 <UserId>AKIAI44QH8DHBEXAMPLE</UserId><Account>{a}</Account>\
                 </GetCallerIdentityResult></GetCallerIdentityResponse>"
            )
        };
        let account = |b: &str| caller_account(b.as_bytes());
        assert_eq!(
            account(&xml("123456789012")).as_deref(),
            Some("123456789012")
        );
        let json = serde_json::json!({"GetCallerIdentityResponse": {"GetCallerIdentityResult":
            {"Account": "210987654321", "Arn": "arn:aws:iam::210987654321:user/Bob"}}});
        assert_eq!(account(&json.to_string()).as_deref(), Some("210987654321"));
        for bad in ["12345678901", "1234567890123", "12345678901x", ""] {
            assert_eq!(account(&xml(bad)), None, "{bad}");
        }
        assert_eq!(account("<Account>123456789012"), None);
        assert_eq!(account("{}"), None);
    }

    #[test]
    fn get_caller_identity_is_signed_for_sts_at_the_regions_host() {
        let key = |region| Key {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "secret",
            region,
        };
        let r = caller_identity(&key("eu-west-1"), None, 0).unwrap();
        assert_eq!(r.url, "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(r.body, b"Action=GetCallerIdentity&Version=2011-06-15");
        let auth = &r.headers[1].1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/19700101/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
            "{auth}"
        );
        let local = caller_identity(&key("us-east-1"), Some("https://127.0.0.1:4566"), 0);
        assert_eq!(local.unwrap().url, "https://127.0.0.1:4566/");
        assert!(caller_identity(&key("eu-west-1"), Some("not a url"), 0).is_none());
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
