//! Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP
//! Basic `AccountSid:AuthToken` and form fields `To`, `From` (or `MessagingServiceSid`) and
//! `Body`. It answers 201 with `sid`; errors carry a numeric `code` (21211: invalid `To`).

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::DeliveryError;
use crate::outbound::ApiAnswer;

pub(super) struct Twilio;

impl Api for Twilio {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let token = c.secret("auth_token")?;
        let sid = c.setting("account_sid")?;
        let p = c.provider;
        let mut fields = vec![("To", c.out.to), ("Body", c.out.msg.text.as_str())];
        match (p.setting("messaging_service_sid"), p.setting("from")) {
            (Some(service), _) => fields.push(("MessagingServiceSid", service)),
            (None, from) => fields.push(("From", from.unwrap_or_default())),
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{sid}/Messages.json",
            c.base("https://api.twilio.com")
        );
        let auth = vec![("authorization", api::basic(sid, token))];
        Ok(Request::form(url, auth, &fields))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        api::accepted(
            a,
            |_| v.get("sid").and_then(api::text_of),
            |_| v.get("code").and_then(api::text_of),
        )
    }
}
