//! The outbox aggregate: the durable work of sending a code's message — claimed with a
//! lease, settled once (sent, retry later, failed), swept when its code ended first.

use super::integration::NewEvent;
use super::{Lease, StoreError};
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::TenantId;
use crate::domain::Millis;

/// Which due outbox rows a sender takes.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: Millis,
    pub lease: Lease,
    pub limit: u32,
    /// Tenants whose sessions are all busy here: leave their rows for later.
    pub exclude_tenants: Vec<String>,
}

/// One claimed message.
#[derive(Debug, Clone)]
pub struct OutboxJob {
    pub key_digest: Vec<u8>,
    pub tenant_id: TenantId,
    pub recipient: String,
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
    pub expires_at: Millis,
    pub mode: DeliveryMode,
}

/// What the outbox reports about itself for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    /// How long the longest-waiting due message has been due.
    pub oldest_due_ms: Millis,
}

/// A message settled by the sweep: its code expired before the relay took it (`expired`,
/// its delivery failed) or the code ended otherwise first.
#[derive(Debug, Clone)]
pub struct Swept {
    pub tenant_id: TenantId,
    pub key_digest: Vec<u8>,
    pub payload: Vec<u8>,
    pub expired: bool,
}

pub trait OutboxStore {
    /// Lease due outbox rows of live, pending codes of enabled tenants: at most `limit`,
    /// and per tenant at most its `max_connections`.
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Vec<OutboxJob>, StoreError>;
    /// The relay accepted the message: delivery `sent`, the outbox row gone, and the
    /// group's older pending, live codes superseded — one transaction.
    /// `event`: its webhook event, written in the same transaction (if the tenant
    /// subscribes) when this call settles the message.
    fn outbox_sent(
        &self,
        key_digest: &[u8],
        attempts: u32,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError>;
    /// A transient failure: try again at `due_at` (only if `owner` still holds the lease).
    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempts: u32,
        due_at: Millis,
        reason: &str,
        maybe_delivered: bool,
    ) -> Result<(), StoreError>;
    /// Give up: the code becomes `failed` (it can never verify), the outbox row goes, and
    /// the quota charge is given back unless some attempt may have reached the relay.
    #[allow(clippy::too_many_arguments)]
    fn outbox_failed(
        &self,
        key_digest: &[u8],
        attempts: u32,
        reason: &str,
        maybe_delivered: bool,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError>;
    /// Settle unleased outbox rows whose code expired (delivery failed, `expired`) or ended
    /// otherwise before its message left (`not_sent`); returns how many.
    fn outbox_sweep(&self, now: Millis) -> Result<Vec<Swept>, StoreError>;
    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError>;
}
