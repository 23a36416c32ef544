//! The results as a Markdown table (docs/benchmarks.md takes its rows from it).

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
