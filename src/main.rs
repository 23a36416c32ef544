//! otpmint binary: parse the CLI, load settings, start telemetry, set the threads' CPU
//! scheduling, dispatch.

use clap::Parser;
use otpmint::cli::{run, used, Cli, Command};
use otpmint::config::Settings;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    // Which database the command used goes after its output, or into its one error line.
    match runtime.block_on(run(cli, settings)) {
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
