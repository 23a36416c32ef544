//! SES events through SNS (API.md §16.2): a message verified with its signing certificate
//! (fetched only from the hosts `sns_cert_url_allowed` admits, once per URL, and kept), from
//! the tenant's topic — the one its settings name, else one of the AWS account its SES
//! credentials belong to, as STS names it once — and a subscription confirmed once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::provider_events::refused;
use crate::domain::provider::Provider;
use crate::domain::provider_event::{
    sns_cert_url_allowed, sns_url_allowed, ProviderEvent, SnsMessage, SnsType,
};
use crate::domain::sns::cert_key;
use crate::domain::tenant::Tenant;
use crate::service::delivery::transport::ses;
use crate::service::{Events, ServiceError};
use crate::storage::SeenEvent;

/// Certificates kept (by URL); SNS signs with a handful at a time.
const CERTS_KEPT: usize = 32;

/// Where the AWS account of a tenant's SES access key is kept once STS named it (a pin:
/// `…-pin` outlives the purge of events); the key's id completes the name.
const SES_ACCOUNT_PIN: &str = "ses-account-pin";

/// The account an SNS topic's ARN names (`arn:aws:sns:{region}:{account}:{name}`).
fn topic_account(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn") && parts.nth(1) == Some("sns"))
        .then(|| parts.nth(1))
        .flatten()
}

const CERT_MAX: usize = 16 * 1024;

/// Keys whose STS misses are remembered before the ones that are no longer recent go.
const STS_MISSES_KEPT: usize = 4096;

/// How long a key STS refused or did not answer for is not asked again (ms).
const STS_MISS_KEPT: i64 = 30_000;

/// Keys STS refused (`true`) or did not answer for, and when.
#[derive(Default)]
struct StsMisses(Mutex<HashMap<String, (i64, bool)>>);

impl StsMisses {
    fn recent(&self, key: &str, now: i64) -> Option<bool> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A clock set back makes no entry recent for longer.
        m.get(key)
            .filter(|(at, _)| (0..STS_MISS_KEPT).contains(&(now - at)))
            .map(|(_, refused)| *refused)
    }

    fn note(&self, key: String, now: i64, refused: bool) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= STS_MISSES_KEPT {
            m.retain(|_, (at, _)| (0..STS_MISS_KEPT).contains(&(now - *at)));
        }
        m.insert(key, (now, refused));
    }
}

/// STS is asked about one key at a time: a burst of messages before the first answer makes
/// one call, and the rest read what it kept. Turns in use only (none is kept once its last
/// holder is done).
fn sts_turn(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut turns = TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    turns.retain(|_, t| Arc::strong_count(t) > 1);
    Arc::clone(turns.entry(key.to_string()).or_default())
}

fn sts_misses() -> &'static StsMisses {
    static MISSES: OnceLock<StsMisses> = OnceLock::new();
    MISSES.get_or_init(StsMisses::default)
}

/// The answer to an event when STS refused the key (401: nothing verifies with it) or did
/// not name its account (503: SNS sends the message again).
fn sts_miss(refused: bool) -> ServiceError {
    if refused {
        ServiceError::EventUnverified
    } else {
        ServiceError::Unavailable("STS did not name the SES account".into())
    }
}

/// Certificate fetches at a time, and how long a message waits for one.
const FETCHES: usize = 4;
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn fetches() -> &'static tokio::sync::Semaphore {
    static FETCHING: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    FETCHING.get_or_init(|| tokio::sync::Semaphore::new(FETCHES))
}

