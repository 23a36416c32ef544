//! otpmint-bench: a reproducible load benchmark. Starts a release otpmint on loopback with a
//! fresh database and capacity-run limits, a real SMTP server (STARTTLS + AUTH, test CA),
//! then drives keep-alive HTTP load per scenario and concurrency, and reports throughput,
//! latency, errors, server CPU per request, peak RSS, SMTP connections, and throughput as a
//! ratio of the argon2id hashing floor measured with the server's own hashing code.
//! Every loop is bounded by time and count. See docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otpmint::testkit::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};
use serde_json::{json, Value};

mod args;
mod client;
mod events;
mod floor;
mod report;
mod server;
mod sink;
mod soak;
mod stats;
mod workload;

use args::Args;
use clap::Parser;
use report::{table, RunResult};

use client::*;
use server::*;
use workload::*;

const ADMIN: &str = "bench-admin-token-0123456789";
/// What sizes the pools of codes to verify when hashing bounds nothing (HMAC codes): a little
/// above the most this machine verified (19,604 wrong guesses/s).
const UNHASHED_VERIFIES_PER_SECOND: f64 = 25_000.0;
/// The most codes pre-minted for one run (a right guess spends its code: a run that uses
/// them up ends early, and its rate is over the time it ran).
const MAX_POOL: u64 = 60_000;
const COMPAT_KEY: &str = "bench-compat-secret-key-0001";

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.duration = 1;
        args.concurrency = vec![1, 2];
        args.floor_seconds = 0.25;
    }
    let bin = args
        .server
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("otpmint"));
    if let Some(seconds) = args.soak {
        let passed = soak::run(&args, &bin, seconds).await;
        std::process::exit(if passed { 0 } else { 1 });
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!(
        "measuring the hashing floor ({} KiB, {} iteration(s), {cores} cores)…",
        args.memory_kib.unwrap_or(4096),
        args.iterations.unwrap_or(1)
    );
    let floor = hashing_floor(&args, if args.smoke { 1.0 } else { 3.0 }).await;
    eprintln!("hashing floor: {floor:.0} hashes/s");

    let smtp = SmtpServer::start().await;
    let sink = sink::Sink::start(&args.transport, &args.scenarios).await;
    sink.set_token_lifetime(args.token_lifetime_seconds);
    assert!(
        args.instances <= 1 || args.database.is_some(),
        "--instances needs --database (instances share one PostgreSQL database)"
    );
    let servers = match args.otpmint_port {
        Some(_) => Vec::new(),
        None => start_servers(&bin, &smtp, &args, &sink.server_config()).await,
    };
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let ports: Vec<u16> = match args.otpmint_port {
        Some(p) => vec![p],
        None => servers.iter().map(|s| s.port).collect(),
    };
    let port = ports[0];
    eprintln!(
        "storage: {}, {} instance(s)",
        if args.database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        ports.len()
    );
    let mut c = Conn::open(port).await.unwrap();
    let (sk, tenant_id) = if args.otpmint_port.is_some() {
        assert!(
            args.scenarios.iter().all(|s| s.starts_with("compat-")),
            "--otpmint-port runs the compat-* scenarios only"
        );
        (String::new(), String::new())
    } else {
        let mut smtp_json = json!({"host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER, "password": SMTP_PASS, "from": "Bench <bench@bench.example>"});
        if let Some(n) = args.max_connections {
            smtp_json["max_connections"] = json!(n);
        }
        let (s, body) = c
            .request(
                "POST",
                "/v1/tenants",
                ADMIN,
                json!({"name": "bench", "smtp": smtp_json})
                    .to_string()
                    .as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
        let v = serde_json::from_slice::<Value>(&body).unwrap();
        let text = |k: &str| v[k].as_str().unwrap().to_string();
        (text("secret_key"), text("id"))
    };
    // OtpMint keeps its registrations, and each run has a relay of its own: a key per run.
    let compat_key = match args.otpmint_port {
        Some(_) => format!("{COMPAT_KEY}-{}", std::process::id()),
        None => COMPAT_KEY.to_string(),
    };
    let (s, _) = c
        .request("POST", "/reg_secretkey", ADMIN, json!({"secretKey": compat_key, "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_mail": SMTP_USER, "smtp_password": SMTP_PASS}).to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(s, 200);
    sink.attach(port, &sk, &smtp).await;
    let events_tenant = if args.scenarios.iter().any(|s| s.ends_with("+events")) {
        Some(events::events_tenant(&mut c, ADMIN, smtp.port).await)
    } else {
        None
    };
    if args.stats_codes > 0 {
        let db = match &args.database {
            Some(base) => stats::Db::Postgres(database_url(base)),
            None => stats::Db::Sqlite(servers[0].dir.path().join("data/otpmint.db")),
        };
        return stats::run(port, &sk, db, args.stats_codes).await;
    }
    prefill_if_asked(&args, &servers);
    let store = match &args.database {
        Some(base) => floor::Store::Postgres(database_url(base)),
        None => floor::Store::Sqlite(
            servers
                .first()
                .map(|s| s.dir.path().join("data/otpmint.db"))
                .unwrap_or_default(),
        ),
    };
    let store = Arc::new(store);
    let measure_writes = |store: Arc<floor::Store>, tenant: String| async move {
        if args.write_floor_seconds <= 0.0 || tenant.is_empty() {
            return None;
        }
        let seconds = args.write_floor_seconds;
        let f = tokio::task::spawn_blocking(move || floor::write_floor(&store, &tenant, seconds))
            .await
            .unwrap();
        eprintln!("durable-write floor: {f:.0} mint commits/s (64 writers)");
        Some(f)
    };
    let write_floor_before = measure_writes(store.clone(), tenant_id.clone()).await;

    let duration = Duration::from_secs(args.duration);
    let mut results = Vec::new();
    let run_id = AtomicUsize::new(0);
    let mut runs = Vec::new();
    for &delay in &args.relay_delay_ms {
        for scenario in &args.scenarios {
            // Verifying never touches the relay: run it once, with the instant relay.
            let base = scenario.trim_end_matches("+events");
            if delay > 0 && !base.ends_with("mint") && !base.ends_with("mint-async") {
                continue;
            }
            for &conc in &args.concurrency {
                runs.push((delay, scenario.clone(), conc));
            }
        }
    }
    // The fastest floor seen so far: what sizes pre-minted pools (a slow minute at start
    // must not leave a later, faster run short of codes).
    let mut fastest_floor = floor;
    for (delay, scenario, conc) in runs {
        let scenario = &scenario;
        sink.set_delay(&smtp, Duration::from_millis(delay));
        {
            let run = run_id.fetch_add(1, Ordering::Relaxed);
            let with_events = scenario.ends_with("+events");
            let base = scenario.trim_end_matches("+events");
            let compat = base.starts_with("compat-");
            let kind = base.trim_start_matches("compat-");
            let async_mint = kind == "mint-async";
            let kind = if async_mint { "mint" } else { kind };
            // Enough codes for the run, bounded: verify cannot beat the hashing floor (with
            // room for the machine to run faster than when the floor was sampled) — unless
            // codes are keyed with HMAC, which is no floor at all: then about the most this
            // machine verifies. (OtpMint's SHA-256 verifies run far below the argon2id floor.)
            let unhashed = args.otpmint_port.is_none()
                && args.hashing_algorithm.as_deref() == Some("hmac-sha256");
            let per_second = if unhashed {
                UNHASHED_VERIFIES_PER_SECOND
            } else {
                fastest_floor * 1.5
            };
            let expected = (per_second * args.duration as f64) as u64 + 50;
            let gen: Gen = match kind {
                "mint" => {
                    let texts = sink.texts();
                    let sk = if compat {
                        compat_key.clone()
                    } else {
                        sk.clone()
                    };
                    Arc::new(move |i| {
                        let email = format!("m{run}-{i}@bench.example");
                        // Valid German mobile numbers, one per mint.
                        let phone =
                            format!("+49151{:08}", (run as u64 * 1_000_000 + i) % 100_000_000);
                        let to = if texts {
                            json!({"phone": phone})
                        } else {
                            json!({"email": email})
                        };
                        Some(if compat {
                            Req {
                                method: "POST",
                                path: "/otp",
                                auth: String::new(),
                                body: json!({"mail": email, "secretKey": sk})
                                    .to_string()
                                    .into_bytes(),
                            }
                        } else {
                            Req {
                                method: "POST",
                                path: "/v1/otp",
                                auth: sk.clone(),
                                body: {
                                    let mut b = to;
                                    if async_mint {
                                        b["delivery"] = json!("async");
                                    }
                                    b.to_string().into_bytes()
                                },
                            }
                        })
                    })
                }
                "verify-wrong" | "verify-right" => {
                    let right = kind == "verify-right";
                    let n = if right {
                        expected.min(MAX_POOL)
                    } else {
                        // Each code takes max_attempts (5) wrong guesses before it is spent.
                        (expected / 4).clamp(20, MAX_POOL)
                    };
                    eprintln!("{scenario} c={conc}: pre-minting {n} codes…");
                    let pool = Arc::new(
                        premint(
                            port,
                            &smtp,
                            if compat { &compat_key } else { &sk },
                            compat,
                            n,
                            &format!("{run}"),
                        )
                        .await,
                    );
                    let sk = sk.clone();
                    Arc::new(move |i| {
                        if pool.is_empty() || (right && i as usize >= pool.len()) {
                            return None;
                        }
                        let (key, code) = &pool[i as usize % pool.len()];
                        let otp = if right { code.clone() } else { wrong(code) };
                        Some(if compat {
                            Req {
                                method: "POST",
                                path: "/verify-otp",
                                auth: String::new(),
                                body: json!({"shareableKey": key, "otp": otp})
                                    .to_string()
                                    .into_bytes(),
                            }
                        } else {
                            Req {
                                method: "POST",
                                path: "/v1/otp/verify",
                                auth: sk.clone(),
                                body: json!({"shareable_key": key, "otp": otp})
                                    .to_string()
                                    .into_bytes(),
                            }
                        })
                    })
                }
                other => panic!("unknown scenario {other}"),
            };
            sink.drain(&smtp);
            let mut floors = vec![hashing_floor(&args, args.floor_seconds).await];
            let conns_before = smtp.connections();
            let tokens_before = sink.token_requests();
            let stats = || {
                pids.iter()
                    .map(|p| proc_stats(*p))
                    .fold((0, 0), |(c, h), (pc, ph)| (c + pc, h.max(ph)))
            };
            let hashing = || pids.iter().map(|p| hashing_cpu_ms(*p)).sum::<u64>();
            let own = || process_cpu_ms(std::process::id());
            let slices = args.slices.max(1);
            let slice = duration / slices;
            // A mark for whoever attaches a profiler: the measured load starts now.
            eprintln!("{scenario} c={conc}: load running for {duration:?} in {slices} slice(s)");
            let (mut lat, mut statuses, mut errors, mut secs) =
                (Vec::new(), BTreeMap::<u16, u64>::new(), 0u64, 0.0);
            let (mut cpu_ms, mut hash_ms, mut own_ms, mut hwm) = (0u64, 0u64, 0u64, 0u64);
            // Requests generated so far: each slice goes on where the last stopped, so a
            // code meant to be used once is not used again.
            let mut used = 0u64;
            let stop_events = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let burst = match (&events_tenant, with_events) {
                (Some(t), true) => {
                    let count = u64::from(args.event_rate) * (duration.as_secs() + 2);
                    Some(tokio::spawn(events::burst(
                        port,
                        events::signed_requests(t, count),
                        args.event_rate,
                        Arc::clone(&stop_events),
                    )))
                }
                _ => None,
            };
            for k in 0..slices {
                if k > 0 {
                    floors.push(hashing_floor(&args, args.floor_seconds).await);
                }
                let (c0, h0, o0) = (stats().0, hashing(), own());
                let base = used;
                let g = Arc::clone(&gen);
                let sliced: Gen = Arc::new(move |i| g(base + i));
                let (l, st, e, t) = drive(&ports, conc, slice, 5_000_000, sliced).await;
                let (c1, peak) = stats();
                // Saturating: a server that died mid-run reads as 0.
                cpu_ms += c1.saturating_sub(c0);
                hash_ms += hashing().saturating_sub(h0);
                own_ms += own().saturating_sub(o0);
                hwm = hwm.max(peak);
                used += l.len() as u64 + e;
                lat.extend(l);
                for (code, n) in st {
                    *statuses.entry(code).or_default() += n;
                }
                errors += e;
                secs += t;
                if t < slice.as_secs_f64() * 0.9 {
                    break; // the generator ran out (e.g. every pre-minted code was used)
                }
            }
            stop_events.store(true, Ordering::Relaxed);
            if let Some(b) = burst {
                let b = b.await.unwrap();
                eprintln!(
                    "{scenario} c={conc}: {} events posted in {:.1} s ({:.0}/s), {} accepted",
                    b.sent,
                    b.seconds,
                    b.sent as f64 / b.seconds.max(0.001),
                    b.accepted
                );
            }
            let drain = if async_mint {
                let queued = statuses.get(&202).copied().unwrap_or(0) as usize;
                let t = Instant::now();
                while sink.delivered(&smtp) < queued && t.elapsed() < Duration::from_secs(120) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let got = sink.delivered(&smtp);
                if got < queued {
                    eprintln!(
                        "mint-async: only {got} of {queued} queued messages arrived within 120 s"
                    );
                }
                Some((t.elapsed().as_secs_f64(), got))
            } else {
                None
            };
            let delivered_per_s = drain.map(|(d, got)| got as f64 / (secs + d));
            let drain_seconds = drain.map(|(d, _)| d);
            sink.drain(&smtp);
            floors.push(hashing_floor(&args, args.floor_seconds).await);
            let floor = floors.iter().sum::<f64>() / floors.len() as f64;
            let (floor_min, floor_max) = floors
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), f| (lo.min(*f), hi.max(*f)));
            fastest_floor = fastest_floor.max(floor_max);
            lat.sort_unstable();
            let n = lat.len() as u64;
            let per_request = |ms: u64| if n > 0 { ms as f64 / n as f64 } else { 0.0 };
            let all_ms = cpu_ms + own_ms;
            let r = RunResult {
                scenario: scenario.clone(),
                concurrency: conc,
                requests: n,
                seconds: secs,
                rps: n as f64 / secs,
                p50_ms: pct(&lat, 0.50),
                p95_ms: pct(&lat, 0.95),
                p99_ms: pct(&lat, 0.99),
                statuses,
                transport_errors: errors,
                server_cpu_ms_per_request: per_request(cpu_ms),
                token_requests: sink
                    .token_requests()
                    .map(|n| n - tokens_before.unwrap_or(0)),
                server_hashing_cpu_ms_per_request: per_request(hash_ms),
                bench_cpu_ms_per_request: per_request(own_ms),
                hashing_share_of_cpu: if all_ms > 0 {
                    hash_ms as f64 / all_ms as f64
                } else {
                    0.0
                },
                server_peak_rss_mib: hwm as f64 / 1024.0,
                smtp_connections_opened: smtp.connections() - conns_before,
                relay_delay_ms: delay,
                floor_before: floors[0],
                floor_after: floors.last().copied().unwrap_or(0.0),
                floor_min,
                floor_max,
                floor_samples: floors.len(),
                drain_seconds,
                delivered_per_s,
                ratio_of_hashing_floor: if floor > 0.0 {
                    n as f64 / secs / floor
                } else {
                    0.0
                },
            };
            eprintln!(
                "{:<22} relay {:>3} ms c={:<3} {:>8.1} req/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>5.2} ms/req (hashing {:.2}, bench {:.2}, hashing share {:.2})  rss {:>6.1} MiB  smtp conns {:>3}  floor {:.0}..{:.0} ({} samples) x{:.2}  drain {:?} delivered/s {:?}  {:?}",
                r.scenario, r.relay_delay_ms, r.concurrency, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.server_cpu_ms_per_request, r.server_hashing_cpu_ms_per_request, r.bench_cpu_ms_per_request, r.hashing_share_of_cpu, r.server_peak_rss_mib, r.smtp_connections_opened, r.floor_min, r.floor_max, r.floor_samples, r.ratio_of_hashing_floor, r.drain_seconds, r.delivered_per_s, r.statuses
            );
            results.push(r);
        }
    }
    drop(c);
    let write_floor_after = measure_writes(store.clone(), tenant_id.clone()).await;
    let write_floor = match (write_floor_before, write_floor_after) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        _ => None,
    };
    let report = json!({
        "machine": {"cores": cores, "os": std::env::consts::OS},
        "config": {"hashing_algorithm": args.hashing_algorithm.as_deref().unwrap_or("argon2id"), "memory_kib": args.memory_kib.unwrap_or(4096), "iterations": args.iterations.unwrap_or(1), "duration_s": args.duration,
                   "prefill_codes": args.prefill_codes, "prefill_tenants": args.prefill_tenants},
        "hashing_floor_per_s": floor,
        "write_floor_per_s": write_floor.map(|f| json!({"before": write_floor_before, "after": write_floor_after, "mean": f})),
        "storage": if args.database.is_some() { "postgres" } else { "sqlite" },
        "target": if args.otpmint_port.is_some() { "OtpMint (Flask)" } else { "otpmint" },
        "instances": args.instances.max(1),
        "results": results,
    });
    if let Some(parent) = args.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", table(&report));
    if let Some(f) = write_floor {
        println!(
            "durable-write floor (CodeStore::insert_code, 64 writers): {:.0} commits/s before, {:.0} after",
            write_floor_before.unwrap_or(0.0),
            write_floor_after.unwrap_or(0.0)
        );
        for r in &results {
            if r.scenario.contains("mint") {
                println!(
                    "  {} relay {} ms c={}: {:.0} req/s = {:.2} × the write floor",
                    r.scenario,
                    r.relay_delay_ms,
                    r.concurrency,
                    r.rps,
                    r.rps / f
                );
            }
        }
    }
    eprintln!("results written to {}", args.json.display());
    drop(servers);
}
