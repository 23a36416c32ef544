//! A tenant's providers per channel (API.md §15.2): store one (its secrets sealed at once,
//! never shown), show it without secrets, remove it, and send one test message through it.
//! At most one transport of a channel is primary (409 `transport_conflict`): the rule is
//! checked on the tenant the change applies to, so two concurrent changes cannot both win.

use std::collections::BTreeMap;

use crate::domain::keys::TenantId;
use crate::domain::provider::{Provider, ProviderInput, ProviderKind};
use crate::domain::recipient::{Channel, Recipient};
use crate::domain::sms_guard::{screen, NumberFacts, Screened};
use crate::domain::tenant::{Tenant, TransportUse};
use crate::mailer::new_message_id;
use crate::service::core::audit::RequestContext;
use crate::service::delivery::transport::{Deadline, Outbound, ProviderTransport, Transport};
use crate::service::delivery::StoredMessage;
use crate::service::{ServiceError, Tenants};
use crate::storage::TenantChanges;

/// A provider as shown: never its secrets.
#[derive(Debug, Clone)]
pub struct ProviderShown {
    pub channel: Channel,
    pub kind: ProviderKind,
    pub use_as: TransportUse,
    pub settings: BTreeMap<String, String>,
}

impl From<(Channel, &Provider)> for ProviderShown {
    fn from((channel, p): (Channel, &Provider)) -> Self {
        ProviderShown {
            channel,
            kind: p.kind,
            use_as: p.use_as,
            settings: p.settings.clone(),
        }
    }
}

/// Whether a transport marked primary would meet another primary of its channel.
pub(crate) fn primary_conflict(t: &Tenant, channel: Channel, adding: &str) -> bool {
    let http_primary = t
        .http
        .as_ref()
        .is_some_and(|h| h.use_as == TransportUse::Primary);
    let provider_primary = |c: Channel| {
        t.provider(c)
            .is_some_and(|p| p.use_as == TransportUse::Primary)
    };
    match adding {
        // The HTTP transport serves every channel.
        "http" => Channel::ALL.into_iter().any(provider_primary),
        _ => http_primary || (adding != "provider" && provider_primary(channel)),
    }
}

impl Tenants {
    /// Store (or replace) the tenant's provider of a channel.
    pub async fn put_provider(
        &self,
        id: &TenantId,
        channel: Channel,
        input: ProviderInput,
    ) -> Result<ProviderShown, ServiceError> {
        let sealed = self
            .core
            .seal_provider_secrets(id, channel, input.kind, &input.secrets)?;
        let provider = Provider {
            kind: input.kind,
            use_as: input.use_as,
            settings: input.settings,
            sealed,
        };
        let row = self
            .change_tenant(id, |current| {
                if provider.use_as == TransportUse::Primary
                    && primary_conflict(current, channel, "provider")
                {
                    return Err(ServiceError::TransportConflict);
                }
                Ok(TenantChanges {
                    providers: [(channel, Some(provider.clone()))].into(),
                    ..TenantChanges::default()
                })
            })
            .await?;
        tracing::info!(tenant_id = %id, channel = channel.as_str(), kind = provider.kind.as_str(), use_as = provider.use_as.as_str(), "provider stored");
        let p = row
            .provider(channel)
            .ok_or(ServiceError::ProviderNotFound)?;
        Ok(ProviderShown::from((channel, p)))
    }

    pub fn provider_shown(
        &self,
        tenant: &Tenant,
        channel: Channel,
    ) -> Result<ProviderShown, ServiceError> {
        tenant
            .provider(channel)
            .map(|p| ProviderShown::from((channel, p)))
            .ok_or(ServiceError::ProviderNotFound)
    }

    pub async fn delete_provider(
        &self,
        id: &TenantId,
        channel: Channel,
    ) -> Result<(), ServiceError> {
        self.change_tenant(id, |current| {
            if current.provider(channel).is_none() {
                return Err(ServiceError::ProviderNotFound);
            }
            Ok(TenantChanges {
                providers: [(channel, None)].into(),
                ..TenantChanges::default()
            })
        })
        .await?;
        tracing::info!(tenant_id = %id, channel = channel.as_str(), "provider deleted");
        Ok(())
    }

    /// Send one test message through the provider (no code, no record, no window): the
    /// provider's id of it, or why it failed (`ProviderTest`). It counts in
    /// `delivery.max_sessions` and in the tenant's share of relay checks and test messages
    /// in flight (four): the share full, or no session free in time, is `Overloaded`. A text
    /// message passes the SMS fraud guard as a mint's does (API.md §17.1: the tenant's
    /// countries, the number's type, the velocity limits, where it counts as a send that
    /// never verifies): the test route is no way around it. Audited as `provider.test`.
    pub async fn test_provider(
        &self,
        tenant: &Tenant,
        channel: Channel,
        to: &Recipient,
        ctx: &RequestContext,
    ) -> Result<Option<String>, ServiceError> {
        let audit = self.core.audit.slot()?;
        let sent = self.test_provider_screened(tenant, channel, to).await;
        let outcome = match &sent {
            Ok(_) => "sent".to_string(),
            Err(ServiceError::ProviderTest(e)) => format!("delivery_failed:{}", e.reason.as_str()),
            Err(e) => e.code().as_str().to_string(),
        };
        audit.record(
            &tenant.id,
            self.core.now(),
            "provider.test",
            to.as_given(),
            &outcome,
            ctx,
        );
        sent
    }

