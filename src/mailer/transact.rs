//! One mail transaction on an open session, telling where it failed.

use super::*;

/// How far a send got: into its transaction (before it nothing was sent), asking whether
/// the body may leave (`BeforeBody`), and past the start of the body (after it the relay
/// may have the message).
#[derive(Default)]
pub(super) struct Progress {
    pub(super) started: std::sync::atomic::AtomicBool,
    /// Since when it asks whether the body may leave.
    asking: Mutex<Option<Instant>>,
    pub(super) body: std::sync::atomic::AtomicBool,
}

/// An ask that took this long when the send was cut off is the asker's fault, not the
/// relay's (it is a database write, a few milliseconds).
const SLOW_ASK: Duration = Duration::from_millis(500);

impl Progress {
    pub(super) fn ask(&self) {
        if let Ok(mut a) = self.asking.lock() {
            *a = Some(Instant::now());
        }
    }

    /// Cut off while asking whether the body may leave, after asking long enough to be the
    /// asker's fault: nothing of the message left, and the relay is not to blame (one that
    /// took nearly the whole time to say go ahead is, as before).
    pub(super) fn cut_while_asking(&self) -> Option<DeliveryError> {
        let body = self.body.load(std::sync::atomic::Ordering::SeqCst);
        let since = self.asking.lock().ok().and_then(|a| *a)?;
        (!body && since.elapsed() >= SLOW_ASK).then(DeliveryError::not_begun)
    }
}

/// Where a mail transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Mail,
    Rcpt,
    Data,
    Body,
}

/// Why a mail transaction failed.
pub(super) enum TxError {
    Smtp(Stage, lettre::transport::smtp::Error),
    /// An address (a non-ASCII local part) needs SMTPUTF8 and the relay lacks it: refused
    /// before sending anything.
    NoSmtpUtf8,
    /// What had to hold before the body left did not (`BeforeBody`): stopped after DATA's
    /// go-ahead, nothing of the message sent.
    NotBegun,
}

/// MAIL, RCPT, DATA and the body, as lettre's `send` does them, but telling where a failure
/// happened (so a dead pooled connection can be retried when nothing was sent on it), and
/// asking `before_body` between DATA's go-ahead and the body.
pub(super) async fn transact(
    conn: &mut AsyncSmtpConnection,
    envelope: &lettre::address::Envelope,
    (bytes, before_body): Body<'_>,
    progress: &Progress,
) -> Result<(), TxError> {
    let mut options = vec![];
    let non_ascii = envelope
        .from()
        .is_some_and(|a| !AsRef::<str>::as_ref(a).is_ascii())
        || envelope
            .to()
            .iter()
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(TxError::NoSmtpUtf8);
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(|e| TxError::Smtp(Stage::Mail, e))?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![]))
            .await
            .map_err(|e| TxError::Smtp(Stage::Rcpt, e))?;
    }
    conn.command(Data)
        .await
        .map_err(|e| TxError::Smtp(Stage::Data, e))?;
    if let Some(b) = before_body {
        progress.ask();
        if !b.ready().await {
            return Err(TxError::NotBegun);
        }
    }
    progress
        .body
        .store(true, std::sync::atomic::Ordering::SeqCst);
    conn.message(bytes)
        .await
        .map_err(|e| TxError::Smtp(Stage::Body, e))?;
    Ok(())
}
