//! The results as a Markdown table (docs/benchmarks.md takes its rows from it).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub fn table(report: &Value) -> String {
    let mut out = format!(
        "hashing floor at start: {:.0} hashes/s (each run's own floor is sampled before and after it, and between its load slices)\n| scenario | relay ms | conc | req/s | p50 ms | p95 ms | p99 ms | statuses | cpu ms/req | hashing ms/req | bench ms/req | hashing share | peak RSS MiB | SMTP conns | floor min..max | × floor | drain s | delivered/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        report["hashing_floor_per_s"].as_f64().unwrap_or(0.0)
    );
    for r in report["results"].as_array().unwrap() {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.0}..{:.0} | {:.2} | {} | {} |\n",
            r["scenario"].as_str().unwrap(),
            r["relay_delay_ms"],
            r["concurrency"],
            r["rps"].as_f64().unwrap(),
            r["p50_ms"].as_f64().unwrap(),
            r["p95_ms"].as_f64().unwrap(),
            r["p99_ms"].as_f64().unwrap(),
            r["statuses"].to_string().replace('"', ""),
            r["server_cpu_ms_per_request"].as_f64().unwrap(),
            r["server_hashing_cpu_ms_per_request"].as_f64().unwrap(),
            r["bench_cpu_ms_per_request"].as_f64().unwrap(),
            r["hashing_share_of_cpu"].as_f64().unwrap(),
            r["server_peak_rss_mib"].as_f64().unwrap(),
            r["smtp_connections_opened"],
            r["floor_min"].as_f64().unwrap(),
            r["floor_max"].as_f64().unwrap(),
            r["ratio_of_hashing_floor"].as_f64().unwrap(),
            r["drain_seconds"]
                .as_f64()
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "".into()),
            r["delivered_per_s"]
                .as_f64()
                .map(|d| format!("{d:.0}"))
                .unwrap_or_else(|| "".into()),
        ));
    }
    out
}

/// One run's figures, as the JSON report holds them.
#[derive(Serialize, Clone, Default)]
pub struct RunResult {
    pub scenario: String,
    pub concurrency: usize,
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub server_cpu_ms_per_request: f64,
    /// Requests to the OAuth2 token endpoint during the run (`--transport smtp-oauth2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_requests: Option<u64>,
    /// Of that, the hashing threads'.
    pub server_hashing_cpu_ms_per_request: f64,
    /// CPU of this process (load generator and relay) per request.
    pub bench_cpu_ms_per_request: f64,
    /// Hashing threads' CPU over all CPU spent in the run (servers and this process): how
    /// much of the work was argon2. Unlike the ratio to the floor it does not move with the
    /// machine's speed; × floor can reach it only if argon2 runs in the server as fast as in
    /// the floor and the cores are never idle.
    pub hashing_share_of_cpu: f64,
    pub server_peak_rss_mib: f64,
    pub smtp_connections_opened: usize,
    /// The relay's per-message acceptance delay in this run.
    pub relay_delay_ms: u64,
    /// Hashing floor sampled just before and just after this run (hashes/s), and the
    /// lowest and highest of all samples (one more between each two load slices).
    pub floor_before: f64,
    pub floor_after: f64,
    pub floor_min: f64,
    pub floor_max: f64,
    pub floor_samples: usize,
    /// Throughput over the mean of the floor samples.
    pub ratio_of_hashing_floor: f64,
    /// mint-async: seconds from the end of the load until the relay had every queued message.
    pub drain_seconds: Option<f64>,
    /// mint-async: messages delivered per second, from the start of the load until the
    /// last queued message arrived.
    pub delivered_per_s: Option<f64>,
}
