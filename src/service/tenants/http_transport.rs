//! A tenant's HTTP transport settings (API.md §12.2): its own HTTPS endpoint, instead of
//! SMTP or as a fallback, and its signing secret (sealed, shown at creation and rotation
//! only). Sending through it is `delivery/transport/http.rs`.

use crate::domain::tenant::{Tenant, TransportUse};
use crate::outbound::{check_url_resolved, new_secret};
use crate::service::core::seals::Seal;
use crate::service::{ServiceError, Tenants};

/// The transport as shown, with its secret when it was made (creation, rotation).
#[derive(Debug)]
pub struct HttpShown {
    pub url: String,
    pub use_as: TransportUse,
    pub secret: Option<String>,
}

impl Tenants {
    fn seal_http_secret(&self, tenant: &Tenant, secret: &[u8]) -> Result<Vec<u8>, ServiceError> {
        self.core
            .seal(&Seal::HttpSecret { tenant: &tenant.id }, secret)
    }

    /// Create or replace the tenant's HTTP transport. The URL passes the address policy now
    /// (and at every request); a new transport gets a secret, shown in this answer only (a
    /// replacement keeps it).
    pub async fn put_http_transport(
        &self,
        tenant: &Tenant,
        url: &str,
        use_as: Option<&str>,
    ) -> Result<HttpShown, ServiceError> {
        let Some(use_as) = use_as.map_or(Some(TransportUse::Primary), TransportUse::parse) else {
            return Err(ServiceError::field(
                "use",
                "must be \"primary\" or \"fallback\"",
            ));
        };
        let conflict = |t: &Tenant| {
            use_as == TransportUse::Primary
                && crate::service::tenants::providers::primary_conflict(
                    t,
                    crate::domain::recipient::Channel::Email,
                    "http",
                )
        };
        if conflict(tenant) {
            return Err(ServiceError::TransportConflict);
        }
        let settings = self.core.settings.load_full();
        let url = check_url_resolved(url, &settings)
            .await
            .map_err(|r| crate::service::events::webhooks::refused("url", r))?
            .to_string();
        let (bytes, shown) = new_secret();
        let sealed = self.seal_http_secret(tenant, &bytes)?;
        // Stored only if the tenant is still as its check read it: a concurrent change (a
        // provider made primary meanwhile) is read again and checked, so two primaries of a
        // channel never both win (API.md §15.3).
        let mut current = self.core.tenant(tenant.id.as_str()).await?;
        let mut tries = 0;
        let created = loop {
            tries += 1;
            if tries > 10 {
                return Err(ServiceError::Conflict(
                    "the tenant kept changing while its HTTP transport was stored; try again",
                ));
            }
            if conflict(&current) {
                return Err(ServiceError::TransportConflict);
            }
            let (id, u, s2) = (current.id.clone(), url.clone(), sealed.clone());
            let version = current.row_version;
            match self
                .core
                .db(move |s| s.put_http(&id, &u, use_as, &s2, version))
                .await?
            {
                Some(created) => break created,
                None => current = self.core.tenant(tenant.id.as_str()).await?,
            }
        };
        tracing::info!(tenant_id = %tenant.id, created, use_as = use_as.as_str(), "HTTP transport stored");
        self.delivery.outbox.forget(tenant.id.as_str());
        Ok(HttpShown {
            url,
            use_as,
            secret: created.then_some(shown),
        })
    }

    pub fn http_transport(&self, tenant: &Tenant) -> Result<HttpShown, ServiceError> {
        let h = tenant
            .http
            .as_ref()
            .ok_or(ServiceError::TransportNotFound)?;
        Ok(HttpShown {
            url: h.url.clone(),
            use_as: h.use_as,
            secret: None,
        })
    }

    pub async fn delete_http_transport(&self, tenant: &Tenant) -> Result<(), ServiceError> {
        let id = tenant.id.clone();
        if self.core.db(move |s| s.clear_http(&id)).await? {
            tracing::info!(tenant_id = %tenant.id, "HTTP transport deleted");
            self.delivery.outbox.forget(tenant.id.as_str());
            Ok(())
        } else {
            Err(ServiceError::TransportNotFound)
        }
    }

    /// A new signing secret; the old one stops signing at once.
    pub async fn rotate_http_secret(&self, tenant: &Tenant) -> Result<HttpShown, ServiceError> {
        let h = tenant
            .http
            .as_ref()
            .ok_or(ServiceError::TransportNotFound)?;
        let (bytes, shown) = new_secret();
        let sealed = self.seal_http_secret(tenant, &bytes)?;
        let id = tenant.id.clone();
        if !self
            .core
            .db(move |s| s.set_http_secret(&id, &sealed))
            .await?
        {
            return Err(ServiceError::TransportNotFound);
        }
        tracing::info!(tenant_id = %tenant.id, "HTTP transport secret rotated");
        Ok(HttpShown {
            url: h.url.clone(),
            use_as: h.use_as,
            secret: Some(shown),
        })
    }
}
