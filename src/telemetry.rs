//! Logging: a tracing subscriber (json | pretty) whose filter silences dependencies that
//! could print SMTP conversations, and helpers that keep secrets out of log lines.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Targets muted at every level: lettre logs SMTP commands and bodies (AUTH, codes).
const MUTED: &[&str] = &[
    "lettre",
    "rustls",
    "tokio_rustls",
    "hyper",
    "reqwest",
    "h2",
    "refinery_core",
];

pub fn parse_level(s: &str) -> Option<tracing::Level> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Some(tracing::Level::ERROR),
        "warn" => Some(tracing::Level::WARN),
        "info" => Some(tracing::Level::INFO),
        "debug" => Some(tracing::Level::DEBUG),
        "trace" => Some(tracing::Level::TRACE),
        _ => None,
    }
}

pub fn filter(level: &str) -> EnvFilter {
    let mut directives = level.to_ascii_lowercase();
    for t in MUTED {
        directives.push_str(&format!(",{t}=off"));
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Install the global subscriber, writing to stderr. A second call is a no-op.
pub fn init(settings: &LogSettings) {
    let builder = fmt()
        .with_env_filter(filter(&settings.level))
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
