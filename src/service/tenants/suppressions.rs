//! A tenant's suppression list (API.md §16.1): read a page, add an entry by hand, remove
//! one (each change audited with the recipient masked), and the check a mint makes before
//! it sends.

use crate::domain::keys::TenantId;
use crate::domain::recipient::Recipient;
use crate::domain::suppression::{Cursor, Suppression, SuppressionReason, PAGE};
use crate::domain::tenant::Tenant;
use crate::service::core::audit::RequestContext;
use crate::service::{ServiceError, Tenants};

/// A page of the list and where the next one starts.
pub struct SuppressionPage {
    pub entries: Vec<Suppression>,
    pub next_cursor: Option<String>,
}

impl Tenants {
    /// A page of the tenant's list, newest first.
    pub async fn suppressions(
        &self,
        tenant: &TenantId,
        after: Option<Cursor>,
    ) -> Result<SuppressionPage, ServiceError> {
        let tid = tenant.clone();
        // One more than a page says whether another follows.
        let mut entries = self
            .core
            .db(move |s| s.suppressions(&tid, after.as_ref(), PAGE + 1))
            .await?;
        let next_cursor = if entries.len() > PAGE {
            entries.truncate(PAGE);
            entries.last().map(|e| {
                Cursor {
                    created_at: e.created_at,
                    recipient: e.recipient.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok(SuppressionPage {
            entries,
            next_cursor,
        })
    }

    /// Add a recipient by hand; `(entry, created)`: an entry already there is kept as it
    /// was and answered.
    pub async fn suppress_manually(
        &self,
        tenant: &TenantId,
        recipient: &Recipient,
        ctx: &RequestContext,
    ) -> Result<(Suppression, bool), ServiceError> {
        let key = recipient.canonical().to_string();
        self.add_suppression(tenant, key, SuppressionReason::Manual, "api", ctx)
            .await
    }

    /// Add an entry (a hand-made one, or a provider's hard bounce or complaint).
    pub(crate) async fn add_suppression(
        &self,
        tenant: &TenantId,
        recipient: String,
        reason: SuppressionReason,
        source: &str,
        ctx: &RequestContext,
    ) -> Result<(Suppression, bool), ServiceError> {
        let audit = self.core.audit.slot()?;
        // An entry stored under another key of the recipient (before keys were case-folded,
        // or before numbers had one spelling) is its entry: listed already, not listed twice.
        let earlier =
            match crate::domain::recipient::Recipient::parse_either(&recipient, "recipient") {
                Ok(r) => self.earlier_entry(tenant, &r).await?,
                Err(_) => None,
            };
        let entry = Suppression {
            recipient,
            reason,
            source: source.to_string(),
            created_at: self.core.now(),
        };
        let (tid, e) = (tenant.clone(), entry.clone());
        let created = match &earlier {
            Some(_) => false,
            None => self.core.db(move |s| s.suppress(&tid, &e)).await?,
        };
        let shown = if created {
            entry
        } else if let Some(found) = earlier {
            found
        } else {
            let (tid, r) = (tenant.clone(), entry.recipient.clone());
            self.core
                .db(move |s| s.suppression(&tid, &r))
                .await?
                .unwrap_or(entry)
        };
        audit.record(
            tenant,
            self.core.now(),
            "suppression.add",
            &shown.recipient,
            if created { reason.as_str() } else { "exists" },
            ctx,
        );
        Ok((shown, created))
    }

    /// Remove a recipient's entry: 404 `suppression_not_found` when there is none.
    pub async fn unsuppress(
        &self,
        tenant: &TenantId,
        recipient: &Recipient,
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        let audit = self.core.audit.slot()?;
        // Its key, and the key an entry stored before keys were case-folded has: both may
        // be there (a provider's event lists a recipient under its key of today), and the
        // recipient is off the list only once neither is. One transaction: both go, or
        // neither.
        let (tid, keys) = (tenant.clone(), recipient.keys().collect::<Vec<_>>());
        let removed = self.core.db(move |s| s.unsuppress(&tid, &keys)).await?;
        // One removal of one recipient, audited under the first key it had an entry under.
        let Some(key) = removed.first() else {
            return Err(ServiceError::SuppressionNotFound);
        };
        audit.record(
            tenant,
            self.core.now(),
            "suppression.remove",
            key,
            "removed",
            ctx,
        );
        Ok(())
    }

    /// The recipient's entry stored under one of its former keys, if any.
    async fn earlier_entry(
        &self,
        tenant: &TenantId,
        recipient: &crate::domain::recipient::Recipient,
    ) -> Result<Option<Suppression>, ServiceError> {
        for key in recipient.keys().skip(1) {
            let tid = tenant.clone();
            if let Some(found) = self.core.db(move |s| s.suppression(&tid, &key)).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Refuse a mint to a suppressed recipient (422 `recipient_suppressed`) unless the
    /// tenant only records; no look-up while its list is empty.
    pub(crate) async fn check_suppressed(
        &self,
        tenant: &Tenant,
        recipient: &Recipient,
    ) -> Result<(), ServiceError> {
        if !tenant.suppression || tenant.suppressed == 0 {
            return Ok(());
        }
        // Its key, and the key an entry stored before keys were case-folded has.
        for key in recipient.keys() {
            let tid = tenant.id.clone();
            if self
                .core
                .db(move |s| s.suppression(&tid, &key))
                .await?
                .is_some()
            {
                return Err(ServiceError::RecipientSuppressed);
            }
        }
        Ok(())
    }
}
