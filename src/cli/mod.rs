//! The `otpmint` command line: serve, migrate, config check, keys, tenants, smtp test,
//! statistics.

/// One line of a command's output on stdout. A failed write — the reader of a pipe gone
/// (`otpmint tenant list | head -1`), a full disk — is the command's one error line and a
/// non-zero exit (API.md §5), where `println!` would panic with a backtrace.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::output_failed)
    }};
}

mod healthcheck;
pub use healthcheck::healthcheck_now;
mod keys;
mod stats;
mod tenant;

pub use keys::{new_master_key, KeysCommand};
pub use tenant::{CreateArgs, TenantCommand};

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::Settings;
use crate::domain::email::RecipientEmail;
use crate::service::{ServiceError, Services};
use crate::startup::{build_services, Application};

#[derive(Parser, Debug)]
#[command(
    name = "otpmint",
    version,
    about = "Multi-tenant, self-hosted email one-time-password server",
    long_about = "Multi-tenant, self-hosted email one-time-password server.\n\nWith no command, runs the server (same as `otpmint serve`)."
)]
pub struct Cli {
    /// Configuration file (TOML), layered over the built-in defaults [env: OTPMINT_CONFIG;
    /// set but empty, it names no file]
    #[arg(long, global = true, value_name = "FILE")]
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
    /// Exit 0 when the server's /readyz answers 200 within 2 s, 1 otherwise (for container
    /// health checks without curl)
    Healthcheck {
        /// The server's base URL or its /readyz URL; default: from server.bind
        #[arg(long)]
        url: Option<String>,
    },
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
    /// Counts by period: minted, sent, failed, verified, expired unverified, test,
    /// conversion, time to verify (as GET /v1/tenant/stats answers them)
    Stats(stats::StatsArgs),
    /// Copy the live database to PATH (SQLite VACUUM INTO: the live rows, one snapshot; PATH must not exist)
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
        #[arg(long, default_value = crate::service::admin::import::OTPMINT_DEFAULT_SALT, hide_default_value = true)]
        salt: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate; print the effective configuration with secrets redacted
    Check,
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

/// Which database a command used (API.md §18.8), said on stderr when it ends: on a line of
/// its own after its output, or inside its one error line (§5: one clear line on failure).
static USED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// What the command said it used: `database: …` or `copying from … to …`.
pub fn used() -> Option<&'static str> {
    USED.get().map(String::as_str)
}

/// The error line of an output that could not be written.
pub(crate) fn output_failed(e: std::io::Error) -> CliError {
    CliError(format!("cannot write the output: {e}"))
}

fn say_used(what: String) {
    let _ = USED.set(what);
}

pub(super) fn service_msg(e: ServiceError) -> CliError {
    match e {
        ServiceError::Invalid(errs) | ServiceError::Unprocessable(errs) => CliError(
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        // The same words as the HTTP answer's: what allows it, or what to check.
        ServiceError::SmtpPolicy(r) => CliError(r.advice()),
        // The operator's own command: the cause, without the HTTP answer's label.
        ServiceError::Internal(cause) => CliError(cause),
        ServiceError::TenantNotFound => CliError("no such tenant".into()),
        ServiceError::Delivery(r, _) => CliError(delivery_failed(r)),
        ServiceError::WebhookRefused(code, field) => CliError(format!(
            "{field}: {}: {}",
            code.as_str(),
            crate::service::endpoint_refusal(code)
        )),
        other => CliError(other.to_string()),
    }
}

impl Cli {
    /// The command line, with `OTPMINT_CONFIG` naming the file when `--config` does not (an
    /// empty one names none, as an unset one).
    pub fn parse_with_env() -> Result<Cli, clap::Error> {
        use clap::Parser;
        let mut cli = Cli::try_parse()?;
        if cli.config.is_none() {
            cli.config = std::env::var_os("OTPMINT_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
        }
        Ok(cli)
    }
}

pub async fn run(cli: Cli, settings: Settings) -> Result<(), CliError> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings, cli.config.clone()).await,
        Command::Migrate => {
            // Like `serve`, `migrate` makes the database and the master key when there are
            // none (the other commands never do).
            say_used(format!(
                "database: {}",
                describe(&settings.database_location()?)
            ));
            crate::startup::preflight(&settings)?;
            drop(build_services(settings, Arc::new(SystemClock))?);
            say!("migrations applied")?;
            Ok(())
        }
        Command::Healthcheck { url } => {
            healthcheck::healthcheck(&settings.server.bind, url.as_deref()).await
        }
        Command::MigrateStore { from, to } => {
            say_used(format!(
                "copying from {} to {}",
                describe_url(&from),
                describe_url(&to)
            ));
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
            say!("copied: {line}")?;
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            // Every check serve makes before it binds (API.md §18.8), the database's
            // keyring against the master key included; the error line names the database.
            say_used(format!(
                "database: {}",
                describe(&settings.database_location()?)
            ));
            crate::startup::preflight(&settings)?;
            crate::startup::check_installation(&settings)?;
            for (warn, note) in settings.start_notes(std::env::vars()) {
                eprintln!("{}: {note}", if warn { "warning" } else { "note" });
            }
            {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                out.write_all(settings.redacted_toml().as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(output_failed)?;
            }
            eprintln!("configuration ok");
            Ok(())
        }
        Command::Keys(k) => keys::keys(k, settings).await,
        Command::Backup { path } => {
            // The database first, so that every error line names it (API.md §18.8).
            let services = services(settings)?;
            // A link at PATH counts as there, even one that points nowhere.
            if path.symlink_metadata().is_ok() {
                return Err(CliError(format!(
                    "{} already exists: a backup goes to a new file",
                    path.display()
                )));
            }
            services
                .admin
                .backup(path.clone())
                .await
                .map_err(service_msg)?;
            say!("backup written to {}", path.display())?;
            Ok(())
        }
        Command::Tenant(t) => tenant::tenant(t, services(settings)?).await,
        Command::Stats(a) => stats::stats(a, services(settings)?).await,
        Command::Smtp(SmtpCommand::Test { id, to }) => {
            smtp_test(&id, &to, services(settings)?).await
        }
        Command::ImportOtpmint { path, salt } => {
            let report = services(settings)?
                .admin
                .import_otpmint(&path, &salt)
                .await
                .map_err(service_msg)?;
            for line in report.skipped.iter().chain(report.warnings.iter()) {
                eprintln!("{line}");
            }
            let c = report.counts;
            say!(
                "tenants: {} imported, {} already present; pending codes: {} imported, {} already present; rows skipped: {}",
                c.tenants_added,
                c.tenants_present,
                c.codes_added,
                c.codes_present,
                report.skipped.len()
            )?;
            Ok(())
        }
    }
}

