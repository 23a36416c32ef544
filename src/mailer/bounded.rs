//! A stream wrapper that bounds what a relay may send (API.md §6.22): at most 999
//! characters in one reply line and 64 KiB in reply to one command (counted since our last
//! write). Beyond either, the read fails, so a hostile relay cannot grow our memory. It
//! reads SMTP text: under TLS it sits above the TLS stream (connect.rs does STARTTLS itself
//! for this).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A reply line's characters (its `\r` counted, not its `\n`): lettre refuses a longer one
/// itself, after reading it, with an error that cannot be told from a garbled reply; this
/// bound sees it first, while it is read, so an oversized line is always refused as such
/// (`smtp_rejected`). API.md §6.22 asks at most 4 KiB; RFC 5321 §4.5.3.1.5 allows 512.
pub const LINE_MAX: usize = 999;
pub const REPLY_MAX: usize = 64 * 1024;

/// The marker inside the I/O error a bound raises.
#[derive(Debug)]
struct Overflow(&'static str);

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Overflow {}

/// Whether an I/O error is one of ours.
pub fn is_overflow(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Overflow>())
}

pub struct Bounded<S> {
    inner: S,
    peer: SocketAddr,
    since_write: usize,
    line: usize,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, peer: SocketAddr) -> Bounded<S> {
        Bounded {
            inner,
            peer,
            since_write: 0,
            line: 0,
        }
    }

    /// Count `new` bytes just read; an error when a bound is crossed.
    fn account(&mut self, new: &[u8]) -> io::Result<()> {
        self.since_write += new.len();
        if self.since_write > REPLY_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Overflow("the relay's reply is too large"),
            ));
        }
        for &b in new {
            if b == b'\n' {
                self.line = 0;
            } else {
                self.line += 1;
                if self.line > LINE_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Overflow("the relay's reply line is too long"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl<S> fmt::Debug for Bounded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bounded({})", self.peer)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                let new = filled[before..].to_vec();
                Poll::Ready(this.account(&new))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                // A new command: a new reply may come.
                this.since_write = 0;
            }
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> AsyncTokioStream for Bounded<S> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr() -> SocketAddr {
        "127.0.0.1:25".parse().unwrap()
    }

    #[tokio::test]
    async fn a_line_without_end_fails_after_the_line_bound() {
        let (mut relay, ours) = tokio::io::duplex(1 << 20);
        let mut b = Bounded::new(ours, addr());
        relay.write_all(&vec![b'x'; 10_000]).await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0;
        let err = loop {
            match b.read(&mut buf).await {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert!(is_overflow(&err));
        assert!(total <= LINE_MAX);
    }

    #[tokio::test]
    async fn many_short_lines_fail_after_sixty_four_kib_and_a_write_resets_the_count() {
        let (mut relay, ours) = tokio::io::duplex(1 << 20);
        let mut b = Bounded::new(ours, addr());
        let line = b"250-ok\r\n".repeat(1000); // 8 000 bytes
        relay.write_all(&line).await.unwrap();
        let mut buf = vec![0u8; 8000];
        b.read_exact(&mut buf).await.unwrap();
        b.write_all(b"NOOP\r\n").await.unwrap();
        for _ in 0..9 {
            relay.write_all(&line).await.unwrap();
        }
        let mut buf = vec![0u8; 1024];
        let err = loop {
            match b.read(&mut buf).await {
                Ok(0) => panic!("eof before the bound"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(is_overflow(&err));
    }
}
