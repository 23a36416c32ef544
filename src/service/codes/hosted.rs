//! Hosted verification (API.md §14.1): a tenant's backend opens a session; the person proves
//! an address on otpmint's pages — the code minted and verified like any other, through the
//! tenant's transports, under every limit — and goes back to the tenant's return URL with
//! `?session=hs_…`; the backend reads the outcome by id.

use crate::crypto::cipher::{decrypt_record, encrypt_record};
use crate::domain::delivery::DeliveryMode;
use crate::domain::email::RecipientEmail;
use crate::domain::keys::{random_id, CodeApi, ShareableKey};
use crate::domain::links::{allowed_return, with_query};
use crate::domain::locale::Locale;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Recipient;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::service::codes::mint::MintRequest;
use crate::service::core::audit::RequestContext;
use crate::service::{Codes, ServiceError};
use crate::storage::{CodeKey, Session, SessionRow};

/// How long a person has to finish a hosted session.
pub const SESSION_MS: Millis = 30 * 60 * 1000;
const KEY_KIND: &str = "hosted-key";
const CSRF_LABEL: &str = "hosted-csrf";

/// What a tenant asks for.
pub struct NewHosted {
    pub email: Option<RecipientEmail>,
    pub purpose: Purpose,
    pub locale: Option<Locale>,
    pub return_url: String,
    /// PKCE (API.md §17.2): the outcome is claimed once with its verifier.
    pub code_challenge: Option<crate::domain::claim::CodeChallenge>,
}

/// A tenant's pages, found open by [`Codes::pages_open`]: where they are.
pub struct PagesOpen {
    base: String,
}

pub struct Opened {
    pub id: String,
    pub url: String,
    pub expires_at: Millis,
}

/// A session's outcome as its tenant reads it.
pub struct Outcome {
    pub status: &'static str,
    pub email: Option<String>,
    pub verified_at: Option<Millis>,
}

/// Why a page action did not go through (shown on the page).
#[derive(Debug, PartialEq, Eq)]
pub enum PageError {
    BadEmail,
    /// Not a code at all (no attempt used).
    BadCode,
    WrongCode(u32),
    /// The code expired, or was replaced: a new one may be sent.
    CodeEnded,
    /// A limit or the resend cooldown: try again after so many seconds.
    Limited(u64),
    /// The key's resends are spent: the last code sent is the one to use.
    NoMoreCodes,
    NotSent,
    /// The address is on the tenant's suppression list: no retry helps.
    Refused,
    /// The code could not be checked now (503): the same code may be tried again.
    Busy,
    /// The code verified, but its session could not be read back then: a reload goes on.
    Finishing,
    /// Expired, failed, verified already, or its way back withdrawn: nothing more to do.
    Over,
}

/// A session's statuses, as [`status_of`] names them.
pub const SESSION_STATUSES: [&str; 4] = ["open", "verified", "failed", "expired"];

/// `open`, `verified`, `expired` or `failed` (its code's attempts spent; a code that could
/// not be delivered leaves it open: the person may send another).
pub fn status_of(row: &SessionRow, now: Millis) -> &'static str {
    // Its current code verified is the session verified, even if recording that on the
    // session did not happen.
    if row.verified || row.code_state.as_deref() == Some("verified") {
        "verified"
    } else if now >= row.session.expires_at {
        "expired"
    } else if row.code_state.as_deref() == Some("exhausted") {
        "failed"
    } else {
        "open"
    }
}

impl Codes {
    /// Whether the tenant may open a session: links on, and its pages approved (its route
    /// asks first, so these 422s come before the body's 400s).
    pub fn pages_open(&self, tenant: &Tenant) -> Result<PagesOpen, ServiceError> {
        let base = self.links_base().ok_or(ServiceError::LinksOff)?;
        if !self.pages_allowed(tenant) {
            return Err(ServiceError::PagesNotApproved);
        }
        Ok(PagesOpen { base })
    }

