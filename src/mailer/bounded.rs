//! A stream wrapper that bounds what a relay may send (API.md §6.22): at most 4 KiB in one
//! reply line and 64 KiB in reply to one command (counted since our last write). Beyond
//! either, the read fails, so a hostile relay cannot grow our memory. A line longer than
//! lettre reads (1,000 bytes with its CRLF) but within 4 KiB is passed on cut short, at a
//! character's edge: a reply's code and the start of its text are what lettre reads. A byte
//! that is not part of a UTF-8 character (a relay writing Latin-1: `unbekannt \xfc`) is
//! passed on as `?`: lettre takes a reply that is not UTF-8 for a garbled one, and a
//! permanent refusal was retried as a relay that could not be reached (found by the
//! hostile-upstream audit). It reads SMTP text: under TLS it sits above the TLS stream
//! (connect.rs does STARTTLS itself for this).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A reply line's bytes, its line end not counted (API.md §6.22: "longer than 4 KiB"
/// fails); RFC 5321 §4.5.3.1.5 allows 512.
pub const LINE_MAX: usize = 4096;
pub const REPLY_MAX: usize = 64 * 1024;
/// The bytes of a line passed on, its CRLF not counted: lettre refuses a line over 1,000
/// bytes with its CRLF (with an error that cannot be told from a garbled reply), so a longer
/// one is cut here.
const LINE_PASSED: usize = 998;

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

fn overflow(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Overflow(what))
}

