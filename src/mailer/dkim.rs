//! DKIM signing of a message as it goes on the wire (API.md §16.3; RFC 6376 with
//! relaxed/relaxed canonicalization, RFC 8463 for Ed25519). It signs the final bytes, so
//! the MIME part's `Content-Type` is covered like the message's own headers — lettre's
//! signer sees only the message-level headers and cannot (its signature over
//! `h=…:content-type` fails an independent verifier; measured with dkimpy).

use base64::Engine;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::DkimSigner;
use crate::domain::delivery::FailureKind;
use crate::domain::dkim::DkimAlgorithm;

/// The headers a signature covers (those present are listed in `h=`).
pub const DKIM_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
];

/// Runs of spaces and tabs as one space.
fn squeeze(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ' ' || c == '\t' {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Relaxed header canonicalization (RFC 6376 §3.4.2) of one field, `Name: value`
/// (possibly folded).
pub fn relaxed_header(field: &str) -> String {
    let (name, value) = field.split_once(':').unwrap_or((field, ""));
    let unfolded = value.replace("\r\n", "");
    format!(
        "{}:{}\r\n",
        name.trim().to_ascii_lowercase(),
        squeeze(&unfolded).trim()
    )
}

/// Relaxed body canonicalization (RFC 6376 §3.4.4).
pub fn relaxed_body(body: &str) -> String {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| squeeze(l).trim_end().to_string())
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.join("\r\n") + "\r\n"
}

/// The header fields of a header block, unfolded into whole fields (continuations kept).
fn fields(head: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut start = 0;
    let bytes = head.as_bytes();
    let mut i = 0;
    while let Some(at) = head[i..].find("\r\n") {
        let end = i + at;
        let next = end + 2;
        let continues = bytes.get(next).is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continues {
            out.push(&head[start..end]);
            start = next;
        }
        i = next;
    }
    if start < head.len() {
        out.push(&head[start..]);
    }
    out
}

/// Characters of the signature on one line of the field.
const B_LINE: usize = 72;

/// A `DKIM-Signature` field folded for sending: a line a tag, and the `h=` list broken
/// before a name that would take its line past 78 characters (white space is allowed around
/// its colons, RFC 6376 §3.5). Relaxed canonicalization reads it back as one line.
fn fold_field(field: &str) -> String {
    let mut out = String::new();
    for (i, tag) in field.split("; ").enumerate() {
        if i > 0 {
            out.push_str(";\r\n ");
        }
        match tag.strip_prefix("h=") {
            Some(list) => {
                let mut line = String::from(" h=");
                out.push_str("h=");
                for (j, name) in list.split(':').enumerate() {
                    let piece = if j == 0 {
                        name.to_string()
                    } else {
                        format!(":{name}")
                    };
                    if line.len() + piece.len() > 76 {
                        out.push_str("\r\n ");
                        line = String::from(" ");
                    }
                    out.push_str(&piece);
                    line.push_str(&piece);
                }
            }
            None => out.push_str(tag),
        }
    }
    out
}

/// The message with a `DKIM-Signature` header first, signed at `now` (Unix seconds).
pub fn sign(raw: &[u8], d: &DkimSigner, now: u64) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the message is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the message has no body")?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let bh = b64(&Sha256::digest(relaxed_body(body).as_bytes()));
    let all = fields(head);
    let mut signed = String::new();
    let mut names = Vec::new();
    for name in DKIM_HEADERS {
        // Instances are signed from the bottom up (RFC 6376 §5.4.2), and each name is listed
        // once more than it occurs: a header added on the way (a second From) breaks the
        // signature instead of riding along (§8.15, "oversigning").
        let instances: Vec<&&str> = all
            .iter()
            .filter(|f| {
                f.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
            .collect();
        for f in instances.iter().rev() {
            signed.push_str(&relaxed_header(f));
            names.push(name.to_ascii_lowercase());
        }
        names.push(name.to_ascii_lowercase());
    }
    let a = match d.algorithm {
        DkimAlgorithm::Ed25519 => "ed25519-sha256",
        DkimAlgorithm::Rsa2048 => "rsa-sha256",
    };
    let tags = format!(
        "v=1; a={a}; c=relaxed/relaxed; d={}; s={}; t={now}; h={}; bh={bh}; b=",
        d.domain,
        d.selector,
        names.join(":")
    );
    // The field as it is sent, folded (b= still empty): what is signed is its relaxed form.
    let folded = fold_field(&format!("DKIM-Signature: {tags}"));
    signed.push_str(relaxed_header(&folded).trim_end_matches("\r\n"));
    let hash = Sha256::digest(signed.as_bytes());
    let sig = match d.algorithm {
        DkimAlgorithm::Ed25519 => {
            let seed = base64::engine::general_purpose::STANDARD
                .decode(d.private.expose_secret())
                .map_err(|_| "the Ed25519 key is not base64")?;
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|_| "the Ed25519 key is not 32 bytes")?;
            pair.sign(&hash).as_ref().to_vec()
        }
        DkimAlgorithm::Rsa2048 => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(d.private.expose_secret())
                .map_err(|_| "the RSA key is unreadable")?;
            key.sign_with_rng(
                &mut rand::rngs::OsRng,
                rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(),
                &hash,
            )
            .map_err(|e| format!("RSA signing: {e}"))?
        }
    };
    // The signature in lines of at most 72 characters: white space in b= is ignored (RFC
    // 6376 §3.5), and every line of the field stays within RFC 5322's 78.
    let sig = b64(&sig);
    let lines: Vec<&str> = sig
        .as_bytes()
        .chunks(B_LINE)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let header = format!("{folded}{}\r\n", lines.join("\r\n "));
    let mut out = header.into_bytes();
    out.extend_from_slice(raw);
    Ok(out)
}

