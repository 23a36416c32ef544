//! Opening a session to a relay: our own TCP_NODELAY socket to an SSRF-checked address,
//! implicit TLS or STARTTLS, the relay's reads bounded, AUTH.

use super::*;

impl Mailer {
    pub(super) async fn connect(
        &self,
        target: &SmtpTarget,
        name: &HostName,
        addrs: &[SocketAddr],
    ) -> Result<(AsyncSmtpConnection, SocketAddr), DeliveryError> {
        let hello = ClientId::Domain(hello_name(&target.from));
        let mut last_err = fail(DeliveryReason::Unreachable, "no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some((s, *addr));
                    break;
                }
                Err(e) => {
                    last_err = refused_if(fail(DeliveryReason::Unreachable, &e), turned_away(&e));
                }
            }
        }
        let Some((tcp, addr)) = tcp else {
            return Err(last_err);
        };
        self.inner
            .connections_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // lettre leaves Nagle on, which stalls every message ~40 ms (PITFALLS.md).
        tcp.set_nodelay(true)
            .map_err(|e| fail(DeliveryReason::Unreachable, e))?;
        let tls_name = name.tls_name();
        // Every byte the relay sends goes through a bound (API.md §6.22): lettre reads a
        // reply line without a limit and checks its length only afterwards.
        let (mut conn, plaintext) = match target.tls {
            TlsMode::Implicit => {
                let server_name = ServerName::try_from(tls_name.clone())
                    .map_err(|e| fail(DeliveryReason::Tls, e))?;
                let tls = self
                    .inner
                    .implicit_tls
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| refused_if(fail(DeliveryReason::Tls, &e), turned_away(&e)))?;
                let (stream, plain) = bounded::Bounded::new(TlsStream(tls), addr, true);
                let conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
                    .await
                    .map_err(greeting_failed)?;
                (conn, plain)
            }
            TlsMode::Starttls | TlsMode::None => {
                let (stream, plain) = bounded::Bounded::new(tcp, addr, true);
                let conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
                    .await
                    .map_err(greeting_failed)?;
                (conn, plain)
            }
        };
        if target.tls == TlsMode::Starttls {
            let params = self.tls_parameters(&tls_name)?;
            // From here on the bounded stream carries TLS records, not reply lines: it
            // still bounds the bytes per command; lettre checks line lengths.
            plaintext.store(false, std::sync::atomic::Ordering::SeqCst);
            // Required, never opportunistic: a server without STARTTLS fails here.
            conn.starttls(params, &hello).await.map_err(|e| {
                refused_if(
                    smtp_fail(DeliveryReason::Tls, &e),
                    session_refused(&e, true),
                )
            })?;
        }
        if !target.username.is_empty() {
            // Credentials never travel in the clear, whatever the settings say.
            if !conn.is_encrypted() && target.tls != TlsMode::Implicit {
                conn.abort().await;
                return Err(fail(
                    DeliveryReason::Auth,
                    "AUTH is never sent over an unencrypted connection",
                ));
            }
            let (mechanisms, secret): (&[Mechanism], _) = match &target.auth {
                SmtpAuth::Password(p) => (&[Mechanism::Plain, Mechanism::Login], p),
                // `user=…\x01auth=Bearer <token>\x01\x01`, base64 (lettre writes it).
                SmtpAuth::Xoauth2(token) => (&[Mechanism::Xoauth2], token),
            };
            let creds =
                Credentials::new(target.username.clone(), secret.expose_secret().to_string());
            if let Err(e) = conn.auth(mechanisms, &creds).await {
                conn.abort().await;
                let reason = if e.is_timeout() {
                    DeliveryReason::Timeout
                } else {
                    DeliveryReason::Auth
                };
                let mut err = smtp_fail(reason, &e);
                err.detail = "authentication failed".into();
                return Err(refused_if(
                    err,
                    e.is_timeout() || session_refused(&e, false),
                ));
            }
        }
        Ok((conn, addr))
    }

    fn tls_parameters(&self, domain: &str) -> Result<TlsParameters, DeliveryError> {
        let mut b = TlsParameters::builder(domain.to_string())
            .certificate_store(CertificateStore::WebpkiRoots);
        for pem in &self.inner.extra_pem {
            let cert = Certificate::from_pem(pem).map_err(|e| fail(DeliveryReason::Tls, e))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|e| fail(DeliveryReason::Tls, e))
    }
}

/// The greeting or EHLO failed: any 4xx there, or the connection dropped, is the relay
/// turning the session away.
fn greeting_failed(e: lettre::transport::smtp::Error) -> DeliveryError {
    refused_if(
        smtp_fail(DeliveryReason::Unreachable, &e),
        session_refused(&e, true),
    )
}

/// The failure as a session the relay turned away, when it was one.
pub(super) fn refused_if(err: DeliveryError, refused: bool) -> DeliveryError {
    if refused {
        let transient = err.is_transient();
        err.classed(transient, true)
    } else {
        err
    }
}

/// Add every certificate of a PEM file to `roots`; the file's bytes, or why not.
pub(crate) fn add_pem_roots(
    roots: &mut rustls::RootCertStore,
    path: &std::path::Path,
) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
        n += 1;
    }
    if n == 0 {
        return Err("no PEM certificate in the file".into());
    }
    Ok(pem)
}

pub(crate) fn hello_name(from: &str) -> String {
    from.parse::<Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Implicit-TLS stream handed to lettre (our own socket, with TCP_NODELAY set).
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsStream")
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
