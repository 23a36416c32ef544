//! Postmark's Email API: `POST /email` with the server token in `X-Postmark-Server-Token`,
//! JSON `From`, `To`, `Subject`, `TextBody`, `HtmlBody`, `MessageStream`. It answers 200
//! with `MessageID` and `ErrorCode` 0; a refusal (422, 401) carries a numeric `ErrorCode`.

use serde_json::json;

use super::api::{self, JSON};
use super::{Api, Call, Sending};
use crate::domain::provider::ProviderKind;

pub(super) struct Postmark;

impl Api for Postmark {
    fn call<'a>(&'a self, c: Call<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Call {
                services: s,
                out,
                provider: p,
                secrets,
                deadline,
            } = c;
            let token = api::need(&secrets, "server_token")?;
            let mut body = json!({
                "From": api::need(&p.settings, "from")?,
                "To": out.to,
                "Subject": out.msg.subject,
                "TextBody": out.msg.text,
                "MessageStream": p.setting("message_stream").unwrap_or("outbound"),
            });
            if let Some(html) = &out.msg.html {
                body["HtmlBody"] = json!(html);
            }
            let url = format!(
                "{}/email",
                api::base_url(s, ProviderKind::Postmark, "https://api.postmarkapp.com")
            );
            let a = api::post(
                s,
                deadline,
                &url,
                JSON,
                vec![("x-postmark-server-token", token.to_string())],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
            .await?;
            let v = api::json(&a);
            let code = v.get("ErrorCode").and_then(api::text_of);
            // A 200 whose ErrorCode is not 0 did not send anything.
            if (200..300).contains(&a.status) && code.as_deref().is_some_and(|c| c != "0") {
                let mut refused = a.clone();
                refused.status = 422;
                return Err(api::refused(&refused, code));
            }
            api::accepted(&a, |_| v.get("MessageID").and_then(api::text_of), |_| code)
        })
    }
}
