//! Errors of the OtpMint-compatible routes: OtpMint's status codes and bare-string bodies.

use super::*;

/// A failure of an OtpMint-compatible route: a status and OtpMint's bare-string body.
#[derive(Debug, thiserror::Error)]
#[error("{body}")]
pub struct CompatError {
    pub status: StatusCode,
    pub body: &'static str,
    pub retry_after: Option<u64>,
}

pub const MISSING_FIELDS: &str = "Missing required fields";
pub const MAIL_ERROR: &str = "Error: Mail Error -- 6055";
pub const UNKNOWN_BLOCKER: &str = "Unknown Error in blocker";

impl CompatError {
    pub fn bad(body: &'static str) -> CompatError {
        CompatError {
            status: StatusCode::BAD_REQUEST,
            body,
            retry_after: None,
        }
    }

    /// How a service failure reads on a compat route; `mail_context` is true for `/otp`.
    pub fn from_service(e: ServiceError, mail_context: bool) -> CompatError {
        use ServiceError as S;
        let with = |status, body| CompatError {
            status,
            body,
            retry_after: None,
        };
        match e {
            S::RateLimited {
                retry_after_secs, ..
            } => CompatError {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: "Too Many Requests",
                retry_after: Some(retry_after_secs),
            },
            S::Overloaded => CompatError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: "Service Unavailable",
                retry_after: Some(1),
            },
            S::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "database unavailable");
                CompatError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: "Service Unavailable",
                    retry_after: Some(1),
                }
            }
            S::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                with(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            S::Unauthorized if mail_context => CompatError::bad(MAIL_ERROR),
            S::Unauthorized => with(StatusCode::UNAUTHORIZED, "Unauthorized"),
            S::SmtpPolicy(_) => CompatError::bad("Error: SMTP host not allowed"),
            S::SecretTaken => CompatError::bad("Unknown Error - Internal Error Code: 3009"),
            S::Mismatch { .. } => with(StatusCode::FORBIDDEN, "OTP Mismatched!"),
            S::AttemptsExhausted => CompatError::bad("Maximum Attempts Reached!"),
            _ if mail_context => CompatError::bad(MAIL_ERROR),
            S::Invalid(_) | S::Unprocessable(_) | S::InvalidEmail(_) | S::TenantNotFound => {
                CompatError::bad(MISSING_FIELDS)
            }
            _ => CompatError::bad(UNKNOWN_BLOCKER),
        }
    }
}

impl ResponseError for CompatError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        b.content_type("text/html; charset=utf-8");
        if let Some(s) = self.retry_after {
            b.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            b.insert_header((header::CONNECTION, "close"));
        }
        b.body(self.body)
    }
}
