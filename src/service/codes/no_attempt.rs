//! Why a verify could take no attempt: the code is unknown or ended, the recipient's
//! failure budget is spent, or — every attempt taken, some still being compared on another
//! instance — the answer waits for those verifies' outcome. A status read and a cancel wait the same way
//! before they call a code exhausted.

use crate::domain::challenge::{ChallengeView, Status};
use crate::domain::keys::{CodeApi, TenantId};
use crate::domain::Millis;
use crate::service::codes::mint::ended;
use crate::service::codes::turns::Under;
use crate::service::core::retry_secs;
use crate::service::{Codes, LimitKind, ServiceError};
use crate::storage::{CodeKey, QuotaAsk};

/// How long a verify that finds every attempt taken waits for other processes' verifies
/// of the key still comparing (their hashing and their write), counted from the last
/// attempt taken: a process that died holding one leaves it open.
const IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(2);

impl Codes {
    /// A code whose every attempt is taken, some still open (`attempts_open`) on another
    /// process (another instance, API.md §7) — whichever took the last one: such a verify
    /// may still be comparing a copy of the right code, whose outcome decides the answer
    /// (`otp_used`, not `attempts_exhausted`). It is read again until no attempt is open,
    /// for [`IN_FLIGHT`] at most from the last one taken; this process's own verifies were
    /// waited for already (`KeyTurns`), and record their outcome before they end. `None`:
    /// the code is gone.
    async fn settled_elsewhere(
        &self,
        k: &CodeKey,
        mut view: ChallengeView,
        mut now: Millis,
    ) -> Result<Option<(ChallengeView, Millis)>, ServiceError> {
        let waiting = tokio::time::Instant::now();
        let in_flight_ms = i64::try_from(IN_FLIGHT.as_millis()).unwrap_or(i64::MAX);
        while view.status_at(now) == Status::Exhausted
            && view.attempts_open > 0
            && view.attempt_at.is_some_and(|at| now - at < in_flight_ms)
            && waiting.elapsed() < IN_FLIGHT
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            now = self.core.now();
            let read = k.clone();
            match self.core.db(move |s| s.challenge(&read, now)).await? {
                Some(v) => view = v,
                None => return Ok(None),
            }
        }
        Ok(Some((view, now)))
    }

    /// `view` as it stands once the verifies that took its attempts have their outcome: a
    /// code that shows every attempt taken may have a copy of the right code still being
    /// compared, so a status read or a cancel must not call it exhausted yet. This
    /// process's verifies of the key are waited for, then the code is read again while any
    /// attempt is still open, for [`IN_FLIGHT`] at most. `None`: the code is gone.
    pub(super) async fn settled_view(
        &self,
        k: &CodeKey,
        view: ChallengeView,
        now: Millis,
    ) -> Result<Option<(ChallengeView, Millis)>, ServiceError> {
        if view.status_at(now) != Status::Exhausted {
            return Ok(Some((view, now)));
        }
        self.turns.wait_for(&k.key_digest).await;
        let now = self.core.now();
        let read = k.clone();
        let Some(view) = self.core.db(move |s| s.challenge(&read, now)).await? else {
            return Ok(None);
        };
        self.settled_elsewhere(k, view, now).await
    }

    /// After the wrong guess that took a key's last attempt: earlier verifies of the key may
    /// still be comparing a copy of the right code (`under` is this verify's turn, holding
    /// no reservation now). True when the key is still exhausted once they have their
    /// outcome — or when it cannot be read, so the event is not lost.
    pub(super) async fn still_exhausted(
        &self,
        under: &mut Under<'_>,
        tenant: &TenantId,
        digest: &[u8],
        flavor: CodeApi,
    ) -> bool {
        under.settle().await;
        let k = CodeKey {
            tenant: tenant.clone(),
            key_digest: digest.to_vec(),
            flavor,
        };
        let now = self.core.now();
        let read = k.clone();
        let view = match self.core.db(move |s| s.challenge(&read, now)).await {
            Ok(Some(v)) => v,
            Ok(None) => return false,
            Err(_) => return true,
        };
        match self.settled_view(&k, view, now).await {
            Ok(Some((v, t))) => v.status_at(t) == Status::Exhausted,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Why no attempt could be reserved — unknown, ended, or the recipient is blocked — and
    /// whose code it is, where the code was found (for the audit trail).
    pub(super) async fn why_not(
        &self,
        tenant: &TenantId,
        digest: &[u8],
        flavor: CodeApi,
        now: Millis,
        code_len: usize,
    ) -> (ServiceError, Option<String>) {
        let k = CodeKey {
            tenant: tenant.clone(),
            key_digest: digest.to_vec(),
            flavor,
        };
        let read = k.clone();
        let view = match self.core.db(move |s| s.challenge(&read, now)).await {
            Ok(Some(v)) => v,
            Ok(None) => return (ServiceError::OtpNotFound, None),
            Err(e) => return (e, None),
        };
        let (view, now) = match self.settled_elsewhere(&k, view, now).await {
            Ok(Some(read)) => read,
            Ok(None) => return (ServiceError::OtpNotFound, None),
            Err(e) => return (e, None),
        };
        // As a verify that took an attempt names it: the address as given.
        let whose = Some(view.email.clone());
        (self.refusal(tenant, &view, now, code_len).await, whose)
    }

    /// Why a code found with no attempt to reserve refuses one at `now`.
    async fn refusal(
        &self,
        tenant: &TenantId,
        view: &ChallengeView,
        now: Millis,
        code_len: usize,
    ) -> ServiceError {
        let status = view.status_at(now);
        if status == Status::Pending {
            if code_len != view.code_length as usize {
                return ServiceError::field(
                    "otp",
                    format!("must be {} ASCII digits", view.code_length),
                );
            }
            let quota = self.core.quota().for_attempts(view.max_attempts);
            let window = quota.recipient_window_ms;
            let tid = tenant.clone();
            let recipient = view.email_canonical.clone();
            match self
                .core
                .db(move |s| s.failures_blocked(&QuotaAsk::new(&tid, &recipient, &quota, now)))
                .await
            {
                Ok(Some(until)) => {
                    return ServiceError::RateLimited {
                        // Never beyond the window (another instance's clock may run ahead).
                        retry_after_secs: retry_secs((until - now).min(window)),
                        kind: LimitKind::Failures,
                    };
                }
                Ok(None) => {}
                Err(e) => return e,
            }
        }
        ended(status)
    }
}