    pub async fn open_hosted(
        &self,
        tenant: &Tenant,
        PagesOpen { base }: PagesOpen,
        n: NewHosted,
    ) -> Result<Opened, ServiceError> {
        let Some(return_url) = allowed_return(&n.return_url, &tenant.allowed_return_urls) else {
            return Err(ServiceError::rule(
                "return_url",
                crate::domain::links::return_refusal(&n.return_url),
            ));
        };
        let now = self.core.now();
        let s = Session {
            id: format!("hs_{}", random_id(24)),
            tenant_id: tenant.id.clone(),
            email: n.email.map(|e| e.as_given().to_string()),
            purpose: n.purpose,
            locale: n.locale,
            return_url,
            created_at: now,
            expires_at: crate::domain::whole_second(now + SESSION_MS),
            code_challenge: n.code_challenge,
        };
        let row = s.clone();
        self.core.write(move |st| st.insert_session(&row)).await?;
        tracing::info!(tenant_id = %tenant.id, "hosted session opened");
        Ok(Opened {
            url: format!("{base}/h/{}", s.id),
            id: s.id,
            expires_at: s.expires_at,
        })
    }

    /// A session of this tenant (another tenant's is not found).
    pub async fn hosted_outcome(&self, tenant: &Tenant, id: &str) -> Result<Outcome, ServiceError> {
        let row = self
            .hosted_row(id)
            .await?
            .filter(|r| r.session.tenant_id == tenant.id)
            .ok_or(ServiceError::SessionNotFound)?;
        let row = self
            .settled_row(row, tenant)
            .await?
            .ok_or(ServiceError::SessionNotFound)?;
        // The address is shown until the outcome is claimed (API.md §17.2).
        Ok(Outcome {
            status: status_of(&row, self.core.now()),
            email: row.session.email.filter(|_| row.claimed_at.is_none()),
            verified_at: row.verified_at,
        })
    }

    /// A session and its (enabled) tenant, for the pages; `None`: unknown, or links are off.
    pub async fn hosted_page(
        &self,
        id: &str,
    ) -> Result<Option<(SessionRow, Tenant)>, ServiceError> {
        if self.links_base().is_none() {
            return Ok(None);
        }
        let Some(row) = self.hosted_row(id).await? else {
            return Ok(None);
        };
        let tid = row.session.tenant_id.clone();
        let tenant = self
            .core
            .db(move |s| s.tenant(&tid))
            .await?
            .filter(|t| t.enabled && self.pages_allowed(t));
        let Some(tenant) = tenant else {
            return Ok(None);
        };
        Ok(self.settled_row(row, &tenant).await?.map(|r| (r, tenant)))
    }

    /// `row` as it stands once the verify that took its code's last attempt has its
    /// outcome: not `failed` while that verify is still comparing (`settled_view`).
    /// `None`: the session is gone.
    async fn settled_row(
        &self,
        row: SessionRow,
        tenant: &Tenant,
    ) -> Result<Option<SessionRow>, ServiceError> {
        if status_of(&row, self.core.now()) != "failed" {
            return Ok(Some(row));
        }
        let Some(key) = self.session_key(&row, tenant).await else {
            return Ok(Some(row));
        };
        let k = CodeKey {
            tenant: tenant.id.clone(),
            key_digest: self.key_digest(&key),
            flavor: CodeApi::Native,
        };
        let (read, now) = (k.clone(), self.core.now());
        let Some(view) = self.core.db(move |s| s.challenge(&read, now)).await? else {
            return Ok(Some(row));
        };
        self.settled_view(&k, view, now).await?;
        self.hosted_row(&row.session.id).await
    }

    /// A session of this tenant (`None`: unknown, or another tenant's).
    pub(crate) async fn hosted_session_of(
        &self,
        tenant: &Tenant,
        id: &str,
    ) -> Result<Option<SessionRow>, ServiceError> {
        Ok(self
            .hosted_row(id)
            .await?
            .filter(|r| r.session.tenant_id == tenant.id))
    }