    async fn test_provider_screened(
        &self,
        tenant: &Tenant,
        channel: Channel,
        to: &Recipient,
    ) -> Result<Option<String>, ServiceError> {
        let Some(p) = tenant.provider(channel) else {
            return Err(ServiceError::ProviderNotFound);
        };
        self.check_suppressed(tenant, to).await?;
        let counted = match to {
            Recipient::Phone(number) => self.admit_test_text(tenant, number.as_str()).await?,
            Recipient::Email(_) => None,
        };
        let sent = self.send_test(p, tenant, channel, to).await;
        // A text that never left gives its place in the velocity count back, as a mint's
        // does: a tenant trying wrong credentials is not locked out of its own range.
        let never_left = match &sent {
            Err(ServiceError::Overloaded) => true,
            Err(ServiceError::ProviderTest(e)) => !e.maybe_delivered,
            _ => false,
        };
        if let (Some((digest, at)), true) = (counted, never_left) {
            if let Err(e) = self.core.write(move |s| s.release_sms(&digest, at)).await {
                tracing::warn!(error = %e, "giving back a test text's place in the SMS velocity count failed");
            }
        }
        sent
    }

    /// A test text passes the SMS fraud guard as a mint's does: the tenant's countries and
    /// the number's type, then the velocity limits, where it counts as a send that never
    /// verifies. The count made (its digest and time), to give back if the text never
    /// leaves.
    async fn admit_test_text(
        &self,
        tenant: &Tenant,
        number: &str,
    ) -> Result<Option<([u8; 32], i64)>, ServiceError> {
        let facts = NumberFacts::of(number);
        if let Err(s) = screen(&tenant.sms, &facts) {
            return Err(match s {
                Screened::CountryNotAllowed => {
                    ServiceError::SmsCountryNotAllowed(facts.country.clone())
                }
                Screened::NumberNotAllowed(why) => ServiceError::PhoneNumberNotAllowed(why),
            });
        }
        let never_verified: [u8; 32] = rand::random();
        let now = self.core.now();
        let counted = self
            .core
            .take_sms_place(tenant, number, facts, &never_verified, now)
            .await?;
        Ok(counted.then_some((never_verified, now)))
    }

    /// One test message through the provider `p`.
    async fn send_test(
        &self,
        p: &Provider,
        tenant: &Tenant,
        channel: Channel,
        to: &Recipient,
    ) -> Result<Option<String>, ServiceError> {
        let text = if channel.is_phone() {
            "otpmint test message. No action is needed."
        } else {
            "This is a test message from otpmint. No action is needed.\r\n"
        };
        let msg = StoredMessage {
            subject: "otpmint test".into(),
            text: text.into(),
            html: None,
            message_id: new_message_id(p.setting("from").unwrap_or("otpmint.invalid")),
            shareable_key: None,
            recipient: to.as_given().to_string(),
            purpose: "test".into(),
            locale: None,
            channel: (channel != Channel::Email).then(|| channel.as_str().to_string()),
        };
        let transport = ProviderTransport::new(p, format!("{}/test", tenant.id.as_str()));
        let delivery_to = to.delivery_address();
        let out = Outbound {
            tenant,
            to: &delivery_to,
            msg: &msg,
            channel,
            expires_at: self.core.now() + 600_000,
            begin: None,
        };
        let wait = transport.timeout(&self.delivery);
        let Some(_place) = self
            .delivery
            .outbox
            .place_by(tenant.id.as_str(), tokio::time::Instant::now() + wait)
            .await
        else {
            tracing::warn!(tenant_id = %tenant.id, channel = channel.as_str(), "no outbound session free for a provider's test message (the tenant's four, or delivery.max_sessions)");
            return Err(ServiceError::Overloaded);
        };
        // The send's own time counts from its place.
        let deadline = Deadline {
            by: tokio::time::Instant::now() + wait,
            setup_by: None,
        };
        match transport.send(&self.delivery, &out, deadline, 1).await {
            Ok(accepted) => Ok(accepted.message_id),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant.id, channel = channel.as_str(), reason = e.reason.as_str(), detail = %e.detail, "a provider's test message failed");
                Err(ServiceError::ProviderTest(e))
            }
        }
    }
}
