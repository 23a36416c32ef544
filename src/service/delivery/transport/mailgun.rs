//! Mailgun's Messages API: `POST /v3/{domain}/messages` on `api.mailgun.net` (region `eu`:
//! `api.eu.mailgun.net`) with HTTP Basic `api:<api_key>` and form fields `from`, `to`,
//! `subject`, `text`, `html`. It answers 200 with `id` (`<…@domain>`).

use super::api::{self, Request};
use super::{Accepted, Api, Call};
use crate::domain::delivery::DeliveryError;
use crate::outbound::ApiAnswer;

pub(super) struct Mailgun;

impl Api for Mailgun {
    fn request(&self, c: &Call<'_>) -> Result<Request, DeliveryError> {
        let key = c.secret("api_key")?;
        let domain = c.setting("domain")?;
        let public = match c.provider.setting("region") {
            Some("eu") => "https://api.eu.mailgun.net",
            _ => "https://api.mailgun.net",
        };
        let msg = c.out.msg;
        let from = api::sender(c.setting("from")?);
        let mut fields = vec![
            ("from", from.as_str()),
            ("to", c.out.to),
            ("subject", msg.subject.as_str()),
            ("text", msg.text.as_str()),
            // A custom header is an `h:`-prefixed field.
            ("h:Auto-Submitted", api::AUTO_SUBMITTED.1),
        ];
        if let Some(html) = &msg.html {
            fields.push(("html", html.as_str()));
        }
        let url = format!("{}/v3/{domain}/messages", c.base(public));
        let auth = vec![("authorization", api::basic("api", key))];
        Ok(Request::form(url, auth, &fields))
    }

    fn answer(&self, a: &ApiAnswer) -> Result<Accepted, DeliveryError> {
        let v = api::json(a);
        api::accepted(a, |_| v.get("id").and_then(api::text_of), |_| None)
    }
}