/// The services of an installation that exists: a command other than `serve` and
/// `migrate` never creates a database or a master key (API.md §18.8); it names the path it
/// looked for, and says on stderr which database it uses.
pub(super) fn services(settings: Settings) -> Result<Services, CliError> {
    let location = settings.database_location()?;
    if let crate::config::DatabaseLocation::Sqlite(path) = &location {
        if !path.exists() {
            return Err(CliError(format!(
                "no database at {} ({}): start the server once, or run `otpmint migrate`, to create it",
                path.display(),
                settings.database_url_source()
            )));
        }
    }
    say_used(format!("database: {}", describe(&location)));
    {
        use secrecy::ExposeSecret;
        let key_file = std::path::Path::new(&settings.crypto.master_key_file);
        if settings.crypto.master_key.expose_secret().is_empty() && !key_file.exists() {
            return Err(CliError(format!(
                "no master key at {} (crypto.master_key_file): this command does not make one; point the configuration at the server's key",
                key_file.display()
            )));
        }
    }
    crate::startup::build_services_on_existing(settings, Arc::new(SystemClock)).map_err(|e| match e
    {
        crate::startup::StartupError::Store(
            crate::storage::StoreError::NotInstalled(why) | crate::storage::StoreError::Newer(why),
        ) => CliError(format!("database {}: {why}", describe(&location))),
        other => other.into(),
    })
}

/// A database location for people: a SQLite file's path, or a PostgreSQL URL without its
/// password.
fn describe(location: &crate::config::DatabaseLocation) -> String {
    match location {
        crate::config::DatabaseLocation::Sqlite(p) => format!("sqlite {}", p.display()),
        crate::config::DatabaseLocation::Postgres(url) => {
            format!("postgresql {}", crate::config::url_without_password(url))
        }
    }
}

/// A database URL given on the command line, for people (without its password).
fn describe_url(url: &str) -> String {
    crate::config::url_without_password(url)
}

async fn serve(settings: Settings, file: Option<PathBuf>) -> Result<(), CliError> {
    let bind = settings.server.bind.clone();
    let database = describe(&settings.database_location()?);
    for (warn, note) in settings.start_notes(std::env::vars()) {
        if warn {
            tracing::warn!("{note}");
        } else {
            tracing::info!("{note}");
        }
    }
    // The checks `config check` makes, first: their errors name the setting at fault, and
    // the database (API.md §18.8).
    let named = |e: CliError| CliError(format!("{} (database: {database})", e.0));
    crate::startup::preflight(&settings).map_err(|e| named(e.into()))?;
    let app = Application::build(settings).map_err(|e| named(e.into()))?;
    app.reload_on_sighup(file);
    let tenants = app.services().core.tenants().await.map_err(service_msg)?;
    tracing::info!(bind = %bind, port = app.port(), database = %database, "otpmint listening");
    if tenants.is_empty() {
        use secrecy::ExposeSecret;
        let api = if app
            .services()
            .core
            .settings
            .load()
            .admin
            .token
            .expose_secret()
            .is_empty()
        {
            "or set admin.token and POST /v1/tenants"
        } else {
            "or POST /v1/tenants with the admin token"
        };
        tracing::info!(
            "no tenants yet: create one with `otpmint tenant create --name NAME --smtp-host HOST --smtp-port 587 --smtp-username USER --smtp-from 'App <no-reply@example.com>' --smtp-password-file FILE`, {api}"
        );
    }
    app.run_until_stopped().await?;
    tracing::info!("otpmint stopped");
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell.
fn print_columns(header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
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
    say!("{}", line(header.to_vec()))?;
    for r in rows {
        say!("{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

async fn smtp_test(id: &str, to: &str, s: Services) -> Result<(), CliError> {
    let tenant = s.core.tenant(id).await.map_err(service_msg)?;
    let to = RecipientEmail::parse(to).map_err(|e| CliError(format!("--to {e}")))?;
    match s.delivery.test_relay(&tenant, &to.delivery_address()).await {
        Ok(()) => {
            say!("ok: the SMTP server accepted the message")?;
            Ok(())
        }
        Err(e) => Err(service_msg(e)),
    }
}

/// A delivery failure, with its reason and what to check.
fn delivery_failed(r: crate::domain::delivery::DeliveryReason) -> String {
    format!("delivery failed: {}: {}", r.as_str(), r.advice())
}
