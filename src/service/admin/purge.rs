//! The purge: codes past their retention, quota records past their windows, old audit
//! events, idempotency keys, webhook records and provider events.

use super::Admin;

impl Admin {
    /// One purge pass: codes that ended (or expired) more than `otp.retention_seconds` ago,
    /// and quota records older than their windows. Returns how many codes went.
    pub async fn purge_once(&self) -> Result<usize, crate::service::ServiceError> {
        let now = self.core.now();
        let retention = (self.core.settings.load().otp.retention_seconds as i64) * 1000;
        // A send record is kept as long as any limit looks at it: the recipient window,
        // the cooldown, the tenant's hour (all range-checked, so no overflow).
        let limits = self.core.settings.load().limits.clone();
        let windows = (limits
            .recipient_window_seconds
            .max(limits.resend_cooldown_seconds)
            .max(3600) as i64)
            .saturating_mul(1000);
        let audit = (self.core.settings.load().audit.retention_seconds as i64).saturating_mul(1000);
        // Codes are counted as expired unverified before they may go (the purge keeps any
        // that expired since, until the next count).
        self.count_expired().await?;
        self.core
            .db_long(move |s| {
                s.purge_audit(now - audit)?;
                // Idempotency keys after their 24 hours; webhook delivery records with the audit.
                s.purge_integration(now, now - audit)?;
                // Provider events are kept 30 days: a provider retries for less.
                s.purge_provider_events(now - 30 * 86_400_000)?;
                // A trusted number for its tenant's `sms.trusted_days`, no longer.
                s.purge_trusted(now)?;
                s.purge(now - retention, now - windows)
            })
            .await
    }
}
