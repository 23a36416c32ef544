//! otpmint binary: parse the CLI, load settings, start telemetry, dispatch.

use clap::Parser;
use otpmint::cli::{run, Cli};
use otpmint::config::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    otpmint::telemetry::init(&settings.log);
    match run(cli, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.0);
            std::process::ExitCode::FAILURE
        }
    }
}
