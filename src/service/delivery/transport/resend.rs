//! Resend's API: `POST /emails` with `Authorization: Bearer <api_key>`, JSON `from`, `to`,
//! `subject`, `text`, `html`, and an `Idempotency-Key` per message (a retry of the same
//! message is not sent twice). It answers 200 with `id`; errors carry `name` (for example
//! `validation_error`).

use serde_json::json;

use super::api::{self, JSON};
use super::{Api, Call, Sending};
use crate::domain::provider::ProviderKind;

pub(super) struct Resend;

impl Api for Resend {
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
            let mut body = json!({
                "from": api::need(&p.settings, "from")?,
                "to": [out.to],
                "subject": out.msg.subject,
                "text": out.msg.text,
            });
            if let Some(html) = &out.msg.html {
                body["html"] = json!(html);
            }
            let url = format!(
                "{}/emails",
                api::base_url(s, ProviderKind::Resend, "https://api.resend.com")
            );
            let a = api::post(
                s,
                deadline,
                &url,
                JSON,
                vec![
                    ("authorization", format!("Bearer {key}")),
                    ("idempotency-key", out.msg.message_id.clone()),
                ],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
            .await?;
            let v = api::json(&a);
            api::accepted(
                &a,
                |_| v.get("id").and_then(api::text_of),
                |_| v.get("name").and_then(api::text_of),
            )
        })
    }
}
