//! The audit trail's record: who did what to which recipient, from where, with what result.

use super::Millis;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub tenant_id: String,
    pub at: Millis,
    pub event: String,
    pub recipient: String,
    pub outcome: String,
    pub client_ip: String,
    pub request_id: String,
}
