//! Amazon SES v2 `SendEmail`: `POST /v2/email/outbound-emails` on
//! `email.{region}.amazonaws.com`, signed with AWS Signature Version 4 (service `ses`), JSON
//! `FromEmailAddress`, `Destination.ToAddresses`, `Content.Simple` (subject, text and HTML
//! bodies, UTF-8) and `ConfigurationSetName`. It answers 200 with `MessageId`; an error
//! names its type in the `x-amzn-ErrorType` header (`MessageRejected:…`).

use serde_json::json;

use super::api::{self, JSON};
use super::sigv4::{amz_date, authorization, Signing};
use super::{Api, Call, Sending};
use crate::domain::delivery::{DeliveryError, DeliveryReason};
use crate::domain::provider::ProviderKind;

pub(crate) const PATH: &str = "/v2/email/outbound-emails";

pub(super) struct Ses;

impl Api for Ses {
    fn call<'a>(&'a self, c: Call<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Call {
                services: s,
                out,
                provider: p,
                secrets,
                deadline,
            } = c;
            let secret = api::need(&secrets, "secret_access_key")?;
            let access_key_id = api::need(&p.settings, "access_key_id")?;
            let region = api::need(&p.settings, "region")?;
            let data = |s: &str| json!({"Data": s, "Charset": "UTF-8"});
            let mut email_body = json!({ "Text": data(&out.msg.text) });
            if let Some(html) = &out.msg.html {
                email_body["Html"] = data(html);
            }
            let mut body = json!({
                "FromEmailAddress": api::need(&p.settings, "from")?,
                "Destination": {"ToAddresses": [out.to]},
                "Content": {"Simple": {"Subject": data(&out.msg.subject), "Body": email_body}},
            });
            if let Some(set) = p.setting("configuration_set") {
                body["ConfigurationSetName"] = json!(set);
            }
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let base = api::base_url(
                s,
                ProviderKind::Ses,
                &format!("https://email.{region}.amazonaws.com"),
            );
            let host = reqwest::Url::parse(&base)
                .ok()
                .and_then(|u| {
                    let h = u.host_str()?.to_string();
                    Some(match u.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h,
                    })
                })
                .ok_or_else(|| {
                    DeliveryError::permanent(
                        DeliveryReason::ProviderHostNotAllowed,
                        "the provider's base URL has no host",
                    )
                })?;
            let date = amz_date(s.core.now());
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
            let a = api::post(
                s,
                deadline,
                &format!("{base}{PATH}"),
                JSON,
                vec![("x-amz-date", date.clone()), ("authorization", auth)],
                body,
            )
            .await?;
            let v = api::json(&a);
            api::accepted(
                &a,
                |_| v.get("MessageId").and_then(api::text_of),
                |a| {
                    a.headers
                        .get("x-amzn-errortype")
                        .and_then(|v| v.to_str().ok())
                        .map(|t| t.split(':').next().unwrap_or(t).to_string())
                },
            )
        })
    }
}