    pub(super) async fn hosted_row(&self, id: &str) -> Result<Option<SessionRow>, ServiceError> {
        let ok = id.len() == 27
            && id.starts_with("hs_")
            && id[3..].bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Ok(None);
        }
        let id = id.to_string();
        self.core.db(move |s| s.session(&id)).await
    }

    /// What a session keeps of the browser that finished it: a digest of the page's token
    /// for that browser's cookie (never the cookie itself).
    pub fn hosted_finisher(&self, id: &str, cookie: &str) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(self.hosted_csrf(id, cookie).as_bytes()).to_vec()
    }

    /// Whether this browser (its page cookie) is the one that finished the session.
    pub fn finished_here(&self, row: &SessionRow, cookie: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        match (&row.finished_by, cookie) {
            (Some(by), Some(c)) => bool::from(self.hosted_finisher(&row.session.id, c).ct_eq(by)),
            _ => false,
        }
    }

    /// The pages' CSRF token: bound to the session and to the browser's cookie.
    pub fn hosted_csrf(&self, id: &str, cookie: &str) -> String {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(self.core.keyring.get().pepper())
        else {
            return String::new();
        };
        for p in [CSRF_LABEL, id, cookie] {
            mac.update(p.as_bytes());
            mac.update(&[0]);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Mint and send the session's code (to the address it was opened with, else `email`).
    ///
    /// `sent`: what the session had sent when the posted form was made
    /// (`SessionRow::sent_mark`). A session that has sent a code since whose code can still
    /// be typed (a double click's second post, a reload of the answer) is answered
    /// `Ok(false)`, nothing sent: the page then shows that code, not the cooldown.
    /// `Ok(true)`: a code was sent now.
    pub async fn hosted_send(
        &self,
        row: &SessionRow,
        tenant: &Tenant,
        (email, sent): (&str, Option<&str>),
        ctx: &RequestContext,
    ) -> Result<bool, PageError> {
        // One send of a session at a time (`send_turn.rs`): a double click's second send
        // waits for the first, then finds its code and sends another under the same key (or
        // meets the cooldown) — not a second mint, which would supersede the code just sent.
        let turn = self
            .send_turn(&tenant.id, &row.session.id)
            .await
            .map_err(|_| PageError::NotSent)?;
        let sent = self
            .hosted_send_now(&row.session.id, tenant, (email, sent), ctx)
            .await;
        if sent == Ok(true) {
            // A new code: a guess wrong for the last one is checked again.
            self.page_guesses.forget(&row.session.id);
        }
        self.end_send_turn(turn).await;
        sent
    }

    /// [`Codes::hosted_send`] in the session's turn, from the session as it stands now.
    async fn hosted_send_now(
        &self,
        id: &str,
        tenant: &Tenant,
        (email, sent): (&str, Option<&str>),
        ctx: &RequestContext,
    ) -> Result<bool, PageError> {
        let row = &match self.hosted_row(id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(PageError::Over),
            Err(_) => return Err(PageError::NotSent),
        };
        // No code is sent for a sign-in that cannot go back to the tenant (API.md §17.7).
        let way_back = allowed_return(&row.session.return_url, &tenant.allowed_return_urls);
        if status_of(row, self.core.now()) != "open" || way_back.is_none() {
            return Err(PageError::Over);
        }
        if sent.is_some_and(|m| m != row.sent_mark()) && row.code_usable(self.core.now()) {
            return Ok(false);
        }
        let given = row.session.email.as_deref().unwrap_or(email);
        let to = RecipientEmail::parse(given.trim()).map_err(|_| PageError::BadEmail)?;
        // A code was sent: a new one under the same key (one attempt budget; the earlier
        // code keeps working), unless that key has ended.
        if let Some(key) = self.session_key(row, tenant).await {
            let resent = match ShareableKey::parse(&key, CodeApi::Native) {
                Some(key) => self.resend(tenant, key, ctx).await,
                None => Err(ServiceError::OtpNotFound),
            };
            match resent {
                Ok(_) => return Ok(true),
                Err(ServiceError::RateLimited {
                    retry_after_secs, ..
                }) => return Err(PageError::Limited(retry_after_secs)),
                Err(ServiceError::ResendLimit(_)) => return Err(PageError::NoMoreCodes),
                Err(ServiceError::RecipientSuppressed) => return Err(PageError::Refused),
                Err(
                    ServiceError::OtpExpired
                    | ServiceError::OtpSuperseded
                    | ServiceError::OtpCancelled
                    | ServiceError::OtpFailed,
                ) => {}
                Err(ServiceError::AttemptsExhausted | ServiceError::OtpUsed) => {
                    return Err(PageError::Over)
                }
                Err(_) => return Err(PageError::NotSent),
            }
        }
        let minted = self
            .mint(
                tenant,
                MintRequest {
                    to: Recipient::Email(to.clone()),
                    purpose: row.session.purpose.clone(),
                    flavor: CodeApi::Native,
                    delivery: Some(DeliveryMode::Sync),
                    locale: row.session.locale.clone(),
                    link: None,
                    stage: None,
                },
                ctx,
            )
            .await
            .map_err(|e| match e {
                ServiceError::RateLimited {
                    retry_after_secs, ..
                } => PageError::Limited(retry_after_secs),
                ServiceError::InvalidEmail(_) => PageError::BadEmail,
                ServiceError::RecipientSuppressed => PageError::Refused,
                _ => PageError::NotSent,
            })?;
        let key = minted.key.expose().to_string();
        let sealed = encrypt_record(
            &self.core.keyring.get(),
            KEY_KIND,
            tenant.id.as_str(),
            row.session.id.as_bytes(),
            key.as_bytes(),
        )
        .map_err(|_| PageError::NotSent)?;
        let (id, email, digest) = (
            row.session.id.clone(),
            to.as_given().to_string(),
            self.key_digest(&key),
        );
        match self
            .core
            .write(move |s| s.set_session_code(&id, &email, &digest, &sealed))
            .await
        {
            Ok(true) => Ok(true),
            // Not stored: the session ended, or a send at the same time (a double click)
            // superseded this code and stored its own. The page shows whichever holds when
            // it is read; "code ended" would be wrong for a double click still storing.
            Ok(false) => match self.hosted_page(&row.session.id).await {
                Ok(Some((now, _))) if status_of(&now, self.core.now()) == "open" => Ok(true),
                _ => Err(PageError::Over),
            },
            Err(_) => Err(PageError::NotSent),
        }
    }

    /// The shareable key of the session's current code (a data key another process rotated
    /// in is loaded first, API.md §11.6).
    pub(super) async fn session_key(&self, row: &SessionRow, tenant: &Tenant) -> Option<String> {
        let sealed = row.key_sealed.as_ref()?;
        let key = self
            .core
            .open_with_keyring(sealed, |ring| {
                decrypt_record(
                    ring,
                    KEY_KIND,
                    tenant.id.as_str(),
                    row.session.id.as_bytes(),
                    sealed,
                )
            })
            .await
            .ok()?;
        String::from_utf8(key).ok()
    }
}

impl Codes {
    pub async fn has_logo(&self, tenant: &crate::domain::keys::TenantId) -> bool {
        let id = tenant.clone();
        self.core
            .db(move |s| s.has_logo(&id))
            .await
            .unwrap_or(false)
    }

    /// A tenant's logo (`id` as given in a URL).
    pub async fn logo(&self, id: &str) -> Option<Vec<u8>> {
        let id = crate::domain::keys::TenantId::parse(id)?;
        self.core.db(move |s| s.logo(&id)).await.ok().flatten()
    }

    /// Store (or remove) the tenant's logo.
    pub async fn put_logo(&self, tenant: &Tenant, png: Option<&[u8]>) -> Result<(), ServiceError> {
        let (id, png, now) = (tenant.id.clone(), png.map(<[u8]>::to_vec), self.core.now());
        self.core
            .write(move |s| s.put_logo(&id, png.as_deref(), now))
            .await?;
        Ok(())
    }
}

/// `return_url` with `session=<id>` in its query — if the tenant's allowlist still allows
/// it (checked again at the redirect, API.md §17.7).
pub fn session_redirect(return_url: &str, id: &str, allowed: &[String]) -> Option<String> {
    allowed_return(return_url, allowed)?;
    with_query(return_url, &["session"], &[("session", id)])
}

/// What names a session's code for [`page_guesses`](super::page_guesses): its key (sealed,
/// as stored once per key) and how many times it was sent again.
pub(super) fn code_of(row: &SessionRow) -> Vec<u8> {
    let mut v = row.key_sealed.clone().unwrap_or_default();
    v.extend_from_slice(&row.resends.unwrap_or(0).to_be_bytes());
    v
}
