//! `otpmint tenant …`: create, list, show, disable, enable, rotate a secret — directly in
//! the database.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use secrecy::SecretString;

use crate::domain::oauth2::OAuth2Input;
use serde_json::json;

use super::{print_columns, service_msg, CliError};
use crate::clock::rfc3339;
use crate::domain::policy::PolicyPatch;
use crate::domain::tenant::{Origin, TlsMode};
use crate::routes::tenants::tenant_json;
use crate::service::tenants::accounts::{NewTenant, SmtpInput, TenantPatch};
use crate::service::Services;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Tenant name
    #[arg(long)]
    name: String,
    /// SMTP server host name or IP address
    #[arg(long)]
    smtp_host: String,
    /// SMTP server port
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    smtp_port: u16,
    /// SMTP username (with --smtp-password-file or --smtp-oauth2-file; leave all out for a
    /// relay without AUTH)
    #[arg(long, default_value = "")]
    smtp_username: String,
    /// Sender mailbox, e.g. "Acme <no-reply@acme.example>"
    #[arg(long)]
    smtp_from: String,
    /// starttls | implicit | none (default: implicit for 465, else starttls)
    #[arg(long)]
    smtp_tls: Option<String>,
    /// File holding the SMTP password (first line; "-" reads stdin)
    #[arg(long, conflicts_with = "smtp_oauth2_file")]
    smtp_password_file: Option<PathBuf>,
    /// JSON file holding the relay's OAuth2 settings instead of a password (API.md §15.1):
    /// {"provider", "token_url", "client_id", "client_secret", "scope", "refresh_token",
    /// "entra_tenant"}; see docs/providers.md
    #[arg(long)]
    smtp_oauth2_file: Option<PathBuf>,
    /// A test tenant: sends nothing to any relay, its key starts sk_test_ (API.md §13.2)
    #[arg(long)]
    test: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant; prints its id and secret key (shown once)
    Create(CreateArgs),
    /// List tenants
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant
    Show { id: String },
    /// Look up the tenant's sender domain's SPF, DKIM and DMARC records (API.md §16.4)
    CheckDomain { id: String },
    /// Disable a tenant (its key stops working)
    Disable { id: String },
    /// Enable a tenant
    Enable { id: String },
    /// Issue a new secret key; the old one stops at once unless --grace-seconds
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
}

fn read_password(path: Option<&PathBuf>) -> Result<SecretString, CliError> {
    let Some(path) = path else {
        return Ok(SecretString::from(String::new()));
    };
    let raw = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?
    };
    let line = raw.lines().next().unwrap_or("");
    if line.is_empty() {
        // An empty or unmounted secret file is a mistake, not a relay without a password
        // (that one takes neither --smtp-username nor the file).
        return Err(CliError(format!(
            "--smtp-password-file {}: the first line is empty; it must hold the relay's password",
            path.display()
        )));
    }
    // A second line is a mistake (another file, a note), never silently dropped: as the
    // configuration's secret files (docs/configuration.md).
    if raw.lines().skip(1).any(|l| !l.trim().is_empty()) {
        return Err(CliError(format!(
            "--smtp-password-file {}: it holds more than one line; it must hold only the relay's password",
            path.display()
        )));
    }
    Ok(SecretString::from(line.to_string()))
}

/// The OAuth2 settings of a relay from a JSON file.
fn read_oauth2(path: &PathBuf) -> Result<OAuth2Input, CliError> {
    let raw = std::fs::read(path)
        .map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&raw).map_err(|e| {
        // serde names the field and the place; the value it quotes (a secret, perhaps) goes.
        CliError(format!(
            "--smtp-oauth2-file {}: not an OAuth2 settings object: {}",
            path.display(),
            crate::domain::policy::without_values(&e.to_string())
        ))
    })
}

fn print_table(rows: &[crate::domain::tenant::Tenant]) -> Result<(), CliError> {
    let data: Vec<Vec<String>> = rows
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.as_str().to_string(),
                if t.enabled { "yes".into() } else { "no".into() },
                match &t.smtp {
                    Some(a) if a.oauth2.is_some() => {
                        format!("{}:{} ({}, oauth2)", a.host, a.port, a.tls)
                    }
                    Some(a) => format!("{}:{} ({})", a.host, a.port, a.tls),
                    None => "-".into(),
                },
                rfc3339(t.created_at),
            ]
        })
        .collect();
    print_columns(&["ID", "NAME", "ENABLED", "SMTP", "CREATED"], &data)
}

