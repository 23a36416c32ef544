//! Every delivery failure mapped to one `reason` clients see, with a detail for the logs.

use std::{fmt, io};

use super::bounded;

pub use crate::domain::delivery::{DeliveryError, DeliveryReason, FailureKind};

pub(super) fn fail(reason: DeliveryReason, detail: impl fmt::Display) -> DeliveryError {
    let transient = !matches!(
        reason,
        DeliveryReason::HostNotAllowed | DeliveryReason::Rejected | DeliveryReason::Auth
    );
    DeliveryError::permanent(reason, detail.to_string()).classed(transient, false)
}

/// A TLS handshake's failure in words (API.md §18.8: the log names the cause): rustls's own
/// words, except for what a TLS-mode mismatch looks like to it — the relay's plain `220`
/// greeting read as a corrupt TLS record.
pub(super) fn tls_failure(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(_)) => "the relay did not answer in TLS: it may expect STARTTLS on this port (tls = \"starttls\", as on 587) or no TLS at all".into(),
        Some(rustls::Error::InvalidCertificate(c)) => {
            use rustls::CertificateError as C;
            // rustls's words for these name what to compare: the names the certificate
            // carries, its validity's times.
            let context = matches!(
                c,
                C::NotValidForNameContext { .. } | C::ExpiredContext { .. } | C::NotValidYetContext { .. }
            );
            match certificate_failure(c) {
                Some(words) if context => format!("the TLS handshake failed: {words} ({c})"),
                Some(words) => format!("the TLS handshake failed: {words}"),
                None => format!("the TLS handshake failed: {c}"),
            }
        }
        Some(inner) => format!("the TLS handshake failed: {inner}"),
        None => format!("the TLS handshake failed: {e}"),
    }
}

/// The certificate problems a relay's operator meets, in words that say what to change.
fn certificate_failure(c: &rustls::CertificateError) -> Option<&'static str> {
    use rustls::CertificateError as C;
    Some(match c {
        C::UnknownIssuer => "the relay's certificate is not signed by an authority this server trusts (a private CA goes in smtp.extra_root_certificates)",
        C::NotValidForName | C::NotValidForNameContext { .. } => "the relay's certificate does not name the host it was reached by (smtp.host must be a name, or address, on its certificate)",
        C::Expired | C::ExpiredContext { .. } => "the relay's certificate has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "the relay's certificate is not valid yet (check the clocks)",
        C::Other(o) => match o.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => "the relay presents a CA certificate (CA:TRUE) as its own: it needs a certificate of its own signed by a CA that smtp.extra_root_certificates lists",
            _ => return None,
        },
        _ => return None,
    })
}

/// A socket error by which a relay turns a session away: refused, reset, closed on us.
pub(super) fn turned_away(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Whether a lettre error is the relay answering that it has no room now: a 421 reply, or
/// at the greeting and EHLO (`greeting`) any 4xx reply.
pub(super) fn busy_reply(e: &lettre::transport::smtp::Error, greeting: bool) -> bool {
    e.status().is_some_and(|c| c.to_string() == "421") || (greeting && e.is_transient())
}

/// Whether a lettre error is the relay turning the session away: a busy reply
/// ([`busy_reply`]), or the connection refused or dropped under us.
pub(super) fn session_refused(e: &lettre::transport::smtp::Error, greeting: bool) -> bool {
    if busy_reply(e, greeting) {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return turned_away(io);
        }
        cur = err.source();
    }
    false
}

/// Whether an SMTP error came from the relay sending more than a reply may hold.
pub(super) fn overflowed(e: &lettre::transport::smtp::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if bounded::is_overflow(io) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// A failure of lettre before the mail transaction: reply classes decide whether to retry.
pub(super) fn smtp_fail(
    reason: DeliveryReason,
    e: &lettre::transport::smtp::Error,
) -> DeliveryError {
    if overflowed(e) {
        return fail(
            DeliveryReason::Rejected,
            "the relay sent an oversized reply",
        );
    }
    let d = fail(reason, smtp_detail(e));
    if e.is_permanent() {
        d.classed(false, false)
    } else if e.is_transient() || e.is_timeout() {
        d.classed(true, false)
    } else {
        d
    }
}

/// A lettre error described by its class and reply code only (the reply text can carry the
/// recipient's address).
fn smtp_detail(e: &lettre::transport::smtp::Error) -> String {
    let class = if e.is_permanent() {
        "permanent reply"
    } else if e.is_transient() {
        "transient reply"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_tls() {
        "tls error"
    } else if e.is_client() {
        "client error"
    } else {
        "connection error"
    };
    match e.status() {
        Some(code) => format!("{class} {code}"),
        None => class.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_mode_mismatch_is_told_in_words() {
        let mismatch = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        let words = tls_failure(&mismatch);
        assert!(
            words.contains("STARTTLS") && !words.contains("InvalidContentType"),
            "{words}"
        );
        let other = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(tls_failure(&other).starts_with("the TLS handshake failed: "));
        // A certificate's problem says what to change, not rustls's variant name.
        let certificate = |c: rustls::CertificateError| {
            tls_failure(&io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            ))
        };
        let ca = rustls::CertificateError::Other(rustls::OtherError(std::sync::Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        let words = certificate(ca);
        assert!(
            words.contains("CA:TRUE") && !words.contains("CaUsedAsEndEntity"),
            "{words}"
        );
        let words = certificate(rustls::CertificateError::UnknownIssuer);
        assert!(words.contains("smtp.extra_root_certificates"), "{words}");
        let words = certificate(rustls::CertificateError::NotValidForName);
        assert!(words.contains("does not name the host"), "{words}");
        // The names it does carry, as rustls says them.
        let words = certificate(rustls::CertificateError::NotValidForNameContext {
            expected: rustls_pki_types::ServerName::try_from("smtp.acme.example").unwrap(),
            presented: vec!["DnsName(\"mail.acme.example\")".into()],
        });
        assert!(
            words.contains("does not name the host") && words.contains("mail.acme.example"),
            "{words}"
        );
        let words = certificate(rustls::CertificateError::BadSignature);
        assert!(words.contains("BadSignature"), "{words}");
    }
}
