//! Opening a session to a relay: our own TCP_NODELAY socket to an SSRF-checked address,
//! implicit TLS or STARTTLS (both ours), the relay's reads bounded as text, AUTH.

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
        // Every byte the relay sends goes through a bound (API.md §6.22), read as SMTP text —
        // under TLS too: lettre reads a reply line without a limit and checks its length
        // only afterwards.
        let mut conn = match target.tls {
            TlsMode::Implicit => {
                let tls = self.tls_on(name, tcp).await?;
                let stream = bounded::Bounded::new(TlsStream::new(tls, b""), addr);
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
                    .await
                    .map_err(greeting_failed)?
            }
            TlsMode::Starttls => self.starttls(name, tcp, addr, &hello).await?,
            TlsMode::None => {
                let stream = bounded::Bounded::new(tcp, addr);
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
                    .await
                    .map_err(greeting_failed)?
            }
        };
        if !target.username.is_empty() {
            // Credentials never travel in the clear, whatever the settings say.
            if target.tls == TlsMode::None {
                conn.abort().await;
                return Err(DeliveryError::login_in_clear());
            }
            let (mechanisms, secret): (&[Mechanism], _) = match &target.auth {
                SmtpAuth::Password(p) => (&[Mechanism::Plain, Mechanism::Login], p),
                // `user=…\x01auth=Bearer <token>\x01\x01`, base64 (lettre writes it).
                SmtpAuth::Xoauth2(token) => (&[Mechanism::Xoauth2], token),
            };
            let creds =
                Credentials::new(target.username.clone(), secret.expose_secret().to_string());
            let logged_in = match &target.auth {
                SmtpAuth::Xoauth2(_) => xoauth2(&mut conn, &creds).await,
                SmtpAuth::Password(_) => conn.auth(mechanisms, &creds).await,
            };
            if let Err(e) = logged_in {
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

    /// TLS on our socket, the relay's certificate checked for its name.
    async fn tls_on(
        &self,
        name: &HostName,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DeliveryError> {
        let server_name =
            ServerName::try_from(name.tls_name()).map_err(|e| fail(DeliveryReason::Tls, e))?;
        self.inner
            .implicit_tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| refused_if(fail(DeliveryReason::Tls, tls_failure(&e)), turned_away(&e)))
    }

    /// A STARTTLS session (required, never opportunistic: a relay without it fails here).
    /// We upgrade, not lettre: lettre would put TLS above the bound, which would then see
    /// records instead of reply lines. The greeting, EHLO and STARTTLS go through a
    /// connection on a lent socket; after the relay's go-ahead the socket comes back
    /// (whatever that connection buffered beyond the `220` is dropped, so nothing sent
    /// before TLS is read as sent under it), TLS goes on it, and a second connection, its
    /// reads bounded as text, says EHLO again over TLS — a `220` stands in for the greeting
    /// a relay does not repeat ([`TlsStream`]).
    async fn starttls(
        &self,
        name: &HostName,
        tcp: TcpStream,
        addr: SocketAddr,
        hello: &ClientId,
    ) -> Result<AsyncSmtpConnection, DeliveryError> {
        let lent = Lent(Arc::new(Mutex::new(Some(tcp))), addr);
        let stream = bounded::Bounded::new(lent.clone(), addr);
        let mut plain = AsyncSmtpConnection::connect_with_transport(Box::new(stream), hello)
            .await
            .map_err(greeting_failed)?;
        let after_tls = |e: lettre::transport::smtp::Error| {
            refused_if(
                smtp_fail(DeliveryReason::Tls, &e),
                session_refused(&e, true),
            )
            .busy(busy_reply(&e, true))
        };
        if !plain.server_info().supports_feature(Extension::StartTls) {
            plain.abort().await;
            return Err(
                fail(DeliveryReason::Tls, "the relay does not offer STARTTLS")
                    .with_code(crate::domain::delivery::NO_STARTTLS),
            );
        }
        plain.command(Starttls).await.map_err(after_tls)?;
        let tcp = lent
            .take()
            .ok_or_else(|| fail(DeliveryReason::Tls, "the connection was lost at STARTTLS"))?;
        drop(plain);
        let tls = self.tls_on(name, tcp).await?;
        let stream = bounded::Bounded::new(TlsStream::new(tls, b"220 TLS on\r\n"), addr);
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), hello)
            .await
            .map_err(after_tls)
    }
}

