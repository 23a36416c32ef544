//! Logging: a tracing subscriber (json | pretty) whose filter silences dependencies that
//! could print SMTP conversations, and helpers that keep secrets out of log lines.

use tracing_subscriber::{fmt, EnvFilter};

pub use crate::config::parse_level;
use crate::config::{LogFormat, LogSettings};

/// Targets muted at every level: lettre logs SMTP commands and bodies (AUTH, codes); the
/// PostgreSQL driver logs every statement's parameters at debug (recipient addresses, key
/// digests; API.md §6.33); actix's HTTP/1 dispatcher logs every malformed request a client
/// sends (a bad header, a broken chunk) at ERROR, so anyone could fill the error log (the
/// client gets its 400 and the request is never seen by a route); the connection pools
/// (`r2d2`, and by prefix `r2d2_sqlite`) log each failed connection at ERROR with their source
/// file (a database away is already a 503 `unavailable` and `/readyz` with our own lines,
/// and a CLI command's one error line); the DNS resolver (`hickory_*`) logs the answers it
/// gets at debug as they came, and a tenant's domain's records are the tenant's text (found
/// by the hostile-upstream audit: a TXT record's line ends forged log lines in the pretty
/// format).
const MUTED: &[&str] = &[
    "actix_http::h1::dispatcher",
    "r2d2",
    "lettre",
    "tokio_postgres",
    "postgres",
    "rustls",
    "tokio_rustls",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "refinery_core",
    "hickory_net",
    "hickory_proto",
    "hickory_resolver",
];

pub fn filter(level: &str) -> EnvFilter {
    let mut directives = level.to_ascii_lowercase();
    for t in MUTED {
        directives.push_str(&format!(",{t}=off"));
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static FILTER: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();

/// Install the global subscriber, writing to stderr. A second call is a no-op.
pub fn init(settings: &LogSettings) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter_layer, handle) = tracing_subscriber::reload::Layer::new(filter(&settings.level));
    let registry = tracing_subscriber::registry().with(filter_layer);
    let format = match settings.format {
        LogFormat::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            LogFormat::Pretty
        }
        LogFormat::Auto => LogFormat::Json,
        f => f,
    };
    let installed = match format {
        LogFormat::Auto | LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Change the level of the installed subscriber (SIGHUP); lettre stays muted.
pub fn set_level(level: &str) -> bool {
    FILTER
        .get()
        .is_some_and(|h| h.reload(filter(level)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Records the target of every event that passes the filter.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(event.metadata().target().to_string());
            }
        }
    }

    /// At trace, otpmint's own lines pass and every muted dependency's are dropped, at
    /// every level (each target as its crate logs it, and a module below it).
    #[test]
    fn muted_dependencies_log_nothing_even_at_trace() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(filter("trace"))
            .with(Seen(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "otpmint::service", "ours");
            tracing::error!(target: "hickory_proto::udp::udp_client_stream", "theirs");
            tracing::debug!(target: "hickory_resolver::lookup", "theirs");
            tracing::debug!(target: "hickory_net::xfer", "theirs");
            tracing::debug!(target: "lettre::transport::smtp", "theirs");
            tracing::debug!(target: "tokio_postgres::query", "theirs");
            tracing::error!(target: "actix_http::h1::dispatcher", "theirs");
        });
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, ["otpmint::service"]);
    }
}
