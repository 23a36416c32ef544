//! `database.url` for PostgreSQL: the connection settings, and TLS per `sslmode` as libpq
//! means it — `disable` (plaintext), `prefer` (the default: TLS if the server offers it,
//! unverified), `require` (TLS, unverified), `verify-full` (TLS, the certificate chain to
//! the system roots or `database.tls_ca_file`, and the host name, checked).

use std::sync::Arc;

use ::postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgOptions;
use crate::storage::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::Migration(format!("database.url: {}", message.into()))
}

/// Take `sslmode` out of the URL's query (the client library knows no `verify-full`).
fn split_sslmode(url: &str) -> Result<(String, Mode), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Mode::Prefer));
    };
    let mut mode = Mode::Prefer;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = match v {
                    "disable" => Mode::Disable,
                    "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-full" => Mode::VerifyFull,
                    // The value is not repeated: the URL may hold a password.
                    _ => return Err(bad(
                        "its sslmode is not supported (disable, prefer, require or verify-full)",
                    )),
                }
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, mode))
}

/// Whether the connector can read `database.url` (its form, its `sslmode`), without
/// connecting: what `otpmint config check` asks (API.md §18.8).
pub fn check_url(url: &str) -> Result<(), String> {
    parsed(url).map(drop).map_err(|e| match e {
        StoreError::Migration(m) => m,
        e => e.to_string(),
    })
}

/// `database.url` read: the client library's configuration and the TLS mode.
fn parsed(url: &str) -> Result<(::postgres::Config, Mode), StoreError> {
    // The client ends the credentials at the first `@` of everything after `://`, and takes
    // what follows, up to `/` or `?`, as the host: an `@` written raw in a password (or
    // anywhere past the host with no credentials before it) would make the rest of the URL —
    // part of the password — the host name, which messages then show. Refused, unsaid.
    if let Some((creds, after)) = url.split_once("://").and_then(|(_, r)| r.split_once('@')) {
        let host = after.split(['/', '?']).next().unwrap_or(after);
        if creds.contains(['/', '?']) || host.contains('@') {
            return Err(bad(
                "it holds an '@' the client would read as the end of the user name and \
                 password: write an '@' in the user name, password or options as %40",
            ));
        }
    }
    let (url, mode) = split_sslmode(url)?;
    // The parser's messages can quote the URL, password included: say only what it is.
    let config = url
        .parse()
        .map_err(|_| bad("not a valid postgres:// URL"))?;
    Ok((config, mode))
}

/// The client configuration and the TLS connector for these options.
pub(super) fn client_config(
    opts: &PgOptions,
) -> Result<(::postgres::Config, MakeRustlsConnect), StoreError> {
    let (mut config, mode) = parsed(&opts.url)?;
    config
        .application_name("otpmint")
        .connect_timeout(opts.timeout)
        .keepalives(true)
        // Server notices ("relation … already exists, skipping") are not the operator's news.
        .notice_callback(|n| tracing::debug!(notice = %n.message(), "postgres notice"))
        .keepalives_idle(std::time::Duration::from_secs(30))
        .ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyFull => SslMode::Require,
        });
    #[cfg(target_os = "linux")]
    config.tcp_user_timeout(opts.timeout.max(std::time::Duration::from_secs(10)));
    // Every statement, and every wait for a lock, is bounded by database.timeout_seconds
    // (API.md §6.28): past it PostgreSQL cancels it (57014, 55P03) and the caller answers
    // 503. Options the URL already carries are kept.
    let ms = opts.timeout.as_millis();
    let options = format!(
        "{} -c statement_timeout={ms} -c lock_timeout={ms}",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let tls = if mode == Mode::VerifyFull {
        let mut roots = system_roots()?;
        if let Some(path) = &opts.tls_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Migration(format!("database.tls_ca_file {}: {e}", path.display()))
            })?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| StoreError::Migration(format!("database.tls_ca_file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Migration(format!("database.tls_ca_file: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(StoreError::Migration(
                    "database.tls_ca_file: no PEM certificate in the file".into(),
                ));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        // libpq's `require` and `prefer`: encrypted, but the peer is not authenticated.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth()
    };
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// The system's trust store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the platform's), which
/// `sslmode=verify-full` trusts as libpq does (API.md §7). A store named by those variables
/// that holds no certificate is an error, never widened; a platform without a store (a bare
/// image) gets the Mozilla roots built into the binary, and a warning says so.
fn system_roots() -> Result<rustls::RootCertStore, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        // As rustls-native-certs reads them: SSL_CERT_FILE set at all, or a directory named.
        let named = std::env::var_os("SSL_CERT_FILE").is_some()
            || std::env::var_os("SSL_CERT_DIR")
                .is_some_and(|d| std::env::split_paths(&d).any(|p| !p.as_os_str().is_empty()));
        if named {
            return Err(StoreError::Migration(
                "sslmode=verify-full: SSL_CERT_FILE / SSL_CERT_DIR hold no usable certificate"
                    .into(),
            ));
        }
        tracing::warn!(
            errors = found.errors.len(),
            "the system has no trusted root certificates; sslmode=verify-full trusts the built-in Mozilla roots"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// Accepts any certificate (libpq's `sslmode=require`), but still checks that the server
/// holds the key of the certificate it showed.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let (u, m) =
            split_sslmode("postgres://a@h/db?sslmode=verify-full&connect_timeout=3").unwrap();
        assert_eq!(u, "postgres://a@h/db?connect_timeout=3");
        assert_eq!(m, Mode::VerifyFull);
        let (u, m) = split_sslmode("postgres://a@h/db?sslmode=disable").unwrap();
        assert_eq!(u, "postgres://a@h/db");
        assert_eq!(m, Mode::Disable);
        assert_eq!(split_sslmode("postgres://h/db").unwrap().1, Mode::Prefer);
        assert!(split_sslmode("postgres://h/db?sslmode=allow").is_err());
    }

    #[test]
    fn a_raw_at_sign_in_the_password_is_refused_without_echoing_it() {
        for url in [
            "postgres://root:MyS3cret@Passw0rd@127.0.0.1:5432/db",
            "postgres://h:5432/db?user=u&password=MyS3cret@Passw0rd",
            "postgres://u:MyS3/cret@Passw0rd@h/db",
        ] {
            let e = check_url(url).unwrap_err();
            assert!(e.contains("%40"), "{url}: {e}");
            assert!(!e.contains("S3") && !e.contains("Passw0rd"), "{url}: {e}");
        }
        for url in [
            "postgres://root:MyS3cret%40Passw0rd@127.0.0.1:5432/db",
            "postgres://root@127.0.0.1:5432/db?application_name=a@b",
            "postgresql://u:p@[::1]:5432/db",
            "postgres://u@h/db",
            "postgres://h/db",
        ] {
            check_url(url).unwrap();
        }
    }

    #[test]
    fn a_bad_url_never_echoes_the_password() {
        let opts = PgOptions {
            url: "postgres://u:hunter2@[::1/db".into(),
            pool_size: 1,
            tls_ca_file: None,
            timeout: std::time::Duration::from_secs(1),
            start_wait: std::time::Duration::ZERO,
        };
        let e = client_config(&opts).err().unwrap().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
