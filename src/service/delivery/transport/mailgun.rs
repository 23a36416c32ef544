//! Mailgun's Messages API: `POST /v3/{domain}/messages` on `api.mailgun.net` (region `eu`:
//! `api.eu.mailgun.net`) with HTTP Basic `api:<api_key>` and form fields `from`, `to`,
//! `subject`, `text`, `html`. It answers 200 with `id` (`<…@domain>`).

use super::api::{self, FORM};
use super::{Api, Call, Sending};
use crate::domain::provider::ProviderKind;

pub(super) struct Mailgun;

impl Api for Mailgun {
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
            let domain = api::need(&p.settings, "domain")?;
            let public = match p.setting("region") {
                Some("eu") => "https://api.eu.mailgun.net",
                _ => "https://api.mailgun.net",
            };
            let mut fields = vec![
                ("from", api::need(&p.settings, "from")?),
                ("to", out.to),
                ("subject", out.msg.subject.as_str()),
                ("text", out.msg.text.as_str()),
            ];
            if let Some(html) = &out.msg.html {
                fields.push(("html", html.as_str()));
            }
            let url = format!(
                "{}/v3/{domain}/messages",
                api::base_url(s, ProviderKind::Mailgun, public)
            );
            let a = api::post(
                s,
                deadline,
                &url,
                FORM,
                vec![("authorization", api::basic("api", key))],
                api::form(&fields),
            )
            .await?;
            let v = api::json(&a);
            api::accepted(&a, |_| v.get("id").and_then(api::text_of), |_| None)
        })
    }
}
