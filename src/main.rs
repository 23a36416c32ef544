//! otpmint binary: parse the CLI, load settings, start telemetry, set the threads' CPU
//! scheduling, dispatch.

use otpmint::cli::{healthcheck_now, new_master_key, run, used, Cli, Command, KeysCommand};
use otpmint::config::Settings;

fn main() -> std::process::ExitCode {
    let cli = match Cli::parse_with_env() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // A new master key needs no configuration: it is what a configuration may still lack.
    if matches!(cli.command, Some(Command::Keys(KeysCommand::Generate))) {
        return match new_master_key() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", e.0);
                std::process::ExitCode::FAILURE
            }
        };
    }
    // A health check reads `server.bind` at most (API.md §18.1).
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck_now(cli.config.as_deref(), url.as_deref());
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Before any other thread exists: every thread of the server inherits the policy.
    let scheduling = matches!(cli.command, None | Some(Command::Serve))
        .then(|| otpmint::startup::scheduling::apply(settings.server.scheduling));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    otpmint::telemetry::init(&settings.log);
    if let Some(Err(e)) = scheduling {
        tracing::warn!(error = %e, "server.scheduling could not be applied; the threads keep the policy they started with");
    }
    let result = runtime.block_on(run(cli, settings));
    // A store call still waiting on the database (a lock another session holds, a server
    // that stopped answering) does not hold the exit: the command is done, and what such a
    // call had not committed is rolled back by the database.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Which database the command used goes after its output, or into its one error line.
    match result {
        Ok(()) => {
            if let Some(what) = used() {
                eprintln!("{what}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            match used() {
                Some(what) => eprintln!("error: {} ({what})", e.0),
                None => eprintln!("error: {}", e.0),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` as clap prints them; a usage error as one line on stderr, exit 2
/// (API.md §5: one clear line on failure), without clap's usage block — exit 1 for
/// `healthcheck`, whose statuses are 0 and 1 only (§18.1; Docker reserves 2).
fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return std::process::ExitCode::SUCCESS;
    }
    let status = if the_command_is("healthcheck") { 1 } else { 2 };
    let text = e.render().to_string();
    // A command group alone (`otpmint tenant`): one line naming the commands it offers.
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let group = text
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .map(|u| {
                u.split_whitespace()
                    .take_while(|w| !w.starts_with(['[', '<']))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "otpmint".into());
        let commands: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .collect();
        eprintln!(
            "error: `{group}` needs a command: {} ({group} --help explains them)",
            commands.join(", ")
        );
        return std::process::ExitCode::from(status);
    }
    let line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("{line} (otpmint --help shows the commands)");
    std::process::ExitCode::from(status)
}

/// Whether the command line names `command` first (after any `--config FILE`). Read as
/// the OS gives it: an argument that is not UTF-8 is one clap refused, not a panic here.
fn the_command_is(command: &str) -> bool {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            args.next();
        } else if !a.as_encoded_bytes().starts_with(b"--config=") {
            return a == command;
        }
    }
    false
}