fn certs() -> &'static Mutex<HashMap<String, Vec<u8>>> {
    static CERTS: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    CERTS.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Events {
    /// The PEM at an SNS certificate URL, fetched once and kept.
    pub(super) async fn sns_certificate(&self, url: &str) -> Result<Vec<u8>, ServiceError> {
        let key = cert_key(url).ok_or(ServiceError::EventUnverified)?;
        let kept = || {
            let m = certs().lock().unwrap_or_else(|e| e.into_inner());
            m.get(&key).cloned()
        };
        if let Some(c) = kept() {
            return Ok(c);
        }
        // A few fetches at a time, whatever the number of (unverified) messages naming
        // certificates not kept yet; one that waited finds what another fetched.
        // Waited for a few seconds at most: forged messages naming certificates that do not
        // answer make a queue, which a message SNS sent is not stuck behind (503: it comes
        // again).
        let unavailable =
            || ServiceError::Unavailable("the SNS signing certificate could not be fetched".into());
        let _turn = tokio::time::timeout(FETCH_WAIT, fetches().acquire())
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| unavailable())?;
        if let Some(c) = kept() {
            return Ok(c);
        }
        let pem = match self
            .hooks
            .client()
            .get(url, self.http_timeout(), CERT_MAX)
            .await
        {
            Ok((200, body)) => body,
            // No such certificate at SNS's own address: not a message SNS signed (408 and 429
            // are the host's own trouble, like a 5xx: 503).
            Ok((status, _)) if (400..500).contains(&status) && !matches!(status, 408 | 429) => {
                tracing::warn!(status, "the SNS signing certificate was not found");
                return Err(ServiceError::EventUnverified);
            }
            Ok((status, _)) => {
                tracing::warn!(status, "the SNS signing certificate could not be fetched");
                // Not the sender's fault: 503, so SNS sends it again.
                return Err(ServiceError::Unavailable(
                    "the SNS signing certificate could not be fetched".into(),
                ));
            }
            // Not to be fetched from there, or not a certificate's size: refused.
            Err(e @ ("host_not_allowed" | "malformed" | "too_large")) => {
                tracing::warn!(
                    error = e,
                    "the SNS signing certificate could not be fetched"
                );
                return Err(ServiceError::EventUnverified);
            }
            // No answer (a connect, TLS, name or time failure): SNS sends it again on 503.
            Err(e) => {
                tracing::warn!(
                    error = e,
                    "the SNS signing certificate could not be fetched"
                );
                return Err(ServiceError::Unavailable(
                    "the SNS signing certificate could not be fetched".into(),
                ));
            }
        };
        let mut kept = certs().lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= CERTS_KEPT {
            kept.clear();
        }
        kept.insert(key, pem.clone());
        Ok(pem)
    }

    /// An SNS message verified with its certificate: SES's events of a notification, or
    /// `None` for a subscription (confirmed once) or unsubscribe confirmation.
    pub(super) async fn verified_sns(
        &self,
        tenant: &Tenant,
        p: &Provider,
        body: &[u8],
    ) -> Result<Option<Vec<ProviderEvent>>, ServiceError> {
        let msg = SnsMessage::parse(body).map_err(refused)?;
        let hosts = self
            .core
            .settings
            .load()
            .delivery
            .sns_certificate_hosts
            .clone();
        if !sns_cert_url_allowed(&msg.signing_cert_url, &hosts) || !msg.fresh(self.core.now()) {
            return Err(ServiceError::EventUnverified);
        }
        // Every SNS topic is signed with the same certificates: only the tenant's topic is
        // taken — the one its settings name (checked before any certificate is fetched),
        // else one of the account its SES credentials belong to (asked of STS once).
        let named = p.setting("events_topic_arn");
        if named.is_some_and(|t| t != msg.topic_arn) {
            return Err(ServiceError::EventUnverified);
        }
        // The account already known: another's topic is refused before any fetch too.
        let kept = match named {
            None => self.kept_ses_account(tenant, p).await?,
            Some(_) => None,
        };
        if kept
            .as_deref()
            .is_some_and(|a| topic_account(&msg.topic_arn) != Some(a))
        {
            return Err(ServiceError::EventUnverified);
        }
        let cert = self.sns_certificate(&msg.signing_cert_url).await?;
        msg.verify(&cert).map_err(refused)?;
        if named.is_none() && kept.is_none() {
            let account = self.learn_ses_account(tenant, p).await?;
            if topic_account(&msg.topic_arn) != Some(account.as_str()) {
                tracing::warn!(tenant_id = %tenant.id, "an SNS topic of another AWS account than the tenant's SES credentials was refused");
                return Err(ServiceError::EventUnverified);
            }
        }
        match msg.kind {
            SnsType::Notification => Ok(Some(msg.ses_events().map_err(refused)?)),
            SnsType::UnsubscribeConfirmation => Ok(None),
            SnsType::SubscriptionConfirmation => {
                let Some(url) = msg
                    .subscribe_url
                    .as_deref()
                    .filter(|u| sns_url_allowed(u, &hosts))
                else {
                    return Err(ServiceError::EventUnverified);
                };
                let id = format!("subscribe:{}", msg.message_id);
                // Followed once: recorded once SNS took it, so a repeat changes nothing and a
                // failed one is tried again when SNS sends it again (503 tells it to).
                let (tid, check) = (tenant.id.clone(), id.clone());
                if self
                    .core
                    .db(move |s| s.provider_pin(&tid, &check))
                    .await?
                    .is_some()
                {
                    return Ok(None);
                }
                match self
                    .hooks
                    .client()
                    .get(url, self.http_timeout(), CERT_MAX)
                    .await
                {
                    Ok((s, _)) if (200..300).contains(&s) => {
                        tracing::info!(tenant_id = %tenant.id, "confirmed the SNS subscription of the tenant's SES events");
                        let confirmed = SeenEvent {
                            tenant: tenant.id.clone(),
                            provider: id,
                            event_id: "confirmed".into(),
                            now: self.core.now(),
                        };
                        self.core
                            .write(move |s| s.record_provider_event(&confirmed))
                            .await?;
                        Ok(None)
                    }
                    Ok((s, _)) => {
                        tracing::warn!(tenant_id = %tenant.id, status = s, "SNS refused the subscription confirmation");
                        Err(ServiceError::Unavailable(
                            "SNS refused the subscription confirmation".into(),
                        ))
                    }
                    Err(e) => {
                        tracing::warn!(tenant_id = %tenant.id, error = e, "confirming the SNS subscription failed");
                        Err(ServiceError::Unavailable(
                            "confirming the SNS subscription failed".into(),
                        ))
                    }
                }
            }
        }
    }

    /// The AWS account of the tenant's SES access key, not known yet: asked of STS
    /// (`GetCallerIdentity`) and kept. STS refusing the key → 401 (these credentials verify
    /// nothing); no answer → 503, so SNS sends the message again.
    async fn learn_ses_account(
        &self,
        tenant: &Tenant,
        p: &Provider,
    ) -> Result<String, ServiceError> {
        let key_id = p.setting("access_key_id").unwrap_or_default().to_string();
        let pin = format!("{key_id}:{SES_ACCOUNT_PIN}");
        // A key STS just refused, or did not answer for, is not asked again for a while:
        // messages (anyone may replay one SNS signed) cannot make a call each. The tenant's
        // settings as read are part of the key, so a change of them (a fixed secret under
        // the same key id) is asked about at once, on every instance.
        let miss_key = format!("{}/{}/{key_id}", tenant.id, tenant.row_version);
        let recent_miss = || sts_misses().recent(&miss_key, self.core.now());
        if let Some(refused) = recent_miss() {
            return Err(sts_miss(refused));
        }
        // One call at a time a key; a message that waited reads what the call before it
        // kept (the account, or the miss). The wait is bounded as a certificate fetch's is.
        let _turn = tokio::time::timeout(FETCH_WAIT, sts_turn(&miss_key).lock_owned())
            .await
            .map_err(|_| ServiceError::Unavailable("STS is being asked for this key".into()))?;
        if let Some(account) = self.kept_ses_account(tenant, p).await? {
            return Ok(account);
        }
        if let Some(refused) = recent_miss() {
            return Err(sts_miss(refused));
        }
        let now = self.core.now();
        let asked = self.ask_sts(tenant, p, &key_id).await;
        let account = match asked {
            Ok(a) => a,
            Err(refused) => {
                sts_misses().note(miss_key, now, refused);
                return Err(sts_miss(refused));
            }
        };
        let kept = SeenEvent {
            tenant: tenant.id.clone(),
            provider: pin,
            event_id: account.clone(),
            now: self.core.now(),
        };
        self.core
            .write(move |s| s.record_provider_event(&kept))
            .await?;
        Ok(account)
    }

    /// The AWS account of the tenant's SES access key, if STS named it before.
    async fn kept_ses_account(
        &self,
        tenant: &Tenant,
        p: &Provider,
    ) -> Result<Option<String>, ServiceError> {
        let key_id = p.setting("access_key_id").unwrap_or_default();
        let (tid, pin) = (tenant.id.clone(), format!("{key_id}:{SES_ACCOUNT_PIN}"));
        self.core.db(move |s| s.provider_pin(&tid, &pin)).await
    }

    /// STS's answer for the key: the account, or whether it refused the key (`Err(true)`)
    /// or gave no answer naming one (`Err(false)`).
    async fn ask_sts(&self, tenant: &Tenant, p: &Provider, key_id: &str) -> Result<String, bool> {
        let secrets = self
            .core
            .open_provider_secrets(&tenant.id, p)
            .await
            .map_err(|e| {
                tracing::warn!(tenant_id = %tenant.id, error = %e, "the tenant's SES secret could not be opened to ask STS for its account");
                false
            })?;
        let base = self
            .core
            .settings
            .load()
            .delivery
            .provider_base_urls
            .get("sts")
            .map(|u| u.trim_end_matches('/').to_string());
        let key = ses::Key {
            access_key_id: key_id,
            secret_access_key: secrets.get("secret_access_key").map_or("", String::as_str),
            region: p.setting("region").unwrap_or_default(),
        };
        let r = ses::caller_identity(&key, base.as_deref(), self.core.now()).ok_or_else(|| {
            tracing::warn!(tenant_id = %tenant.id, "delivery.provider_base_urls.sts has no host");
            false
        })?;
        let answer = r.send(self, self.http_timeout()).await.map_err(|e| {
                tracing::warn!(tenant_id = %tenant.id, error = e, "STS did not answer for the tenant's SES account");
                false
            })?;
        match answer.status {
            200..=299 => ses::caller_account(&answer.body).ok_or_else(|| {
                tracing::warn!(tenant_id = %tenant.id, "STS's answer named no account");
                false
            }),
            401 | 403 => {
                tracing::warn!(tenant_id = %tenant.id, status = answer.status, "STS refused the tenant's SES credentials: its SNS messages cannot be verified");
                Err(true)
            }
            status => {
                tracing::warn!(tenant_id = %tenant.id, status, "STS did not name the account of the tenant's SES credentials");
                Err(false)
            }
        }
    }
}