pub(super) async fn tenant(cmd: TenantCommand, s: Services) -> Result<(), CliError> {
    match cmd {
        TenantCommand::Create(a) => {
            let tls = match a.smtp_tls.as_deref() {
                None => None,
                Some(t) => Some(TlsMode::parse(t).ok_or_else(|| {
                    CliError("--smtp-tls must be starttls, implicit or none".into())
                })?),
            };
            // A login needs both halves; a relay without AUTH takes neither.
            let secret_given = a.smtp_password_file.is_some() || a.smtp_oauth2_file.is_some();
            if a.smtp_username.is_empty() && secret_given {
                return Err(CliError(
                    "--smtp-username is needed with --smtp-password-file or --smtp-oauth2-file"
                        .into(),
                ));
            }
            if !a.smtp_username.is_empty() && !secret_given {
                return Err(CliError(
                    "--smtp-username needs --smtp-password-file (or --smtp-oauth2-file); leave both out for a relay without AUTH".into(),
                ));
            }
            let (row, secret) = s
                .tenants
                .create_tenant(NewTenant {
                    name: a.name,
                    smtp: Some(SmtpInput {
                        host: a.smtp_host,
                        port: a.smtp_port,
                        username: a.smtp_username,
                        password: match &a.smtp_oauth2_file {
                            Some(_) => None,
                            None => Some(read_password(a.smtp_password_file.as_ref())?),
                        },
                        from: a.smtp_from,
                        tls,
                        max_connections: None,
                        oauth2: a.smtp_oauth2_file.as_ref().map(read_oauth2).transpose()?,
                    }),
                    policy: PolicyPatch::default(),
                    delivery: None,
                    default_locale: None,
                    origin: Origin::Native,
                    secret: None,
                    test: a.test,
                    smtp_fallback: None,
                    pages_approved: true,
                    check_relay: None,
                })
                .await
                .map_err(service_msg)?;
            let shown = if a.json {
                let mut v = tenant_json(&s, &row);
                v["secret_key"] = json!(secret.expose());
                say!("{v}")
            } else {
                say!("id:         {}", row.id)
                    .and_then(|()| say!("secret key: {}", secret.expose()))
                    .and_then(|()| say!("(the secret key is shown only once)"))
            };
            shown.map_err(|e| secret_not_shown(e, &row.id, "was created"))?;
        }
        TenantCommand::List { json } => {
            let rows = s.core.tenants().await.map_err(service_msg)?;
            if json {
                say!(
                    "{}",
                    json!({"tenants": rows.iter().map(|t| tenant_json(&s, t)).collect::<Vec<_>>()})
                )?;
            } else {
                print_table(&rows)?;
            }
        }
        TenantCommand::CheckDomain { id } => {
            let c = s.tenants.check_domain(&id).await.map_err(service_msg)?;
            say!(
                "{}",
                serde_json::to_string_pretty(&crate::routes::dkim::DomainCheckOut::from(c))?
            )?;
        }
        TenantCommand::Show { id } => {
            let row = s.core.tenant(&id).await.map_err(service_msg)?;
            say!("{}", serde_json::to_string_pretty(&tenant_json(&s, &row))?)?;
        }
        TenantCommand::Disable { id } => {
            s.tenants
                .update_tenant(
                    &id,
                    TenantPatch {
                        enabled: Some(false),
                        ..Default::default()
                    },
                    false,
                )
                .await
                .map_err(service_msg)?;
            say!("tenant {id} disabled")?;
        }
        TenantCommand::Enable { id } => {
            s.tenants
                .update_tenant(
                    &id,
                    TenantPatch {
                        enabled: Some(true),
                        ..Default::default()
                    },
                    false,
                )
                .await
                .map_err(service_msg)?;
            say!("tenant {id} enabled")?;
        }
        TenantCommand::RotateSecret { id, grace_seconds } => {
            let secret = s
                .tenants
                .rotate_secret(&id, grace_seconds)
                .await
                .map_err(service_msg)?;
            say!("secret key: {}", secret.expose())
                .and_then(|()| say!("(the secret key is shown only once)"))
                .map_err(|e| secret_not_shown(e, &id, "has a new secret key"))?;
        }
    }
    Ok(())
}

/// The error line when a secret key shown once could not be written: the change is made,
/// and the way to a key that can be read.
fn secret_not_shown(e: CliError, id: &impl std::fmt::Display, what: &str) -> CliError {
    CliError(format!(
        "{}; tenant {id} {what}, but the key was not shown: `otpmint tenant rotate-secret {id}` makes another",
        e.0
    ))
}
