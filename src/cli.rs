//! The `otpmint` command line: serve, migrate, config check, keys, tenants, smtp test.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde_json::json;

use crate::clock::{rfc3339, SystemClock};
use crate::config::Settings;
use crate::crypto::keyring::MasterKey;
use crate::domain::email::RecipientEmail;
use crate::domain::policy::PolicyPatch;
use crate::domain::tenant::{Origin, TlsMode};
use crate::mailer::Outgoing;
use crate::routes::v1::tenant_json;
use crate::service::tenants::{NewTenant, SmtpInput, TenantPatch};
use crate::service::{ServiceError, Services};
use crate::startup::{build_services, open_store, Application};

#[derive(Parser, Debug)]
#[command(
    name = "otpmint",
    version,
    about = "Multi-tenant, self-hosted email one-time-password server",
    long_about = "Multi-tenant, self-hosted email one-time-password server.\n\nWith no command, runs the server (same as `otpmint serve`)."
)]
pub struct Cli {
    /// Configuration file (TOML), layered over the built-in defaults
    #[arg(long, global = true, env = "OTPMINT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (migrates the database first)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
    /// Validate and show the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Master keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage tenants directly in the database
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// SMTP checks
    #[command(subcommand)]
    Smtp(SmtpCommand),
    /// Copy the live database to PATH (SQLite online backup; PATH must not exist)
    Backup {
        /// Where to write the copy
        path: PathBuf,
    },
    /// Copy this installation (keyring, tenants, codes, quotas, audit) from one database to
    /// another, empty one — SQLite to PostgreSQL or back — with the same master key
    MigrateStore {
        /// Source database URL (sqlite://… or postgres://…)
        #[arg(long)]
        from: String,
        /// Target database URL; must hold no tenants
        #[arg(long)]
        to: String,
    },
    /// Import an OtpMint database (its map.db): tenants keep their secret keys, pending
    /// codes keep their tries; idempotent and all-or-nothing
    ImportOtpmint {
        /// Path to OtpMint's map.db
        path: PathBuf,
        /// The salt OtpMint hashed codes with (its built-in one unless you changed it)
        #[arg(long, default_value = crate::service::import::OTPMINT_DEFAULT_SALT, hide_default_value = true)]
        salt: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate; print the effective configuration with secrets redacted
    Check,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new base64 master key
    Generate,
    /// Re-wrap the keyring stored under a key in crypto.previous_master_keys with the
    /// active master key (idempotent; safe to re-run after an interruption)
    Rotate,
    /// New data key; re-encrypt every stored SMTP password under it (resumable)
    RotateDataKey,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Tenant name
    #[arg(long)]
    name: String,
    /// SMTP server host name or IP address
    #[arg(long)]
    smtp_host: String,
    /// SMTP server port
    #[arg(long)]
    smtp_port: u16,
    /// SMTP username
    #[arg(long, default_value = "")]
    smtp_username: String,
    /// Sender mailbox, e.g. "Acme <no-reply@acme.example>"
    #[arg(long)]
    smtp_from: String,
    /// starttls | implicit | none (default: implicit for 465, else starttls)
    #[arg(long)]
    smtp_tls: Option<String>,
    /// File holding the SMTP password (first line; "-" reads stdin)
    #[arg(long)]
    smtp_password_file: Option<PathBuf>,
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

#[derive(Subcommand, Debug)]
pub enum SmtpCommand {
    /// Send one test message through a tenant's SMTP settings
    Test {
        id: String,
        #[arg(long)]
        to: String,
    },
}

/// A failed command: one line for stderr.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

fn service_msg(e: ServiceError) -> CliError {
    match e {
        ServiceError::Invalid(errs) => CliError(
            errs.iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ServiceError::SmtpPolicy(r) => CliError(r.to_string()),
        ServiceError::TenantNotFound => CliError("no such tenant".into()),
        ServiceError::Delivery(r) => CliError(format!("delivery failed: {}", r.as_str())),
        other => CliError(other.to_string()),
    }
}

pub async fn run(cli: Cli, settings: Settings) -> Result<(), CliError> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings, cli.config.clone()).await,
        Command::Migrate => {
            let store = open_store(&settings)?;
            drop(store);
            println!("migrations applied");
            Ok(())
        }
        Command::MigrateStore { from, to } => {
            let counts = tokio::task::spawn_blocking(move || {
                crate::startup::migrate_store(&settings, &from, &to)
            })
            .await
            .map_err(|e| CliError(e.to_string()))??;
            let line = counts
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!("copied: {line}");
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            print!("{}", settings.redacted_toml());
            eprintln!("configuration ok");
            Ok(())
        }
        Command::Keys(KeysCommand::Generate) => {
            println!("{}", MasterKey::generate().to_base64());
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate) => {
            let r = services(settings)?
                .rotate_master_key()
                .await
                .map_err(service_msg)?;
            for (id, n) in &r.rewrapped {
                println!("key id {id}: {n} re-wrapped");
            }
            println!(
                "key id {} (active): {} already under it",
                r.active_id, r.already_active
            );
            Ok(())
        }
        Command::Keys(KeysCommand::RotateDataKey) => {
            let r = services(settings)?
                .rotate_data_key()
                .await
                .map_err(service_msg)?;
            println!(
                "data key version {} active{}; SMTP passwords: {} re-encrypted, {} already current; webhook secrets: {} re-encrypted",
                r.active_version,
                if r.started_new {
                    " (new)"
                } else {
                    " (resumed)"
                },
                r.reencrypted,
                r.already_current,
                r.webhook_secrets_reencrypted
            );
            for id in &r.undecryptable {
                eprintln!(
                    "tenant {id}: its SMTP password cannot be decrypted; set it again (PATCH smtp.password)"
                );
            }
            for id in &r.webhook_secrets_undecryptable {
                eprintln!(
                    "tenant {id}: its webhook secret cannot be decrypted; rotate it (POST /v1/tenant/webhook/rotate-secret)"
                );
            }
            Ok(())
        }
        Command::Backup { path } => {
            services(settings)?
                .backup(path.clone())
                .await
                .map_err(service_msg)?;
            println!("backup written to {}", path.display());
            Ok(())
        }
        Command::Tenant(t) => tenant(t, services(settings)?).await,
        Command::Smtp(SmtpCommand::Test { id, to }) => {
            smtp_test(&id, &to, services(settings)?).await
        }
        Command::ImportOtpmint { path, salt } => {
            let report = services(settings)?
                .import_otpmint(&path, &salt)
                .await
                .map_err(service_msg)?;
            for line in report.skipped.iter().chain(report.warnings.iter()) {
                eprintln!("{line}");
            }
            let c = report.counts;
            println!(
                "tenants: {} imported, {} already present; pending codes: {} imported, {} already present; rows skipped: {}",
                c.tenants_added,
                c.tenants_present,
                c.codes_added,
                c.codes_present,
                report.skipped.len()
            );
            Ok(())
        }
    }
}

