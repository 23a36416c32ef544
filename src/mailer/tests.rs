//! The mailer against a real SMTP server on loopback (STARTTLS, AUTH, bounded replies).

#![allow(clippy::unwrap_used)]
use super::pool::SURPLUS_IDLE;
use super::*;
use crate::testkit::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};
use secrecy::SecretString;

/// A relay on loopback, a mailer that trusts it, and a tenant's target there.
async fn relay(tenant: &str) -> (SmtpServer, Mailer, SmtpTarget) {
    let smtp = SmtpServer::start().await;
    let mailer = Mailer::new(
        HostPolicy {
            allowed_ports: Some(vec![smtp.port]),
            allow_private_hosts: true,
            allow_plaintext: false,
            resolver: None,
        },
        Duration::from_secs(5),
        4,
        std::slice::from_ref(&smtp.ca_path),
    )
    .unwrap();
    let target = SmtpTarget {
        tenant_id: tenant.into(),
        version: 1,
        host: "127.0.0.1".into(),
        port: smtp.port,
        username: SMTP_USER.into(),
        auth: SmtpAuth::Password(SecretString::from(SMTP_PASS.to_string())),
        from: "Acme <no-reply@acme.example>".into(),
        tls: TlsMode::Starttls,
    };
    (smtp, mailer, target)
}

/// A plain message to ada, nothing to check before its body leaves.
fn plain_message() -> Outgoing<'static> {
    Outgoing {
        to: "ada@example.com",
        subject: "s",
        text: "123456\r\n",
        html: None,
        message_id: None,
        dkim: None,
        before_body: None,
    }
}