pub struct Bounded<S> {
    inner: S,
    peer: SocketAddr,
    since_write: usize,
    /// Bytes of the current line read (a `\r` counted).
    line: usize,
    /// Bytes of the current line passed on.
    passed: usize,
    /// The current line is cut: the rest of it up to its line end is dropped.
    cutting: bool,
    /// The last byte read was a `\r` (a cut line's CRLF is passed on as it came).
    after_cr: bool,
    /// Read and not yet passed on: at most one read's bytes, a `\r` and a character begun
    /// in the read before.
    ready: VecDeque<u8>,
    /// The bytes of a UTF-8 character begun and not yet whole (at most 3), and how many it
    /// announced.
    pending: Vec<u8>,
    width: usize,
    scratch: Vec<u8>,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, peer: SocketAddr) -> Bounded<S> {
        Bounded {
            inner,
            peer,
            since_write: 0,
            line: 0,
            passed: 0,
            cutting: false,
            after_cr: false,
            ready: VecDeque::new(),
            pending: Vec::with_capacity(4),
            width: 0,
            scratch: vec![0; 4096],
        }
    }

    /// Take `new` bytes just read: count them against the bounds (an error when one is
    /// crossed) and queue what is passed on.
    fn take(&mut self, new: &[u8]) -> io::Result<()> {
        self.since_write += new.len();
        if self.since_write > REPLY_MAX {
            return Err(overflow("the relay's reply is too large"));
        }
        for &b in new {
            // A character's bytes are gathered, then passed on whole (`?` for each byte of a
            // broken one); a line end or any byte a character cannot hold ends a begun one.
            if !self.pending.is_empty() {
                if (0x80..=0xBF).contains(&b) {
                    self.pending.push(b);
                    if self.pending.len() == self.width {
                        let (mut whole, len) = ([0u8; 4], self.pending.len());
                        whole[..len].copy_from_slice(&self.pending);
                        self.pending.clear();
                        match std::str::from_utf8(&whole[..len]) {
                            Ok(_) => self.pass(&whole[..len])?,
                            Err(_) => self.pass(&b"????"[..len])?,
                        }
                    }
                    continue;
                }
                self.broken()?;
            }
            let width = match b {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => 1,
            };
            if width > 1 {
                self.pending.push(b);
                self.width = width;
                continue;
            }
            let b = if b >= 0x80 { b'?' } else { b };
            self.pass(&[b])?;
        }
        Ok(())
    }

    /// A begun character that will not be whole, passed on as a `?` for each of its bytes.
    fn broken(&mut self) -> io::Result<()> {
        let len = self.pending.len();
        self.pending.clear();
        self.pass(&b"????"[..len])
    }

    /// Pass on one character (its bytes, whole), counted against the bounds.
    fn pass(&mut self, ch: &[u8]) -> io::Result<()> {
        if ch == b"\n" {
            if self.cutting && self.after_cr {
                self.ready.push_back(b'\r');
            }
            self.ready.push_back(b'\n');
            self.line = 0;
            self.passed = 0;
            self.cutting = false;
            self.after_cr = false;
            return Ok(());
        }
        self.line += ch.len();
        // The line's own `\r` is not one of its characters.
        if self.line > LINE_MAX + 1 || (self.line > LINE_MAX && ch != b"\r") {
            return Err(overflow("the relay's reply line is too long"));
        }
        self.after_cr = ch == b"\r";
        if !self.cutting {
            // A character is passed on whole or not at all, so that what is passed on
            // stays text.
            if self.passed + ch.len() <= LINE_PASSED {
                self.ready.extend(ch);
                self.passed += ch.len();
            } else {
                self.cutting = true;
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
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // A cut line's dropped bytes yield nothing to pass on: read on until something is
        // ready, the relay has nothing more for now, or the stream ends.
        while this.ready.is_empty() {
            let mut scratch = std::mem::take(&mut this.scratch);
            let mut read = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let n = read.filled().len();
            let done = match polled {
                Poll::Pending => Some(Poll::Pending),
                Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
                // The end of the stream (a character begun before it, as `?`s first).
                Poll::Ready(Ok(())) if n == 0 && this.pending.is_empty() => {
                    Some(Poll::Ready(Ok(())))
                }
                Poll::Ready(Ok(())) if n == 0 => this.broken().err().map(|e| Poll::Ready(Err(e))),
                Poll::Ready(Ok(())) => this.take(&scratch[..n]).err().map(|e| Poll::Ready(Err(e))),
            };
            this.scratch = scratch;
            if let Some(p) = done {
                return p;
            }
        }
        let n = buf.remaining().min(this.ready.len());
        let (a, b) = this.ready.as_slices();
        let from_a = n.min(a.len());
        buf.put_slice(&a[..from_a]);
        buf.put_slice(&b[..n - from_a]);
        this.ready.drain(..n);
        Poll::Ready(Ok(()))
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
        assert!(total <= LINE_PASSED, "{total}");
    }

    /// What the wrapper passes on of `sent`, fed in chunks of `chunk` bytes.
    async fn passed(sent: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let (mut relay, ours) = tokio::io::duplex(1 << 20);
        let mut b = Bounded::new(ours, addr());
        for part in sent.chunks(chunk) {
            relay.write_all(part).await.unwrap();
        }
        drop(relay);
        let mut out = Vec::new();
        b.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn a_line_within_four_kib_is_passed_on_cut_where_a_character_starts() {
        // 4 + 2 000 + 2 × 1 046 = 4 096 bytes: the longest line that passes.
        let long = format!("250-{}{}\r\n", "x".repeat(2000), "\u{e9}".repeat(1046));
        let sent = format!("{long}250-short\r\n250 {}\n", "y".repeat(3000));
        for chunk in [1, 7, 1000, 1 << 16] {
            let out = passed(sent.as_bytes(), chunk).await.unwrap();
            let text = String::from_utf8(out).expect("cut where a character starts");
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            assert_eq!(lines.len(), 3, "{chunk}");
            // Each within what lettre reads (1 000 bytes with the line end), kept as it came.
            assert!(
                lines[0].len() <= 1000 && lines[0].ends_with("\r\n"),
                "{chunk}"
            );
            assert!(
                lines[0].starts_with("250-xxxx") && lines[0].len() > 990,
                "{chunk}"
            );
            assert_eq!(lines[1], "250-short\r\n");
            assert!(
                lines[2].len() <= 1000 && lines[2].starts_with("250 yyy"),
                "{chunk}"
            );
            assert!(
                lines[2].ends_with("y\n"),
                "a bare line end stays bare: {chunk}"
            );
        }
        // A line lettre reads whole (998 bytes and its CRLF) is passed on whole.
        let whole = format!("250 {}\r\n", "x".repeat(994));
        assert_eq!(
            passed(whole.as_bytes(), 100).await.unwrap(),
            whole.as_bytes()
        );
        // Two-byte characters from the cut's first byte on: the cut lands between two.
        let wide = format!("250 {}\r\n", "\u{e9}".repeat(1500));
        let out = String::from_utf8(passed(wide.as_bytes(), 3).await.unwrap()).unwrap();
        assert!(
            out.len() <= 1000 && out.ends_with("\u{e9}\r\n"),
            "{}",
            out.len()
        );
    }

    /// A reply in Latin-1 (`unbekannt \xfc`) is passed on as text, its stray bytes as `?`;
    /// UTF-8 characters stay whole, however the reads split them.
    #[tokio::test]
    async fn bytes_that_are_no_utf8_character_are_passed_on_as_question_marks() {
        let sent = b"550 5.1.1 Benutzer unbekannt \xfc\r\n550 gr\xc3\xbc\xc3n \xe2\x82 x\xf0\x9f\x98\x80\xed\xa0\x80\xc0\xaf\r\n";
        for chunk in [1, 2, 3, 5, 1000] {
            let out = passed(sent, chunk).await.unwrap();
            let text = String::from_utf8(out).expect("text");
            assert_eq!(
                text, "550 5.1.1 Benutzer unbekannt ?\r\n550 gr\u{fc}?n ?? x\u{1f600}?????\r\n",
                "{chunk}"
            );
        }
        // A character the stream ends inside of.
        let out = passed(b"550 x\xe2\x82", 1).await.unwrap();
        assert_eq!(out, b"550 x??");
    }

    #[tokio::test]
    async fn a_line_one_byte_over_four_kib_fails() {
        let over = format!("250 {}\r\n", "x".repeat(LINE_MAX - 3));
        let err = passed(over.as_bytes(), 512).await.unwrap_err();
        assert!(is_overflow(&err));
        let at = format!("250 {}\r\n", "x".repeat(LINE_MAX - 4));
        assert!(passed(at.as_bytes(), 512).await.is_ok());
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