/// Sign `raw` now: Ed25519 in place (microseconds), RSA-2048 (a PEM parse and a
/// private-key operation, about a millisecond) on the blocking pool, off the async workers,
/// within the send's `deadline` (a blocking pool full of database calls waiting on an
/// outage must not hold the send past it). A key that cannot sign fails the message
/// (`smtp_rejected`); a signing that did not run or finish (the pool shut down, the
/// deadline passed) sent nothing and says nothing of the message: it may go later.
pub(super) async fn sign_off_worker(
    raw: Vec<u8>,
    d: &DkimSigner,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, super::DeliveryError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let failed = |e: String| {
        super::fail(
            super::DeliveryReason::Rejected,
            format!("DKIM signing: {e}"),
        )
    };
    match d.algorithm {
        DkimAlgorithm::Ed25519 => sign(&raw, d, now).map_err(failed),
        DkimAlgorithm::Rsa2048 => {
            let owned = DkimSigner {
                domain: d.domain.clone(),
                selector: d.selector.clone(),
                algorithm: d.algorithm,
                private: d.private.clone(),
            };
            let signing = tokio::task::spawn_blocking(move || sign(&raw, &owned, now));
            match tokio::time::timeout_at(deadline, signing).await {
                Ok(Ok(signed)) => signed.map_err(failed),
                Ok(Err(e)) => Err(super::DeliveryError::new(
                    super::DeliveryReason::Timeout,
                    FailureKind::NotBegun,
                    format!("DKIM signing did not run ({e}); nothing was sent"),
                )),
                Err(_) => Err(super::DeliveryError::new(
                    super::DeliveryReason::Timeout,
                    FailureKind::Transient,
                    "DKIM signing did not finish before the send's deadline; nothing was sent",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalization_follows_rfc_6376s_examples() {
        // RFC 6376 §3.4.5.
        assert_eq!(relaxed_header("A: X"), "a:X\r\n");
        assert_eq!(relaxed_header("B : Y\t\r\n\tZ  "), "b:Y Z\r\n");
        assert_eq!(relaxed_body(" C \r\nD \t E\r\n\r\n\r\n"), " C\r\nD E\r\n");
        assert_eq!(relaxed_body("\r\n\r\n"), "");
        assert_eq!(
            fields("A: 1\r\nB: 2\r\n 3\r\nC: 4"),
            vec!["A: 1", "B: 2\r\n 3", "C: 4"]
        );
    }

    /// An RSA signing that the blocking pool cannot start before the send's deadline (its
    /// threads all taken, say by database calls during an outage) fails the send as a
    /// transient failure that sent nothing, instead of holding it past its deadline; with
    /// the pool free again the same key signs.
    #[test]
    fn a_signing_the_blocking_pool_cannot_start_in_time_sends_nothing_and_may_go_later() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (_, private) = crate::domain::dkim::generate(DkimAlgorithm::Rsa2048).unwrap();
        let d = DkimSigner {
            domain: "acme.example".into(),
            selector: "s1".into(),
            algorithm: DkimAlgorithm::Rsa2048,
            private: private.into(),
        };
        let raw = b"From: a@acme.example\r\nSubject: s\r\n\r\n123456\r\n".to_vec();
        rt.block_on(async {
            let busy = tokio::task::spawn_blocking(|| {
                std::thread::sleep(std::time::Duration::from_secs(2))
            });
            let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
            let e = sign_off_worker(raw.clone(), &d, soon).await.unwrap_err();
            assert_eq!(e.kind, FailureKind::Transient, "{e:?}");
            assert!(!e.maybe_delivered && !e.outcome_unknown);
            busy.await.unwrap();
            let later = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            let signed = sign_off_worker(raw, &d, later).await.unwrap();
            let head = String::from_utf8_lossy(&signed[..64]).to_string();
            assert!(
                head.starts_with("DKIM-Signature: v=1;\r\n a=rsa-sha256;"),
                "{head}"
            );
            // Every line of the field within RFC 5322's 78 characters, the RSA signature's
            // 344 included.
            let text = String::from_utf8_lossy(&signed).to_string();
            let field_end = text.find("\r\nFrom:").unwrap();
            for line in text[..field_end].split("\r\n") {
                assert!(line.len() <= 78, "{} characters: {line}", line.len());
            }
            assert!(text[..field_end].matches("\r\n ").count() > 10, "{text}");
        });
    }
}
