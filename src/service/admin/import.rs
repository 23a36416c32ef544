//! Import of an OtpMint database: `auth` rows become tenants that keep their secret keys,
//! outstanding `mappings` become pending compat codes that keep their `blocklist` tries.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use secrecy::SecretString;

use crate::crypto::lookup_digest;
use crate::domain::keys::{CodeApi, SecretKey, ShareableKey, TenantId};
use crate::domain::policy::Policy;
use crate::domain::tenant::{Origin, Sender, SmtpHost, TenantName, TlsMode};
use crate::domain::tenant::{SmtpAccount, Tenant};
use crate::service::codes::mint::KEY_LABEL;
use crate::service::tenants::accounts::SECRET_LABEL;
use crate::service::{Admin, ServiceError};
use crate::storage::{ImportCounts, ImportedCode, NewChallenge};

/// OtpMint's built-in salt for `sha256(salt + code)`.
pub const OTPMINT_DEFAULT_SALT: &str = "addanysalthereipreferkanye";

/// The outcome of an import: counts, and one line per skipped row.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub counts: ImportCounts,
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

struct AuthRow {
    rowid: i64,
    secret: Option<String>,
    host: Option<String>,
    port: Option<String>,
    mail: Option<String>,
    password: Option<String>,
}

fn text(v: rusqlite::types::Value) -> Option<String> {
    match v {
        rusqlite::types::Value::Text(s) => Some(s),
        rusqlite::types::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A `mappings` row: rowid, shareableKey, HashedOTP, and the `blocklist` tries.
type MappingRow = (i64, Option<String>, Option<String>, Tries);

/// A code's `blocklist` tries as OtpMint left them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tries {
    Counted(i64),
    /// No `blocklist` row, or a NULL in it: OtpMint's `/verify-otp` fails on it ("Unknown
    /// Error in blocker").
    NoRow,
    /// Not a whole number of zero or more.
    Malformed,
}

fn tries(v: Option<rusqlite::types::Value>) -> Tries {
    use rusqlite::types::Value;
    let n = match v {
        None | Some(Value::Null) => return Tries::NoRow,
        Some(Value::Integer(i)) => Some(i),
        Some(Value::Text(t)) => t.trim().parse::<i64>().ok(),
        Some(Value::Real(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Some(f as i64),
        Some(_) => None,
    };
    n.filter(|n| *n >= 0)
        .map_or(Tries::Malformed, Tries::Counted)
}

fn read_otpmint(path: &Path) -> Result<(Vec<AuthRow>, Vec<MappingRow>), ServiceError> {
    let err =
        |e: rusqlite::Error| ServiceError::Internal(format!("cannot read {}: {e}", path.display()));
    if !path.is_file() {
        return Err(ServiceError::field(
            &path.display().to_string(),
            "is not a file (no such file, or not a regular one)",
        ));
    }
    // A table OtpMint keeps that is missing or lacks a column: said in words, without the
    // query (before: SQLite's message with the whole SELECT).
    let not_otpmint = |table: &str, e: rusqlite::Error| {
        let text = e.to_string();
        let why = text.split(" in SELECT").next().unwrap_or(&text).to_string();
        // Only a missing table or column says the file is not OtpMint's; a lock, an I/O
        // error or a file that is no database at all is said as it is.
        if !(why.starts_with("no such table") || why.starts_with("no such column")) {
            return err(e);
        }
        ServiceError::field(
            &path.display().to_string(),
            format!("is not an OtpMint map.db: its {table} table is not OtpMint's ({why})"),
        )
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    let mut st = conn
        .prepare("SELECT rowid, secretKey, smtp_host, smtp_port, smtp_mail, smtp_password FROM auth ORDER BY rowid")
        .map_err(|e| not_otpmint("auth", e))?;
    let auth = st
        .query_map([], |r| {
            Ok(AuthRow {
                rowid: r.get(0)?,
                secret: text(r.get(1)?),
                host: text(r.get(2)?),
                port: text(r.get(3)?),
                mail: text(r.get(4)?),
                password: text(r.get(5)?),
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let mut st = conn
        .prepare("SELECT m.rowid, m.shareableKey, m.HashedOTP, (SELECT b.tries FROM blocklist b WHERE b.shareableKey = m.shareableKey) FROM mappings m ORDER BY m.rowid")
        .map_err(|e| not_otpmint("mappings or blocklist", e))?;
    let codes = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                text(r.get(1)?),
                text(r.get(2)?),
                tries(r.get::<_, Option<rusqlite::types::Value>>(3)?),
            ))
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok((auth, codes))
}

impl Admin {
    /// Import `path` (OtpMint's `map.db`). Idempotent and all-or-nothing.
    pub async fn import_otpmint(
        &self,
        path: &Path,
        salt: &str,
    ) -> Result<ImportReport, ServiceError> {
        let p = path.to_path_buf();
        let (auth, mappings) = tokio::task::spawn_blocking(move || read_otpmint(&p))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let mut report = ImportReport::default();
        let now = self.core.now();
        let policy = Policy {
            code_length: self.core.settings.load().otp.code_length,
            ttl_seconds: self.core.settings.load().otp.ttl_seconds,
            max_attempts: self.core.settings.load().otp.max_attempts,
        };
        let mut tenants = Vec::new();
        for row in auth {
            let line = |why: &str| format!("auth row {}: skipped: {why}", row.rowid);
            let (Some(secret), Some(host), Some(port), Some(mail), Some(password)) = (
                row.secret.clone(),
                row.host.clone(),
                row.port.clone(),
                row.mail.clone(),
                row.password.clone(),
            ) else {
                report.skipped.push(line("a field is missing"));
                continue;
            };
            if secret.trim().is_empty() || secret.chars().any(char::is_control) {
                report.skipped.push(line("secretKey is empty or malformed"));
                continue;
            }
            let Ok(port) = port.trim().parse::<u16>() else {
                report.skipped.push(line("smtp_port is not a port number"));
                continue;
            };
            if port == 0 {
                report.skipped.push(line("smtp_port is not a port number"));
                continue;
            }
            let (from, Ok(name)) = (
                Sender::parse(&mail),
                // Named after the sender's domain, as OtpMint registration names it.
                TenantName::parse(&crate::domain::sender::name_from_sender(&mail)),
            ) else {
                report
                    .skipped
                    .push(line("smtp_mail is not an email address"));
                continue;
            };
            let from = match from {
                Ok(f) => f,
                Err(e) => {
                    report
                        .skipped
                        .push(line(&format!("smtp_mail {}", e.message)));
                    continue;
                }
            };
            let Ok(host) = SmtpHost::parse(&host)
                .and_then(crate::service::tenants::relay_accounts::readable_host)
            else {
                report.skipped.push(line("smtp_host is not a host name"));
                continue;
            };
            let tls = TlsMode::default_for(port);
            if let Err(e) = self
                .core
                .mailer
                .policy()
                .check_static(host.as_str(), port, false)
            {
                report.skipped.push(line(&format!("{e}")));
                continue;
            }
            if secret.chars().count() < 16 {
                report.warnings.push(format!(
                    "auth row {}: the secret key is shorter than 16 characters; rotate it soon",
                    row.rowid
                ));
            }
            if !SecretKey::fits_a_header(&secret) {
                report.warnings.push(format!(
                    "auth row {}: the secret key is not printable ASCII (or has spaces at an end): it works on the OtpMint routes, not as a bearer token on /v1; rotate it to use /v1",
                    row.rowid
                ));
            }
            let id = TenantId::generate();
            let password = SecretString::from(password);
            let blob = crate::crypto::cipher::encrypt_password(
                &self.core.keyring.get(),
                &crate::crypto::cipher::PasswordContext {
                    tenant_id: id.as_str(),
                    host: host.as_str(),
                    port,
                    username: &mail,
                },
                secrecy::ExposeSecret::expose_secret(&password),
            )?;
            let digest = lookup_digest(self.core.keyring.get().pepper(), SECRET_LABEL, &secret);
            tenants.push((
                Tenant::new(
                    id,
                    name,
                    Origin::Import,
                    now,
                    Some(SmtpAccount {
                        host,
                        port,
                        username: mail.clone(),
                        password: blob,
                        from,
                        tls,
                        // The server's default ceiling (the window adapts below it).
                        max_connections: 0,
                        oauth2: None,
                    }),
                    policy,
                ),
                digest,
            ));
        }
        let mut codes = Vec::new();
        let max = self.core.settings.load().compat.max_attempts;
        // OtpMint's mappings do not say which secret key minted a code; they go to the first
        // imported tenant (OtpMint's /verify-otp never named one either).
        let owner = tenants.first().map(|(_, d)| d.clone());
        for (rowid, key, hash, tries) in mappings {
            let line = |why: &str| format!("mappings row {rowid}: skipped: {why}");
            let (Some(key), Some(hash)) = (key, hash) else {
                report.skipped.push(line("a field is missing"));
                continue;
            };
            let Some(key) = ShareableKey::parse(&key, CodeApi::Compat) else {
                report.skipped.push(line("shareableKey is not 10 letters"));
                continue;
            };
            let hash = hash.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                report
                    .skipped
                    .push(line("HashedOTP is not a SHA-256 hex digest"));
                continue;
            }
            let tries = match tries {
                Tries::Counted(n) => n,
                Tries::NoRow => {
                    report.skipped.push(line(
                        "blocklist has no row (or no tries) for it: OtpMint could not verify it",
                    ));
                    continue;
                }
                Tries::Malformed => {
                    report.skipped.push(line(
                        "its blocklist tries is not a whole number of zero or more",
                    ));
                    continue;
                }
            };
            let Some(owner) = owner.clone() else {
                report.skipped.push(line("there is no tenant to own it"));
                continue;
            };
            let stored = self.core.hasher.wrap_legacy_sha256(salt, &hash).await?;
            let key_digest =
                lookup_digest(self.core.keyring.get().pepper(), KEY_LABEL, key.expose());
            // Its own failure-budget bucket; never the raw key (only digests are stored).
            let canonical = format!("otpmint-import:{}", hex::encode(&key_digest));
            codes.push(ImportedCode {
                owner_secret_digest: owner,
                attempts: tries.clamp(0, i64::from(max)) as u32,
                code: NewChallenge {
                    link: None,
                    staged: None,
                    key_digest,
                    tenant_id: TenantId::from_trusted(String::new()),
                    flavor: CodeApi::Compat,
                    email: String::new(),
                    email_canonical: canonical,
                    purpose: crate::domain::purpose::Purpose::from_stored("default".into()),
                    code_hash: stored,
                    max_attempts: max,
                    code_length: 6,
                    created_at: now,
                    expires_at: crate::domain::whole_second(
                        now + i64::from(self.core.settings.load().otp.ttl_seconds) * 1000,
                    ),
                    delivery_mode: crate::domain::delivery::DeliveryMode::Sync,
                    locale: None,
                    channel: crate::domain::recipient::Channel::Email,
                },
            });
        }
        // Hashing a large map.db takes minutes: the codes' lives start when they are
        // stored, not when the import began (before: a long import stored codes already
        // expired).
        let stored_at = self.core.now();
        let ttl_ms = i64::from(self.core.settings.load().otp.ttl_seconds) * 1000;
        for c in &mut codes {
            c.code.created_at = stored_at;
            c.code.expires_at = crate::domain::whole_second(stored_at + ttl_ms);
        }
        report.counts = self
            .core
            .db_long(move |s| s.import(&tenants, &codes, stored_at))
            .await?;
        let gone = report.counts.codes_without_tenant;
        if gone > 0 {
            report.skipped.push(format!(
                "{gone} pending code(s) skipped: the tenant they go to (the first auth row's) was imported by an earlier run and is gone since"
            ));
        }
        Ok(report)
    }
}
