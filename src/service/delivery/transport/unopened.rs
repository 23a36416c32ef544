//! A transport's credentials that could not be opened, as a delivery failure: the database
//! away (nothing was sent; the message waits) or the credentials unreadable here (the
//! transport is unusable; the next one is tried).

use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::keys::TenantId;
use crate::service::ServiceError;

/// `what` ("the relay's password") could not be opened for `tenant`. A secret sealed under
/// a data key another instance made reloads the keyring from the database: when that did
/// not answer, or the keyring is wrapped by a master key this instance does not hold,
/// nothing is wrong with the credentials — the send is not begun and the message keeps its
/// place (API.md §11.6: never failed for a key not loaded yet; a sync mint is told 503).
/// Any other error leaves the transport unusable (`reason` if it was the last one).
pub(crate) fn credentials_unopened(
    tenant: &TenantId,
    what: &'static str,
    reason: DeliveryReason,
    e: &ServiceError,
) -> DeliveryError {
    if let ServiceError::Unavailable(why) = e {
        tracing::warn!(tenant_id = %tenant, error = %e, "{what} could not be opened here; the message waits");
        return DeliveryError::new(
            DeliveryReason::Timeout,
            FailureKind::NotBegun,
            format!("{what} could not be opened ({why}); nothing was sent"),
        );
    }
    tracing::error!(tenant_id = %tenant, error = %e, "{what} cannot be decrypted");
    DeliveryError::new(
        reason,
        FailureKind::Unusable,
        format!("{what} cannot be decrypted"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_that_did_not_answer_leaves_the_message_waiting_not_failed() {
        let t = TenantId::generate();
        let away = ServiceError::Unavailable("pool timed out".into());
        let e = credentials_unopened(&t, "the relay's password", DeliveryReason::Auth, &away);
        assert_eq!(e.kind, FailureKind::NotBegun);
        let broken = ServiceError::Internal("authentication tag mismatch".into());
        let e = credentials_unopened(&t, "the relay's password", DeliveryReason::Auth, &broken);
        assert_eq!(
            (e.kind, e.reason),
            (FailureKind::Unusable, DeliveryReason::Auth)
        );
        assert_eq!(e.detail, "the relay's password cannot be decrypted");
    }
}
