//! One request to a relay's OAuth2 token endpoint (RFC 6749), through the webhooks'
//! outbound client, and what its answer means for delivery.

use std::time::Duration;

use secrecy::SecretString;

use super::LONGEST_KEPT_SECS;
use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};
use crate::domain::oauth2::OAuth2;
use crate::domain::tenant::Tenant;
use crate::outbound::ApiRequest;
use crate::service::Delivery;

/// What a token endpoint answered.
pub(super) struct TokenAnswer {
    pub(super) access: SecretString,
    /// Seconds, bounded by [`LONGEST_KEPT_SECS`].
    pub(super) lifetime: u64,
    /// A new refresh token (never an empty one).
    pub(super) refresh: Option<String>,
}

/// The token endpoint's `error` codes kept as they are (RFC 6749 §5.2, and those of RFC 8628
/// and OpenID Connect that Microsoft and Google answer); any other value is `rejected`, so
/// an endpoint that echoes the request never puts a secret in a record or a log.
const OAUTH2_ERRORS: [&str; 12] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
    "interaction_required",
    "consent_required",
    "expired_token",
];

/// A token endpoint's failure as a delivery failure (`smtp_auth`, with the OAuth2 error
/// in `detail_code`).
pub(super) fn token_failed(kind: FailureKind, detail: &str, code: &str) -> DeliveryError {
    DeliveryError::new(
        DeliveryReason::Auth,
        kind,
        format!("OAuth2 token: {detail}"),
    )
    .with_code(code)
}

impl Delivery {
    /// One request to the relay's token endpoint: with `refresh`, the refresh token grant,
    /// else client credentials.
    pub(super) async fn request_token(
        &self,
        tenant: &Tenant,
        o: &OAuth2,
        client_secret: &str,
        refresh: Option<&str>,
    ) -> Result<TokenAnswer, DeliveryError> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            match refresh {
                Some(rt) => form
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", rt),
                None => form.append_pair("grant_type", "client_credentials"),
            };
            form.append_pair("client_id", &o.client_id)
                .append_pair("client_secret", client_secret);
            if !o.scope.is_empty() {
                form.append_pair("scope", &o.scope);
            }
            form.finish().into_bytes()
        };
        let timeout = Duration::from_secs(self.core.settings.load().delivery.http_timeout_seconds);
        let answer = self
            .events
            .hooks
            .client()
            .api(ApiRequest {
                url: &o.token_url,
                content_type: "application/x-www-form-urlencoded",
                headers: Vec::new(),
                body,
                timeout,
            })
            .await;
        let outcome = |o: &str| crate::metrics::inc(|m| &m.oauth2_token_requests, &[o]);
        let a = match answer {
            Ok(a) => a,
            Err("host_not_allowed") => {
                outcome("failed");
                return Err(token_failed(
                    FailureKind::Permanent,
                    "the token endpoint's host is not allowed",
                    "oauth2_host_not_allowed",
                ));
            }
            Err(cause) => {
                outcome("failed");
                return Err(token_failed(
                    FailureKind::Transient,
                    crate::outbound::no_answer(cause).0,
                    "oauth2_unavailable",
                ));
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
        if !(200..300).contains(&a.status) {
            let error = v
                .get("error")
                .and_then(|e| e.as_str())
                .and_then(|e| OAUTH2_ERRORS.iter().copied().find(|k| *k == e))
                .unwrap_or("rejected");
            return Err(match a.status {
                408 | 429 | 500..=599 => {
                    outcome("failed");
                    token_failed(
                        FailureKind::Transient,
                        &format!("the token endpoint answered {}", a.status),
                        "oauth2_unavailable",
                    )
                    .with_retry_after(a.retry_after)
                }
                _ => {
                    outcome("refused");
                    tracing::warn!(tenant_id = %tenant.id, status = a.status, error, "the OAuth2 token endpoint refused the relay's credentials");
                    token_failed(
                        FailureKind::Permanent,
                        &format!("the token endpoint answered {} {error}", a.status),
                        &format!("oauth2_{error}"),
                    )
                }
            });
        }
        // An answer without a token is no token endpoint's: the settings are at fault (a
        // `token_url` naming another address), not the endpoint's load.
        let Some(token) = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        else {
            outcome("refused");
            return Err(token_failed(
                FailureKind::Permanent,
                "the token endpoint's answer has no access_token",
                "oauth2_no_token",
            ));
        };
        outcome("ok");
        let access = SecretString::from(token.to_string());
        let lifetime = v
            .get("expires_in")
            .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
            .unwrap_or(3600)
            // The endpoint's word, bounded: no token is kept longer than a day (and a
            // lifetime past the clock's end cannot overflow it).
            .min(LONGEST_KEPT_SECS);
        // (An empty token is no token.)
        let refresh = v
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(TokenAnswer {
            access,
            lifetime,
            refresh,
        })
    }
}