#[tokio::test]
async fn idle_connections_are_closed_whether_or_not_their_tenant_sends_again() {
    let (smtp, mailer, target) = relay("tnt_idle").await;
    let msg = plain_message();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    mailer
        .send(&target, &msg, (deadline, None), 1)
        .await
        .unwrap();
    assert_eq!(smtp.open_sessions(), 1, "kept for reuse");
    assert_eq!(mailer.close_idle_older_than(Duration::from_secs(60)), 0);
    // Past its idle time, it is closed with no further send from the tenant: with a QUIT
    // (RFC 5321 §4.1.1.10), not a dropped socket.
    assert_eq!(mailer.close_idle_older_than(Duration::ZERO), 1);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while smtp.open_sessions() > 0 {
        assert!(
            std::time::Instant::now() < until,
            "the relay still sees the session"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(smtp.quits(), 1, "closed without a QUIT");
    assert!(
        mailer.inner.pools.lock().unwrap().is_empty(),
        "the pool is forgotten"
    );
    // A pool with nothing idle but a send under way (which holds it, and puts its
    // connection back into it) is kept.
    let in_use = mailer.pool_for(&target);
    assert_eq!(mailer.close_idle_older_than(Duration::ZERO), 0);
    assert!(
        mailer
            .inner
            .pools
            .lock()
            .unwrap()
            .values()
            .any(|p| Arc::ptr_eq(p, &in_use)),
        "the pool of a send under way was forgotten"
    );
    drop(in_use);
    mailer.close_idle_older_than(Duration::ZERO);
    assert!(mailer.inner.pools.lock().unwrap().is_empty());
}

/// A stopping server ends every idle session with a QUIT, and waits for it (API.md §11.5).
#[tokio::test]
async fn a_stop_closes_every_idle_session_with_a_quit() {
    let (smtp, mailer, target) = relay("tnt_stop").await;
    let msg = plain_message();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // A pool let go because the tenant's relay settings changed says goodbye.
    mailer
        .send(&target, &msg, (deadline, None), 1)
        .await
        .unwrap();
    let changed = SmtpTarget {
        version: 2,
        ..target
    };
    mailer
        .send(&changed, &msg, (deadline, None), 1)
        .await
        .unwrap();
    // The relay counts the QUIT before the session ends: both awaited.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while smtp.quits() < 1 || smtp.open_sessions() > 1 {
        assert!(
            std::time::Instant::now() < until,
            "the old pool's session got no QUIT ({} QUITs, {} open)",
            smtp.quits(),
            smtp.open_sessions()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(smtp.open_sessions(), 1, "the new pool's session is kept");
    // Another one busy at the same time: two idle when the stop comes.
    let (a, b) = tokio::join!(
        mailer.send(&changed, &msg, (deadline, None), 2),
        mailer.send(&changed, &msg, (deadline, None), 2)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(smtp.open_sessions(), 2, "both kept for reuse");
    assert_eq!(mailer.close_all_idle().await, 2);
    assert_eq!(smtp.quits(), 3, "each said goodbye before the stop went on");
    assert!(mailer.inner.pools.lock().unwrap().is_empty());
    // A send that ends after the stop began closes its session at once, with a QUIT.
    mailer
        .send(&changed, &msg, (deadline, None), 1)
        .await
        .unwrap();
    assert_eq!(
        smtp.quits(),
        4,
        "a session a send was done with was kept or dropped"
    );
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while smtp.open_sessions() > 0 {
        assert!(std::time::Instant::now() < until, "a session stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What must hold before the body leaves is asked after DATA's go-ahead: `false` stops the
/// send there at once (no QUIT that a relay mid-DATA would take as message text and never
/// answer), the relay keeps nothing, and the next message goes on a fresh session.
#[tokio::test]
async fn a_body_not_allowed_to_leave_stops_the_send_at_once_and_the_relay_keeps_nothing() {
    struct Answer(bool, std::sync::atomic::AtomicUsize);
    impl BeforeBody for Answer {
        fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(std::future::ready(self.0))
        }
    }
    let (smtp, mailer, target) = relay("tnt_begin").await;
    let (no, yes) = (
        Answer(false, Default::default()),
        Answer(true, Default::default()),
    );
    let msg = |to: &'static str, b: &'static dyn BeforeBody| Outgoing {
        to,
        subject: "s",
        text: "123456\r\n",
        html: None,
        message_id: None,
        dkim: None,
        before_body: Some(b),
    };
    let (no, yes): (&'static Answer, &'static Answer) =
        (Box::leak(Box::new(no)), Box::leak(Box::new(yes)));
    // A QUIT sent mid-DATA would never be answered: the send would end as a timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let e = mailer
        .send(&target, &msg("ada@example.com", no), (deadline, None), 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::NotBegun, "{e:?}");
    assert!(!e.maybe_delivered);
    assert_eq!(no.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    mailer
        .send(&target, &msg("bob@example.com", yes), (deadline, None), 1)
        .await
        .unwrap();
    assert_eq!(yes.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    // An answer that takes longer than the send may (a slow database): cut off, not the
    // relay's fault, nothing of the message sent.
    struct Slow;
    impl BeforeBody for Slow {
        fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                true
            })
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let e = mailer
        .send(&target, &msg("cy@example.com", &Slow), (deadline, None), 1)
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::NotBegun, "{e:?}");
    assert!(!e.maybe_delivered);
    assert_eq!(smtp.count_to("cy@example.com"), 0);
    assert_eq!(
        smtp.count_to("ada@example.com"),
        0,
        "the relay kept nothing"
    );
    assert_eq!(smtp.count_to("bob@example.com"), 1);
}

/// A relay that turned a session away counts its sessions: an idle one is kept only a
/// moment (`SURPLUS_IDLE`), not `smtp.pool_size` of them for `IDLE_MAX`, so the sessions it
/// allows serve work — this instance's next burst or another instance's (API.md §7,
/// §11.1). A relay that never did keeps its pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_to_a_relay_that_counts_them_are_let_go_at_once() {
    let msg = plain_message();
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    // A relay of one session: a second session while the first is in DATA is turned away.
    let (smtp, mailer, target) = relay("tnt_counted").await;
    smtp.set_session_limit(Some(1));
    smtp.hold();
    let first = mailer.send(&target, &msg, (deadline(), None), 1);
    let second = async {
        while smtp.in_data() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = mailer.send(&target, &msg, (deadline(), None), 1).await;
        smtp.release();
        second
    };
    let (first, second) = tokio::join!(first, second);
    assert!(second.is_err_and(|e| e.is_refused()), "turned away");
    first.unwrap();
    // The relay ends the turned-away session on its side a moment after answering it.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while smtp.open_sessions() > 1 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(smtp.open_sessions(), 1, "kept for the next message");
    tokio::time::sleep(SURPLUS_IDLE + Duration::from_millis(200)).await;
    assert_eq!(mailer.close_idle(), 1, "let go after a moment");
    // A relay that never turned one away keeps its pool for longer.
    let (_plain, mailer, target) = relay("tnt_plain").await;
    mailer
        .send(&target, &msg, (deadline(), None), 1)
        .await
        .unwrap();
    tokio::time::sleep(SURPLUS_IDLE + Duration::from_millis(200)).await;
    assert_eq!(mailer.close_idle(), 0, "kept");
}
