//! The `Store` trait for the SqliteStore: each method forwards to its aggregate's file
//! (tenants, keyring, codes, records, outbox, integration).

use super::*;

impl Store for SqliteStore {
    fn submit(&self, call: Box<dyn WriteCall>) -> Result<(), Box<dyn WriteCall>> {
        self.writer.submit(call);
        Ok(())
    }

    fn write_probe(&self) -> Result<(), StoreError> {
        self.writer.write(|_| Ok(()))
    }

    fn insert_code(
        &self,
        c: &NewChallenge,
        m: &NewOutbox,
        q: Option<&SendQuota>,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        self.do_insert_code(c, m, q, now)
    }

    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Vec<OutboxJob>, StoreError> {
        self.do_claim(c)
    }

    fn outbox_sent(
        &self,
        key_digest: &[u8],
        attempts: u32,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        self.do_sent(key_digest, attempts, now, event)
    }

    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempts: u32,
        due_at: Millis,
        reason: &str,
        maybe_delivered: bool,
    ) -> Result<(), StoreError> {
        self.do_retry(key_digest, owner, attempts, due_at, reason, maybe_delivered)
    }

    fn outbox_failed(
        &self,
        key_digest: &[u8],
        attempts: u32,
        reason: &str,
        maybe_delivered: bool,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        self.do_failed(key_digest, attempts, reason, maybe_delivered, now, event)
    }

    fn outbox_sweep(&self, now: Millis) -> Result<Vec<Swept>, StoreError> {
        self.do_sweep(now)
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        self.do_stats(now)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.query_row_cached("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError> {
        self.do_keyring()
    }

    fn init_keyring(
        &self,
        rows: &[WrappedKey],
        now: Millis,
    ) -> Result<Vec<WrappedKey>, StoreError> {
        self.do_init_keyring(rows, now)
    }

    fn rewrap_key(
        &self,
        kind: &str,
        version: u32,
        wrapped: &[u8],
        kek_id: &str,
        old_kek_id: &str,
    ) -> Result<bool, StoreError> {
        self.do_rewrap_key(kind, version, wrapped, kek_id, old_kek_id)
    }

    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError> {
        self.do_add_data_key(row, now)
    }

    fn set_smtp_password(&self, id: &TenantId, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        self.do_set_smtp_password(id, old, new)
    }

    fn reseal_webhook_secret(
        &self,
        id: &TenantId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.do_reseal_webhook_secret(id, old, new)
    }

    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        self.do_backup_to(path)
    }

    fn has_data(&self) -> Result<bool, StoreError> {
        self.do_has_data()
    }

    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.do_insert_tenant(t, secret_digest, now)
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.do_tenant(id)
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.do_tenants()
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        now: Millis,
    ) -> Result<Option<Tenant>, StoreError> {
        self.do_update_tenant(id, c, now)
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        self.do_delete_tenant(id)
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TemplateRow>, StoreError> {
        self.do_templates(id)
    }

    fn put_template(&self, id: &TenantId, t: &TemplateRow) -> Result<bool, StoreError> {
        self.do_put_template(id, t)
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        self.do_delete_template(id, locale)
    }

    fn put_webhook(&self, id: &TenantId, w: &WebhookRow) -> Result<Option<bool>, StoreError> {
        self.do_put_webhook(id, w)
    }

    fn webhook(&self, id: &TenantId) -> Result<Option<WebhookRow>, StoreError> {
        self.do_webhook(id)
    }

    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError> {
        self.do_delete_webhook(id)
    }

    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.do_set_webhook_secret(id, sealed, now)
    }

    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError> {
        self.do_insert_event(e)
    }

    fn claim_events(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<EventJob>, StoreError> {
        self.do_claim_events(owner, now, lease_until, limit)
    }

    fn settle_event(
        &self,
        event_id: &str,
        owner: &str,
        attempt: u32,
        outcome: EventOutcome,
        status_code: Option<u16>,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.do_settle_event(event_id, owner, attempt, outcome, status_code, error, now)
    }

    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.do_webhook_deliveries(id, limit)
    }

    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError> {
        self.do_idem_begin(c)
    }

    fn idem_finish(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
        status: u16,
        response: &[u8],
    ) -> Result<(), StoreError> {
        self.do_idem_finish(id, key_digest, holder, status, response)
    }

    fn idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError> {
        self.do_idem_release(id, key_digest, holder)
    }

    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError> {
        self.do_purge_integration(now, records_before)
    }

    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError> {
        self.do_tenant_by_secret(digest, now)
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.do_rotate_secret(id, new_digest, old_until, now)
    }

    fn reserve_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        code_len: u32,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError> {
        self.do_reserve_attempt(tenant, key_digest, flavor, code_len, q, now)
    }

    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
    ) -> Result<(), StoreError> {
        self.do_release_attempt(tenant, key_digest, recipient)
    }

    fn finish_verify(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
        event: Option<&NewEvent>,
        clear_failures_of: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.do_finish_verify(tenant, key_digest, now, event, clear_failures_of)
    }

    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<TenantId>, StoreError> {
        self.do_challenge_owner(key_digest, flavor)
    }

    fn challenge(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<ChallengeView>, StoreError> {
        self.do_challenge(tenant, key_digest, flavor)
    }

    fn cancel(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError> {
        self.do_cancel(tenant, key_digest, flavor, now)
    }

    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError> {
        self.do_purge(before, sends_before)
    }

    fn import(
        &self,
        tenants: &[(Tenant, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError> {
        self.do_import(tenants, codes, now)
    }

    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.do_append_audit(events)
    }

    fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.do_audit_page(tenant, before, limit)
    }

    fn purge_audit(&self, before: Millis) -> Result<usize, StoreError> {
        self.do_purge_audit(before)
    }

    fn take_send(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        self.do_take_send(tenant, recipient, q, now)
    }

    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        self.do_check_quota(tenant, recipient, q, now)
    }

    fn failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        self.do_failures_blocked(tenant, recipient, q, now)
    }

    fn export_snapshot(&self) -> Result<copy::Snapshot, StoreError> {
        self.do_export_snapshot()
    }

    fn import_snapshot(&self, s: &copy::Snapshot) -> Result<(), StoreError> {
        self.do_import_snapshot(s)
    }
}
