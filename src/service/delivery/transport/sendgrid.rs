//! SendGrid's Mail Send API v3: `POST /v3/mail/send` with `Authorization: Bearer
//! <api_key>`, JSON `personalizations[].to[]`, `from {email, name}`, `subject` and
//! `content` (text/plain first, then text/html). It answers 202 with no body and the id in
//! the `X-Message-Id` header.

use serde_json::json;

use super::api::{self, JSON};
use super::{Api, Call, Sending};
use crate::domain::provider::ProviderKind;

pub(super) struct Sendgrid;

impl Api for Sendgrid {
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
            let (email, name) = api::mailbox(api::need(&p.settings, "from")?);
            let mut from = json!({ "email": email });
            if let Some(n) = name {
                from["name"] = json!(n);
            }
            let mut content = vec![json!({"type": "text/plain", "value": out.msg.text})];
            if let Some(html) = &out.msg.html {
                content.push(json!({"type": "text/html", "value": html}));
            }
            let body = json!({
                "personalizations": [{"to": [{"email": out.to}]}],
                "from": from,
                "subject": out.msg.subject,
                "content": content,
            });
            let url = format!(
                "{}/v3/mail/send",
                api::base_url(s, ProviderKind::Sendgrid, "https://api.sendgrid.com")
            );
            let a = api::post(
                s,
                deadline,
                &url,
                JSON,
                vec![("authorization", format!("Bearer {key}"))],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
            .await?;
            api::accepted(
                &a,
                |a| {
                    a.headers
                        .get("x-message-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                },
                // SendGrid's errors name the field at fault, not a code.
                |_| None,
            )
        })
    }
}
