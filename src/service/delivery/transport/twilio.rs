//! Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP
//! Basic `AccountSid:AuthToken` and form fields `To`, `From` (or `MessagingServiceSid`) and
//! `Body`. It answers 201 with `sid`; errors carry a numeric `code` (21211: invalid `To`).

use super::api::{self, FORM};
use super::{Api, Call, Sending};
use crate::domain::provider::ProviderKind;

pub(super) struct Twilio;

impl Api for Twilio {
    fn call<'a>(&'a self, c: Call<'a>) -> Sending<'a> {
        Box::pin(async move {
            let Call {
                services: s,
                out,
                provider: p,
                secrets,
                deadline,
            } = c;
            let token = api::need(&secrets, "auth_token")?;
            let sid = api::need(&p.settings, "account_sid")?;
            let mut fields = vec![("To", out.to), ("Body", out.msg.text.as_str())];
            match (p.setting("messaging_service_sid"), p.setting("from")) {
                (Some(service), _) => fields.push(("MessagingServiceSid", service)),
                (None, from) => fields.push(("From", from.unwrap_or_default())),
            }
            let url = format!(
                "{}/2010-04-01/Accounts/{sid}/Messages.json",
                api::base_url(s, ProviderKind::Twilio, "https://api.twilio.com")
            );
            let a = api::post(
                s,
                deadline,
                &url,
                FORM,
                vec![("authorization", api::basic(sid, token))],
                api::form(&fields),
            )
            .await?;
            let v = api::json(&a);
            api::accepted(
                &a,
                |_| v.get("sid").and_then(api::text_of),
                |_| v.get("code").and_then(api::text_of),
            )
        })
    }
}