fn services(settings: Settings) -> Result<Services, CliError> {
    Ok(build_services(settings, Arc::new(SystemClock))?)
}

async fn serve(settings: Settings, file: Option<PathBuf>) -> Result<(), CliError> {
    let bind = settings.server.bind.clone();
    let app = Application::build(settings)?;
    app.reload_on_sighup(file);
    let tenants = app.services().tenants().await.map_err(service_msg)?;
    tracing::info!(bind = %bind, port = app.port(), "otpmint listening");
    if tenants.is_empty() {
        tracing::info!(
            "no tenants yet: create one with `otpmint tenant create --name NAME --smtp-host HOST --smtp-port 587 --smtp-username USER --smtp-from 'App <no-reply@example.com>' --smtp-password-file FILE`, or set admin.token and POST /v1/tenants"
        );
    }
    app.run_until_stopped().await?;
    tracing::info!("otpmint stopped");
    Ok(())
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
    Ok(SecretString::from(
        raw.lines().next().unwrap_or("").to_string(),
    ))
}

fn print_table(rows: &[crate::domain::tenant::Tenant]) {
    let header = ["ID", "NAME", "ENABLED", "SMTP", "CREATED"];
    let data: Vec<[String; 5]> = rows
        .iter()
        .map(|t| {
            [
                t.id.to_string(),
                t.name.as_str().to_string(),
                if t.enabled { "yes".into() } else { "no".into() },
                format!("{}:{} ({})", t.smtp.host, t.smtp.port, t.smtp.tls),
                rfc3339(t.created_at),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &data {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header.to_vec()));
    for r in &data {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}

async fn tenant(cmd: TenantCommand, s: Services) -> Result<(), CliError> {
    match cmd {
        TenantCommand::Create(a) => {
            let tls = match a.smtp_tls.as_deref() {
                None => None,
                Some(t) => Some(TlsMode::parse(t).ok_or_else(|| {
                    CliError("--smtp-tls must be starttls, implicit or none".into())
                })?),
            };
            let (row, secret) = s
                .create_tenant(NewTenant {
                    name: a.name,
                    smtp: SmtpInput {
                        host: a.smtp_host,
                        port: a.smtp_port,
                        username: a.smtp_username,
                        password: read_password(a.smtp_password_file.as_ref())?,
                        from: a.smtp_from,
                        tls,
                        max_connections: None,
                    },
                    policy: PolicyPatch::default(),
                    delivery: None,
                    default_locale: None,
                    origin: Origin::Native,
                    secret: None,
                })
                .await
                .map_err(service_msg)?;
            if a.json {
                let mut v = tenant_json(&s, &row);
                v["secret_key"] = json!(secret.expose());
                println!("{v}");
            } else {
                println!("id:         {}", row.id);
                println!("secret key: {}", secret.expose());
                println!("(the secret key is shown only once)");
            }
        }
        TenantCommand::List { json } => {
            let rows = s.tenants().await.map_err(service_msg)?;
            if json {
                println!(
                    "{}",
                    json!({"tenants": rows.iter().map(|t| tenant_json(&s, t)).collect::<Vec<_>>()})
                );
            } else {
                print_table(&rows);
            }
        }
        TenantCommand::Show { id } => {
            let row = s.tenant(&id).await.map_err(service_msg)?;
            println!("{}", serde_json::to_string_pretty(&tenant_json(&s, &row))?);
        }
        TenantCommand::Disable { id } => {
            s.update_tenant(
                &id,
                TenantPatch {
                    enabled: Some(false),
                    ..Default::default()
                },
                false,
            )
            .await
            .map_err(service_msg)?;
            println!("tenant {id} disabled");
        }
        TenantCommand::Enable { id } => {
            s.update_tenant(
                &id,
                TenantPatch {
                    enabled: Some(true),
                    ..Default::default()
                },
                false,
            )
            .await
            .map_err(service_msg)?;
            println!("tenant {id} enabled");
        }
        TenantCommand::RotateSecret { id, grace_seconds } => {
            let secret = s
                .rotate_secret(&id, grace_seconds)
                .await
                .map_err(service_msg)?;
            println!("secret key: {}", secret.expose());
            println!("(the secret key is shown only once)");
        }
    }
    Ok(())
}

async fn smtp_test(id: &str, to: &str, s: Services) -> Result<(), CliError> {
    let tenant = s.tenant(id).await.map_err(service_msg)?;
    let to = RecipientEmail::parse(to).map_err(|e| CliError(format!("--to {e}")))?;
    let target = s.smtp_target(&tenant).await.map_err(service_msg)?;
    let addr = to.delivery_address();
    match s
        .mailer
        .send(
            &target,
            &Outgoing {
                to: &addr,
                subject: "otpmint SMTP test",
                text: "This is a test message from otpmint. No action is needed.\r\n",
                html: None,
                message_id: None,
            },
            tokio::time::Instant::now() + s.mailer.timeout(),
            1,
        )
        .await
    {
        Ok(()) => {
            println!("ok: the SMTP server accepted the message");
            Ok(())
        }
        Err(e) => Err(CliError(format!("delivery failed: {}", e.reason.as_str()))),
    }
}
