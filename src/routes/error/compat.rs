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
pub const SMTP_HOST_NOT_ALLOWED: &str = "Error: SMTP host not allowed";

/// Whether a refused request names the relay's host or port.
fn names_relay_address(e: &ServiceError) -> bool {
    matches!(e, ServiceError::Invalid(errs)
        if errs.iter().any(|f| f.field == "smtp.host" || f.field == "smtp.port"))
}

impl CompatError {
    pub fn bad(body: &'static str) -> CompatError {
        CompatError {
            status: StatusCode::BAD_REQUEST,
            body,
            retry_after: None,
        }
    }

    /// How a service failure reads on a compat route; `mail_context` is true for `/otp`.
    /// Decided by the error's code ([`ErrorCode`]), like the native answer.
    pub fn from_service(e: ServiceError, mail_context: bool) -> CompatError {
        use ErrorCode as C;
        let with = |status, body| CompatError {
            status,
            body,
            retry_after: None,
        };
        match &e {
            ServiceError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "unavailable: the database, or a service this request needs, did not answer")
            }
            ServiceError::Internal(cause) => tracing::error!(cause = %cause, "internal error"),
            _ => {}
        }
        match e.code() {
            C::RateLimited => CompatError {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: "Too Many Requests",
                retry_after: match e {
                    ServiceError::RateLimited {
                        retry_after_secs, ..
                    } => Some(retry_after_secs),
                    _ => None,
                },
            },
            C::Overloaded | C::Unavailable => CompatError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: "Service Unavailable",
                retry_after: Some(1),
            },
            C::Internal => with(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            C::Unauthorized if mail_context => CompatError::bad(MAIL_ERROR),
            C::Unauthorized => with(StatusCode::UNAUTHORIZED, "Unauthorized"),
            C::SmtpHostNotAllowed
            | C::SmtpPortNotAllowed
            | C::SmtpPlaintextNotAllowed
            | C::SmtpHostUnresolvable => CompatError::bad(SMTP_HOST_NOT_ALLOWED),
            // A host or port that is no host or port at all is refused like a barred one.
            C::InvalidRequest if names_relay_address(&e) => CompatError::bad(SMTP_HOST_NOT_ALLOWED),
            C::Conflict => CompatError::bad("Unknown Error - Internal Error Code: 3009"),
            C::OtpMismatch => with(StatusCode::FORBIDDEN, "OTP Mismatched!"),
            C::AttemptsExhausted => CompatError::bad("Maximum Attempts Reached!"),
            _ if mail_context => CompatError::bad(MAIL_ERROR),
            C::InvalidRequest | C::Unprocessable | C::InvalidEmail | C::TenantNotFound => {
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
        b.body(self.body)
    }
}
