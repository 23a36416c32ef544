//! Why an outbound request got no answer, and whether it may have gone out: what decides
//! between "try again, here or elsewhere" and "unknown, never sent again" (API.md §19.2).

use std::time::Duration;

use super::Refused;
use crate::net_policy::HostRefusal;

/// How long a connection (DNS, TCP and TLS) may take. A connect cut by the request's own
/// timeout instead cannot be told from a request that went out, so the transports start no
/// request with less than this left ([`MIN_REQUEST_TIME`]): the connect's own bound always
/// comes first — unless the request's whole bound is no longer than this
/// (`delivery.http_timeout_seconds` of 1 or 2), where a connect slower than the request's
/// time counts as a request that may have gone out.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time left for which a transport starts a request.
pub const MIN_REQUEST_TIME: Duration = CONNECT_TIMEOUT;

/// Why an outbound request got no answer, and whether it went out:
/// `unresolvable`, `connect`, `tls` and `malformed` — nothing was sent;
/// `timeout` and `request` — the request may have reached the endpoint.
pub const NO_ANSWER: [(&str, &str, bool); 6] = [
    ("unresolvable", "the host's name does not resolve", false),
    ("connect", "no connection could be made", false),
    ("tls", "the TLS handshake failed", false),
    ("malformed", "the request could not be made", false),
    ("timeout", "no answer came in time", true),
    ("request", "the connection broke off", true),
];

/// [`NO_ANSWER`]'s words for a cause, and whether the request may have gone out.
pub fn no_answer(cause: &str) -> (&'static str, bool) {
    NO_ANSWER
        .iter()
        .find(|(c, _, _)| *c == cause)
        .map(|(_, words, sent)| (*words, *sent))
        .unwrap_or(("no answer", true))
}

/// The cause of a failed request, in [`NO_ANSWER`]'s words (or `host_not_allowed`).
pub(super) fn classify(e: &reqwest::Error) -> &'static str {
    // Built wrong: nothing went out.
    if e.is_builder() {
        return "malformed";
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut tls = false;
    while let Some(s) = src {
        if let Some(Refused(refusal)) = s.downcast_ref::<Refused>() {
            // A name that did not resolve (NXDOMAIN, SERVFAIL, a resolver timeout) is no
            // verdict of the policy: nobody was reached, and it may resolve later.
            return if *refusal == HostRefusal::Unresolvable {
                "unresolvable"
            } else {
                "host_not_allowed"
            };
        }
        tls |= s.is::<rustls::Error>() || wraps_rustls(s);
        src = s.source();
    }
    // Only a failure while connecting (a connect that timed out included) reached nobody.
    if e.is_connect() {
        if tls {
            "tls"
        } else {
            "connect"
        }
    } else if e.is_timeout() {
        "timeout"
    } else {
        "request"
    }
}

/// Whether `e` is an `io::Error` that wraps rustls's error, however deep. rustls's error
/// comes wrapped in `io::Error`s (one in another), whose `source` is the wrapped error's
/// source, not the wrapped error: it is reached only through `get_ref`.
fn wraps_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut io = e.downcast_ref::<std::io::Error>();
    while let Some(inner) = io.and_then(std::io::Error::get_ref) {
        if inner.is::<rustls::Error>() {
            return true;
        }
        io = inner.downcast_ref::<std::io::Error>();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_that_may_have_gone_out_is_maybe_sent() {
        for cause in ["unresolvable", "connect", "tls", "malformed"] {
            assert!(!no_answer(cause).1, "{cause}");
        }
        for cause in ["timeout", "request", "something new"] {
            assert!(no_answer(cause).1, "{cause}");
        }
        assert!(MIN_REQUEST_TIME >= CONNECT_TIMEOUT);
    }

    #[test]
    fn rustls_error_is_found_inside_io_errors() {
        use std::io::{Error, ErrorKind};
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let wrapped = Error::other(Error::new(ErrorKind::InvalidData, bad));
        assert!(wraps_rustls(&wrapped));
        let plain = Error::other(Error::from(ErrorKind::ConnectionRefused));
        assert!(!wraps_rustls(&plain));
    }
}
