//! Prometheus metrics: one registry for the process, labelled by tenant id where it makes
//! sense and never by an email address or a key.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub codes_minted: IntCounterVec,
    pub sms_blocked: IntCounterVec,
    pub provider_events: IntCounterVec,
    pub codes_resent: IntCounterVec,
    pub verify_outcomes: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub oauth2_token_requests: IntCounterVec,
    pub webhook_attempts: IntCounterVec,
    pub smtp_send_seconds: HistogramVec,
    pub hashing_queue_depth: IntGauge,
    pub records_waiting: IntGauge,
    pub outbox_depth: IntGauge,
    pub outbox_oldest_due: prometheus::Gauge,
    pub hashing_seconds: Histogram,
    pub rate_limited: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub relay_windows: IntGaugeVec,
    pub outbound_sessions: IntGauge,
}

/// The bucket bounds of `otpmint_smtp_relay_windows`.
const WINDOW_BUCKETS: [u32; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// An HTTP method as a metric label: the standard ones by name, any other token `other`
/// (actix accepts any token as a method; labels must come from a fixed set).
pub fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *m {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let m = Metrics {
        // No tenant label anywhere: under open registration it would grow without bound.
        codes_minted: counter(
            "otpmint_codes_minted_total",
            "Codes minted, once stored with their message: sync ones whose delivery then failed count too (as in the statistics); test once in the test inbox.",
            &["mode"],
        )?,
        sms_blocked: counter(
            "otpmint_sms_blocked_total",
            "SMS mints the fraud guard refused (API.md §17.1), by reason: country_not_allowed, number_not_allowed, velocity.",
            &["reason"],
        )?,
        provider_events: counter(
            "otpmint_provider_events_total",
            "Hard bounces and complaints from email providers applied (API.md §16.2), by provider and reason.",
            &["provider", "reason"],
        )?,
        codes_resent: counter(
            "otpmint_codes_resent_total",
            "New codes sent under an existing key (POST /v1/otp/{key}/resend), by mode.",
            &["mode"],
        )?,
        verify_outcomes: counter(
            "otpmint_verify_total",
            "Verify requests by result.",
            &["result"],
        )?,
        deliveries: counter(
            "otpmint_delivery_attempts_total",
            "Delivery attempts by mode and outcome (sent or a failure reason).",
            &["mode", "outcome"],
        )?,
        oauth2_token_requests: counter(
            "otpmint_oauth2_token_requests_total",
            "Requests to OAuth2 token endpoints for SMTP relays (API.md §15.1), by outcome: ok, refused (invalid_grant and the like) or failed (no answer, 429, 5xx).",
            &["outcome"],
        )?,
        webhook_attempts: counter(
            "otpmint_webhook_attempts_total",
            "Webhook delivery attempts by outcome (delivered, retry, failed).",
            &["outcome"],
        )?,
        rate_limited: counter(
            "otpmint_rate_limited_total",
            "Requests refused 429 rate_limited, by the limit (kind).",
            &["kind"],
        )?,
        http_requests: counter(
            "otpmint_http_requests_total",
            "HTTP requests by route pattern, method and status.",
            &["route", "method", "status"],
        )?,
        smtp_send_seconds: {
            let h = HistogramVec::new(
                HistogramOpts::new(
                    "otpmint_smtp_send_seconds",
                    "Time to hand one message to its relay or provider (SMTP, an email or SMS API, the HTTP transport), by outcome.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["outcome"],
            )?;
            registry.register(Box::new(h.clone()))?;
            h
        },
        outbound_sessions: {
            let g = IntGauge::new(
                "otpmint_outbound_sessions_in_use",
                "Outbound sessions and requests in flight, all tenants together (of delivery.max_sessions).",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        hashing_queue_depth: {
            let g = IntGauge::new(
                "otpmint_hashing_queue_depth",
                "Hash jobs waiting for a hashing thread.",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        records_waiting: {
            let g = IntGauge::new(
                "otpmint_records_waiting",
                "Facts the database could not take yet (a relay's answer, an answer given), kept in memory and written one at a time when it answers.",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        outbox_depth: {
            let g = IntGauge::new(
                "otpmint_outbox_depth",
                "Messages in the outbox (queued, being sent, or waiting for a retry).",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        outbox_oldest_due: {
            let g = prometheus::Gauge::new(
                "otpmint_outbox_oldest_due_seconds",
                "How long the longest-waiting due message has been due.",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        hashing_seconds: {
            let h = Histogram::with_opts(
                HistogramOpts::new(
                    "otpmint_hashing_seconds",
                    "Time of one argon2id hash on a hashing thread.",
                )
                // Up to 10 s: the strongest settings allowed hash for seconds.
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0,
                ]),
            )?;
            registry.register(Box::new(h.clone()))?;
            h
        },
        relay_windows: {
            let g = IntGaugeVec::new(
                Opts::new(
                    "otpmint_smtp_relay_windows",
                    "Relays and providers (a tenant's SMTP server, email or SMS API, HTTP transport) whose \
                     adaptive window is at most `le` sessions or requests in flight, in this process: a \
                     cumulative histogram of the current windows.",
                ),
                &["le"],
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        registry,
    };
    Ok(m)
}

static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();

/// The process's metrics (None only if registration failed, which cannot happen with fixed names).
pub fn get() -> Option<&'static Metrics> {
    METRICS.get_or_init(|| build().ok()).as_ref()
}

/// Every metric family of the process, each once.
fn collectors(m: &Metrics) -> Vec<&dyn prometheus::core::Collector> {
    // Every field, named once: a new metric does not compile until it is listed here (the
    // pattern is exhaustive).
    macro_rules! every {
        ($($f:ident),* $(,)?) => {{
            let Metrics { registry: _, $($f),* } = m;
            vec![$($f as &dyn prometheus::core::Collector),*]
        }};
    }
    every!(
        codes_minted,
        sms_blocked,
        provider_events,
        codes_resent,
        verify_outcomes,
        deliveries,
        oauth2_token_requests,
        webhook_attempts,
        smtp_send_seconds,
        hashing_queue_depth,
        records_waiting,
        outbox_depth,
        outbox_oldest_due,
        hashing_seconds,
        rate_limited,
        http_requests,
        relay_windows,
        outbound_sessions,
    )
}

/// The name of every metric family the process registers (each is served, with no sample
/// until it has one).
pub fn family_names() -> Vec<String> {
    let Some(m) = get() else {
        return Vec::new();
    };
    collectors(m)
        .iter()
        .flat_map(|c| c.desc())
        .map(|d| d.fq_name.clone())
        .collect()
}

/// `# HELP` and `# TYPE` of the families with no sample yet, which the registry leaves out:
/// a scrape shows every family from the start (docs/operations.md lists them).
fn unsampled(m: &Metrics) -> String {
    use prometheus::proto::MetricType;
    let mut out = String::new();
    for family in collectors(m).iter().flat_map(|c| c.collect()) {
        if !family.get_metric().is_empty() {
            continue;
        }
        let kind = match family.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
        out.push_str(&format!("# HELP {} {help}\n", family.name()));
        out.push_str(&format!("# TYPE {} {kind}\n", family.name()));
    }
    out
}

/// Count one event of a counter family, ignoring a (never expected) label mismatch.
pub fn inc(f: impl FnOnce(&'static Metrics) -> &'static IntCounterVec, labels: &[&str]) {
    if let Some(m) = get() {
        if let Ok(c) = f(m).get_metric_with_label_values(labels) {
            c.inc();
        }
    }
}

/// The Prometheus text exposition of every metric (`windows`: each relay's current session
/// window; `sessions`: outbound sessions and requests in flight).
pub fn render(
    queue_depth: usize,
    records_waiting: usize,
    outbox: Option<crate::storage::OutboxStats>,
    windows: &[u32],
    sessions: usize,
) -> String {
    let Some(m) = get() else {
        return String::new();
    };
    m.hashing_queue_depth.set(queue_depth as i64);
    m.outbound_sessions.set(sessions as i64);
    m.records_waiting.set(records_waiting as i64);
    for le in WINDOW_BUCKETS {
        let n = windows.iter().filter(|w| **w <= le).count();
        m.relay_windows
            .with_label_values(&[&le.to_string()])
            .set(n as i64);
    }
    m.relay_windows
        .with_label_values(&["+Inf"])
        .set(windows.len() as i64);
    if let Some(o) = outbox {
        m.outbox_depth.set(o.depth as i64);
        m.outbox_oldest_due.set(o.oldest_due_ms as f64 / 1000.0);
    }
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    let mut text = String::from_utf8(buf).unwrap_or_default();
    text.push_str(&unsampled(m));
    text
}
