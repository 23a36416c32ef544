#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The SMTP conversation of the test server: greeting (or `421` beyond the session limit),
//! EHLO, STARTTLS, AUTH PLAIN/LOGIN/XOAUTH2, MAIL, RCPT, DATA with the relay's delay, RSET, NOOP,
//! QUIT, and the failure modes a test asks for.

use super::*;

pub(super) async fn handle(
    tcp: TcpStream,
    st: Arc<State>,
    acceptor: TlsAcceptor,
    implicit: bool,
) -> std::io::Result<()> {
    let mode = *st.mode.lock().unwrap();
    match mode {
        Mode::Tarpit => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop(tcp);
            return Ok(());
        }
        Mode::Down => {
            drop(tcp);
            return Ok(());
        }
        Mode::Flood => {
            let mut tcp = tcp;
            return flood(&mut tcp, b"220 ", &st).await;
        }
        Mode::Normal
        | Mode::RejectRecipients
        | Mode::RejectRecipientsInLatin1
        | Mode::KeepAndStall
        | Mode::KeepAndDrop
        | Mode::StallAtRcpt
        | Mode::NoStarttls
        | Mode::LongLineUnderTls
        | Mode::LongReplyUnderTls
        | Mode::LongLinesAtRcpt
        | Mode::LongLinesWithinBound => {}
    }
    let open = st.active.fetch_add(1, Ordering::SeqCst) + 1;
    let _active = Active(&st);
    let limit = *st.session_limit.lock().unwrap();
    if limit.is_some_and(|n| open > n) {
        st.turned_away.fetch_add(1, Ordering::SeqCst);
        let mut tcp = tcp;
        if implicit {
            let mut tls = acceptor.accept(tcp).await?;
            tls.write_all(b"421 4.7.0 too many sessions, try again later\r\n")
                .await?;
            return Ok(());
        }
        tcp.write_all(b"421 4.7.0 too many sessions, try again later\r\n")
            .await?;
        return Ok(());
    }
    let mut stream: Box<dyn Io> = if implicit {
        Box::new(acceptor.accept(tcp).await?)
    } else {
        Box::new(tcp)
    };
    let mut tls = implicit;
    let mut greet = true;
    loop {
        match session(stream, tls, greet, &st).await? {
            Some(plain) if !tls => {
                stream = Box::new(acceptor.accept(plain).await?);
                tls = true;
                greet = false;
            }
            _ => return Ok(()),
        }
    }
}

