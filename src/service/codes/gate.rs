//! What every send to a person passes before anything is hashed or stored, a mint's and a
//! resend's alike: its channel has a way out, the recipient is not suppressed (API.md
//! §16.1), and a text message passes the SMS fraud guard's screen (§17.1). A test send goes
//! to the test inbox and passes none of them.

use crate::domain::purpose::Purpose;
use crate::domain::recipient::Recipient;
use crate::domain::sms_guard::NumberFacts;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::service::{Codes, ServiceError};

impl Codes {
    /// The checks, in the contract's order. For an SMS, the number's facts, which the
    /// guard's velocity count takes later; `None` for any other send.
    pub(super) async fn send_gate(
        &self,
        tenant: &Tenant,
        recipient: &Recipient,
        purpose: &Purpose,
        test: bool,
        now: Millis,
    ) -> Result<Option<NumberFacts>, ServiceError> {
        if test {
            return Ok(None);
        }
        if !self.delivery.has_route(tenant, recipient.channel()) {
            return Err(ServiceError::ChannelNotConfigured);
        }
        self.tenants.check_suppressed(tenant, recipient).await?;
        if !recipient.channel().is_phone() {
            return Ok(None);
        }
        let facts = self
            .screen_sms(tenant, recipient.canonical(), purpose, now)
            .await?;
        Ok(Some(facts))
    }
}
