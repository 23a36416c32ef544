//! A hosted page's code form (API.md §14.1): the typed code checked against the session's
//! code, one check of a page at a time, a form posted again after its answer spending no
//! second attempt, and where the person goes next. The rest of the hosted flow is
//! `hosted.rs`.

use tracing::Instrument;

use super::hosted::{code_of, session_redirect, status_of, PageError};
use crate::domain::keys::CodeApi;
use crate::domain::links::allowed_return;
use crate::domain::tenant::Tenant;
use crate::service::codes::verify::Caller;
use crate::service::core::audit::RequestContext;
use crate::service::{Codes, ServiceError};
use crate::storage::{SessionFinisher, SessionRow};

impl Codes {
    /// Verify the code typed on the page; where to send the person next.
    pub async fn hosted_verify(
        &self,
        row: &SessionRow,
        tenant: &Tenant,
        (code, seen): (&str, Option<u32>),
        (cookie, ctx): (&str, &RequestContext),
    ) -> Result<String, PageError> {
        if status_of(row, self.core.now()) != "open" {
            return Err(PageError::Over);
        }
        // The way back is checked before the code is spent (API.md §17.7).
        if allowed_return(&row.session.return_url, &tenant.allowed_return_urls).is_none() {
            return Err(PageError::Over);
        }
        let key = self.session_key(row, tenant).await.ok_or(PageError::Over)?;
        // A person may type the code in groups, or in the digits of their script (API.md
        // §17.8).
        let typed = crate::domain::code::typed_by_a_person(code);
        // The rest runs as a task of its own: a browser that gives up on the request (a
        // double click aborts the first post) does not cut it between the verify and the
        // record of what it found.
        let this = self.clone();
        let (row, tenant, cookie, ctx) =
            (row.clone(), tenant.clone(), cookie.to_string(), ctx.clone());
        tokio::spawn(
            async move {
                this.hosted_verify_turn(&row, &tenant, (key, typed, seen), (&cookie, &ctx))
                    .await
            }
            // Its log lines carry the request's id.
            .instrument(tracing::Span::current()),
        )
        .await
        .unwrap_or(Err(PageError::Busy))
    }

    /// A hosted page's code, checked in the page's turn (one of its verifies at a time in
    /// this process). A form the page made that was answered already (guesses were spent
    /// since it was made), posted again with the guess last found wrong for the same code (a
    /// reload, a double click's second post), is answered so again without spending an
    /// attempt (`page_guesses.rs`).
    async fn hosted_verify_turn(
        &self,
        row: &SessionRow,
        tenant: &Tenant,
        (key, typed, seen): (String, String, Option<u32>),
        (cookie, ctx): (&str, &RequestContext),
    ) -> Result<String, PageError> {
        let mut turn_of = b"verify:".to_vec();
        turn_of.extend_from_slice(row.session.id.as_bytes());
        let _turn = self.sends.alone(&turn_of).await;
        let id = row.session.id.as_str();
        if let Some(seen) = seen {
            if let Ok(Some(now)) = self.hosted_row(id).await {
                let at = self.core.now();
                if let (Some(used), Some(max), "open", Some("pending"), Some(until)) = (
                    now.attempts_used,
                    now.max_attempts,
                    status_of(&now, at),
                    now.code_state.as_deref(),
                    now.code_expires_at,
                ) {
                    if used > seen
                        && at < until
                        && self.page_guesses.was_wrong(id, &code_of(&now), &typed, at)
                    {
                        return Err(PageError::WrongCode(max.saturating_sub(used)));
                    }
                }
            }
        }
        // A right code finishes the session in the verify's own transaction, this browser
        // its finisher: a code is never spent without its session recorded.
        let finisher = SessionFinisher {
            id: row.session.id.clone(),
            by: self.hosted_finisher(&row.session.id, cookie),
        };
        let r = self
            .verify(Caller::Page(finisher), &key, &typed, CodeApi::Native, ctx)
            .await;
        match r.result {
            // The session as it is now: finished by this browser, unless it stopped being
            // open with this code meanwhile (then the code verified but the session did
            // not). If it cannot be read, the code was accepted and a reload goes on.
            Ok(_) => match self.hosted_row(&row.session.id).await {
                Ok(Some(now)) if now.verified && self.finished_here(&now, Some(cookie)) => {
                    session_redirect(
                        &row.session.return_url,
                        &row.session.id,
                        &tenant.allowed_return_urls,
                    )
                    .ok_or(PageError::Over)
                }
                Ok(_) => Err(PageError::Over),
                Err(_) => Err(PageError::Finishing),
            },
            Err(ServiceError::Mismatch { attempts_remaining }) => {
                // Named by the code as the page read it when the post came: if a new one
                // was sent meanwhile, this guess is not taken as wrong for it.
                self.page_guesses.wrong(
                    &row.session.id,
                    &code_of(row),
                    &typed,
                    row.session.expires_at,
                    self.core.now(),
                );
                Err(PageError::WrongCode(attempts_remaining))
            }
            Err(ServiceError::Invalid(_)) => Err(PageError::BadCode),
            Err(ServiceError::RateLimited {
                retry_after_secs, ..
            }) => Err(PageError::Limited(retry_after_secs)),
            Err(
                ServiceError::OtpExpired
                | ServiceError::OtpSuperseded
                | ServiceError::OtpCancelled
                | ServiceError::OtpFailed,
            ) => Err(PageError::CodeEnded),
            Err(ServiceError::Unavailable(_) | ServiceError::Overloaded) => Err(PageError::Busy),
            Err(_) => Err(PageError::Over),
        }
    }
}
