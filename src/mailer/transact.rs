//! One mail transaction on an open session, telling where it failed.

use super::*;

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