/// A socket lent to the plain part of a STARTTLS session, taken back at the relay's
/// go-ahead; reads and writes after that fail.
#[derive(Clone)]
struct Lent(Arc<Mutex<Option<TcpStream>>>, SocketAddr);

impl Lent {
    fn take(&self) -> Option<TcpStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(s) => f(Pin::new(s)),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket went on to TLS",
            ))),
        }
    }
}

impl fmt::Debug for Lent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lent({})", self.1)
    }
}

impl AsyncRead for Lent {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Lent {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_shutdown(cx))
    }
}

impl AsyncTokioStream for Lent {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.1)
    }
}

/// The greeting or EHLO failed: any 4xx there, or the connection dropped, is the relay
/// turning the session away.
fn greeting_failed(e: lettre::transport::smtp::Error) -> DeliveryError {
    refused_if(
        smtp_fail(DeliveryReason::Unreachable, &e),
        session_refused(&e, true),
    )
    .busy(busy_reply(&e, true))
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
        .ok()
        .and_then(|m| idna::domain_to_ascii(m.email.domain()).ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A TLS stream handed to lettre (our own socket, with TCP_NODELAY set). After STARTTLS a
/// relay says nothing until our EHLO, but a new lettre connection reads a greeting first:
/// `greeting` is read before what the relay sends (empty for implicit TLS).
struct TlsStream {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    greeting: &'static [u8],
}

impl TlsStream {
    fn new(tls: tokio_rustls::client::TlsStream<TcpStream>, greeting: &'static [u8]) -> Self {
        TlsStream { tls, greeting }
    }
}

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
        let this = self.get_mut();
        if !this.greeting.is_empty() {
            let n = this.greeting.len().min(buf.remaining());
            buf.put_slice(&this.greeting[..n]);
            this.greeting = &this.greeting[n..];
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tls.get_ref().0.peer_addr()
    }
}

/// A line of a SASL exchange: the empty answer to a challenge, or `*`, which cancels it.
struct SaslLine(&'static str);

impl std::fmt::Display for SaslLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// SASL XOAUTH2 with its initial response. A relay may refuse the token with a `334` that
/// carries the error (Gmail does); RFC 7628 §3.2.3 has the client answer it with an empty
/// line, after which the relay ends the exchange with its `535`. lettre's `auth` cannot
/// answer it: it fails there, and the `QUIT` that follows is read by the relay as the SASL
/// answer. A relay that asks yet again gets `*` (RFC 4954 §4: the exchange is cancelled) and
/// the login has failed.
async fn xoauth2(
    conn: &mut AsyncSmtpConnection,
    creds: &Credentials,
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    use lettre::transport::smtp::commands::Auth;
    if !conn
        .server_info()
        .supports_auth_mechanism(Mechanism::Xoauth2)
    {
        // lettre says it: no compatible mechanism.
        return conn.auth(&[Mechanism::Xoauth2], creds).await;
    }
    let answer = conn
        .command(Auth::new(Mechanism::Xoauth2, creds.clone(), None)?)
        .await?;
    if !answer.has_code(334) {
        return Ok(answer);
    }
    let last = conn.command(SaslLine("")).await?;
    if !last.has_code(334) {
        return Ok(last);
    }
    // Its `501` (or whatever it says) is not read as a login either way.
    let _ = conn.command(SaslLine("*")).await;
    // lettre's own error for a challenge XOAUTH2 cannot answer.
    Auth::new_from_response(Mechanism::Xoauth2, creds.clone(), &last).map(|_| last)
}