/// `start`, then bytes without a line end as fast as they go: at most 1 GiB or 60 s, or
/// until the client hangs up.
async fn flood(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    start: &[u8],
    st: &State,
) -> std::io::Result<()> {
    w.write_all(start).await?;
    let chunk = vec![b'x'; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while st.flooded.load(Ordering::SeqCst) < (1 << 30) && tokio::time::Instant::now() < deadline {
        w.write_all(&chunk).await?;
        st.flooded.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    Ok(())
}

fn b64(s: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

/// Runs SMTP until QUIT/EOF (None) or STARTTLS (Some(stream) to upgrade).
async fn session(
    stream: Box<dyn Io>,
    tls: bool,
    greet: bool,
    st: &State,
) -> std::io::Result<Option<Box<dyn Io>>> {
    let mut r = BufReader::new(stream);
    if greet {
        r.get_mut().write_all(b"220 sink.test ESMTP\r\n").await?;
    }
    let mut user = String::new();
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        // A relay that goes down drops the sessions it had open too.
        if *st.mode.lock().unwrap() == Mode::Down {
            return Ok(None);
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let oversized = match *st.mode.lock().unwrap() {
            Mode::LongLineUnderTls => Some(format!("250-{}\r\n", "x".repeat(5 * 1024))),
            Mode::LongReplyUnderTls => Some(format!("250-{}\r\n", "x".repeat(96)).repeat(800)),
            // 4 + 2 000 + 2 × 1 046 = 4 096 bytes before the CRLF.
            Mode::LongLinesWithinBound => Some(format!(
                "250-{}{}\r\n",
                "x".repeat(2000),
                "\u{e9}".repeat(1046)
            )),
            _ => None,
        };
        if let Some(answer) = oversized.filter(|_| tls && upper.starts_with("EHLO")) {
            r.get_mut().write_all(answer.as_bytes()).await?;
            r.get_mut()
                .write_all(b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
                .await?;
            continue;
        }
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let mut s = String::from("250-sink.test\r\n");
            if !tls && *st.mode.lock().unwrap() != Mode::NoStarttls {
                s.push_str("250-STARTTLS\r\n");
            } else {
                s.push_str("250-AUTH PLAIN LOGIN XOAUTH2\r\n");
            }
            s.push_str("250 8BITMIME\r\n");
            s
        } else if upper == "STARTTLS" && !tls {
            r.get_mut().write_all(b"220 go ahead\r\n").await?;
            return Ok(Some(r.into_inner()));
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = cmd[10..].trim().to_string();
            let arg = if arg.is_empty() {
                r.get_mut().write_all(b"334 \r\n").await?;
                let mut l = String::new();
                r.read_line(&mut l).await?;
                l
            } else {
                arg
            };
            let decoded = b64(&arg);
            let parts: Vec<&str> = decoded.split('\0').collect();
            if tls && parts.len() == 3 && parts[1] == SMTP_USER && parts[2] == SMTP_PASS {
                user = parts[1].to_string();
                "235 ok\r\n".into()
            } else {
                "535 bad credentials\r\n".into()
            }
        } else if upper.starts_with("AUTH XOAUTH2") {
            // `user=<user>\x01auth=Bearer <token>\x01\x01`, base64, as Microsoft 365 and
            // Gmail take it; a refused token is 535 at once (as Microsoft answers).
            let decoded = b64(cmd[12..].trim());
            let mut parts = decoded.split('\x01');
            let user_part = parts.next().and_then(|p| p.strip_prefix("user="));
            let token = parts.next().and_then(|p| p.strip_prefix("auth=Bearer "));
            let accepted = match (tls, user_part, token, st.xoauth2.lock().unwrap().clone()) {
                (true, Some(u), Some(t), Some(check)) => check(u, t).then(|| u.to_string()),
                _ => None,
            };
            match accepted {
                Some(u) => {
                    user = u;
                    st.xoauth2_logins.fetch_add(1, Ordering::SeqCst);
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                None if st.xoauth2_challenges.load(Ordering::SeqCst) > 0 => {
                    st.xoauth2_refusals.fetch_add(1, Ordering::SeqCst);
                    let mut reply = "535 5.7.8 Username and Password not accepted\r\n";
                    for _ in 0..st.xoauth2_challenges.load(Ordering::SeqCst) {
                        // {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}
                        r.get_mut()
                            .write_all(b"334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n")
                            .await?;
                        let mut answer = String::new();
                        r.read_line(&mut answer).await?;
                        match answer.trim_end_matches(['\r', '\n']) {
                            "" => continue,
                            "*" => {
                                st.sasl_cancels.fetch_add(1, Ordering::SeqCst);
                                reply = "501 5.7.0 Authentication cancelled\r\n";
                            }
                            _ => {
                                st.sasl_misanswers.fetch_add(1, Ordering::SeqCst);
                                reply = "501 5.5.2 Cannot Decode response\r\n";
                            }
                        }
                        break;
                    }
                    reply.into()
                }
                None => {
                    st.xoauth2_refusals.fetch_add(1, Ordering::SeqCst);
                    "535 5.7.3 Authentication unsuccessful\r\n".into()
                }
            }
        } else if upper.starts_with("AUTH LOGIN") {
            r.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let mut u = String::new();
            r.read_line(&mut u).await?;
            r.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let mut p = String::new();
            r.read_line(&mut p).await?;
            if tls && b64(&u) == SMTP_USER && b64(&p) == SMTP_PASS {
                user = SMTP_USER.to_string();
                "235 ok\r\n".into()
            } else {
                "535 bad credentials\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            if user.is_empty() {
                "530 authentication required\r\n".into()
            } else {
                from = cmd[10..]
                    .trim()
                    .trim_matches(['<', '>'])
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_string();
                to.clear();
                "250 ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if *st.mode.lock().unwrap() == Mode::StallAtRcpt {
                st.stalled_at_rcpt.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(120)).await;
                return Ok(None);
            }
            let mode = *st.mode.lock().unwrap();
            if mode == Mode::RejectRecipients {
                "550 no such user\r\n".into()
            } else if mode == Mode::RejectRecipientsInLatin1 {
                r.get_mut()
                    .write_all(b"550 5.1.1 Benutzer unbekannt \xfc\r\n")
                    .await?;
                continue;
            } else if mode == Mode::LongLinesWithinBound {
                to.push(cmd[8..].trim().trim_matches(['<', '>']).to_string());
                format!("250 ok {}\r\n", "y".repeat(3000))
            } else if mode == Mode::LongLinesAtRcpt {
                // 200 lines of 1 000 characters: each over what a reply line may hold,
                // 200 KB in all.
                format!("250-{}\r\n", "y".repeat(1000)).repeat(200) + "250 ok\r\n"
            } else {
                to.push(cmd[8..].trim().trim_matches(['<', '>']).to_string());
                "250 ok\r\n".into()
            }
        } else if upper == "DATA" {
            let now_in = st.in_data.fetch_add(1, Ordering::SeqCst) + 1;
            st.max_in_data.fetch_max(now_in, Ordering::SeqCst);
            let body = read_data(&mut r).await;
            let _ = st.gate.subscribe().wait_for(|open| *open).await;
            let delay = *st.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            st.in_data.fetch_sub(1, Ordering::SeqCst);
            let Some(data) = body? else {
                return Ok(None);
            };
            let tempfail = st
                .tempfail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if tempfail {
                to.clear();
                "451 try again later\r\n".into()
            } else {
                st.messages.lock().unwrap().push(Received {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                    user: user.clone(),
                    tls,
                });
                st.notify.notify_waiters();
                if *st.mode.lock().unwrap() == Mode::KeepAndStall {
                    // No answer; the connection stays open until the client gives up.
                    let mut sink = [0u8; 512];
                    let _ = tokio::time::timeout(Duration::from_secs(120), async {
                        while matches!(tokio::io::AsyncReadExt::read(r.get_mut(), &mut sink).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return Ok(None);
                }
                if *st.mode.lock().unwrap() == Mode::KeepAndDrop {
                    return Ok(None);
                }
                if st.hang_up_after_message.load(Ordering::SeqCst) {
                    r.get_mut().write_all(b"250 queued\r\n").await?;
                    return Ok(None);
                }
                "250 queued\r\n".into()
            }
        } else if upper == "RSET" || upper == "NOOP" {
            if upper == "NOOP" {
                st.noops.fetch_add(1, Ordering::SeqCst);
            }
            "250 ok\r\n".into()
        } else if upper == "QUIT" {
            st.quits.fetch_add(1, Ordering::SeqCst);
            r.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(None);
        } else {
            "502 unknown\r\n".into()
        };
        r.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// After `354`: the message up to the final `.` (None if the client hung up).
async fn read_data(r: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Option<String>> {
    r.get_mut().write_all(b"354 go\r\n").await?;
    let mut data = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            return Ok(None);
        }
        if l == ".\r\n" {
            return Ok(Some(data));
        }
        data.push_str(l.strip_prefix('.').unwrap_or(&l));
    }
}
