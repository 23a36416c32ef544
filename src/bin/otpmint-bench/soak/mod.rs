//! `otpmint-bench --soak SECONDS`: a chaos soak (API.md §19, issue 35). Instances on one
//! PostgreSQL database behind a TCP proxy (`--database`, `--instances`) or one on SQLite
//! take mixed mint (sync and async), verify, resend and parallel-guess load from several
//! tenants, while instances are killed with SIGKILL and SIGTERM and started again, a relay
//! refuses, stalls after the final `.` of DATA, turns sessions away with 421 and answers
//! 451, and the database connection is cut. Then the faults stop, queued messages settle,
//! and an outside checker reads every answer, every message the relays received and every
//! code's record (docs/reliability.md lists what it proves). Exit status 1 on a violation.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpmint::testkit::smtp::{Mode, SmtpServer, SMTP_PASS, SMTP_USER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use super::client::Conn;
use super::server::{database_url, free_port, fresh_database};
use super::{args::Args, ADMIN};

mod check;
mod fleet;
mod load;

use fleet::Instance;
use load::{Load, Tenant};
use otpmint::testkit::proxy::Proxy;

/// A code's lifetime in the soak: queued messages settle (sent, failed, unknown, or expired
/// with their code) within it after the faults stop.
const TTL_SECONDS: u64 = 60;
const MAX_ATTEMPTS: u64 = 5;
const TENANTS: usize = 6;

/// (seconds into the run, pid, RSS in KiB) of one instance.
type RssSample = (f64, u32, u64);

/// A fault and when it lasted (seconds into the run).
#[derive(Serialize, Clone)]
pub struct Fault {
    pub kind: String,
    pub start: f64,
    pub end: f64,
}

/// A code that matches none of `codes` (a wrong guess).
pub fn wrong_for(codes: &[String]) -> String {
    let len = codes.first().map_or(6, String::len);
    let mut rng = rand::thread_rng();
    loop {
        let g: String = (0..len)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        if !codes.contains(&g) {
            return g;
        }
    }
}

fn config(port: u16, relays: &[Arc<SmtpServer>], database: &str, master: &str) -> String {
    let ports: Vec<String> = relays.iter().map(|r| r.port.to_string()).collect();
    let cas: Vec<String> = relays
        .iter()
        .map(|r| format!("{:?}", r.ca_path.display().to_string()))
        .collect();
    format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 5\n\
         [admin]\ntoken = \"{ADMIN}\"\n[registration]\nmode = \"admin\"\n\
         [otp]\nttl_seconds = {TTL_SECONDS}\nmax_attempts = {MAX_ATTEMPTS}\n\
         [limits]\nper_ip_per_second = 0\nrecipient_max_sends = 0\nresend_cooldown_seconds = 0\n\
         tenant_max_sends_per_hour = 0\nrecipient_max_failures = 0\n\
         [smtp]\ntimeout_seconds = 3\nallow_private_hosts = true\nallowed_ports = [{}]\n\
         extra_root_certificates = [{}]\n\
         [database]\nurl = \"{database}\"\npool_size = 8\ntimeout_seconds = 2\n\
         [crypto]\nmaster_key = \"{master}\"\n",
        ports.join(", "),
        cas.join(", ")
    )
}

#[derive(Serialize)]
struct Report {
    storage: String,
    instances: usize,
    seconds: u64,
    faults: Vec<Fault>,
    fault_counts: HashMap<String, usize>,
    settle_seconds: f64,
    settle_bound_seconds: u64,
    memory: Vec<String>,
    findings: check::Findings,
}

/// Run the soak; true when no invariant was broken.
pub async fn run(args: &Args, bin: &Path, seconds: u64) -> bool {
    let relays = vec![
        Arc::new(SmtpServer::start().await),
        Arc::new(SmtpServer::start().await),
    ];
    for r in &relays {
        r.set_delay(Duration::from_millis(args.soak_relay_delay_ms));
    }
    let root = tempfile::tempdir().unwrap();
    let master = otpmint::crypto::keyring::MasterKey::generate().to_base64();
    let (proxy, database) = match &args.database {
        Some(base) => {
            fresh_database(base);
            let url = database_url(base);
            let auth = url.find("://").map_or(0, |i| i + 3);
            let host_start = url[auth..].find('@').map_or(auth, |i| auth + i + 1);
            let host_end = host_start + url[host_start..].find('/').unwrap();
            let upstream = url[host_start..host_end].to_string();
            let proxy = Proxy::start(upstream).await;
            let through = format!(
                "{}127.0.0.1:{}{}",
                &url[..host_start],
                proxy.port,
                &url[host_end..]
            );
            (Some(proxy), through)
        }
        None => (None, "sqlite://data/otpmint.db".to_string()),
    };
    let n = if proxy.is_some() {
        args.instances.max(2)
    } else {
        1
    };
    let mut fleet = Vec::new();
    for i in 0..n {
        let port = free_port();
        let conf = config(port, &relays, &database, &master);
        let mut inst = Instance::new(bin, root.path().join(format!("i{i}")), port, &conf);
        inst.start().await;
        fleet.push(inst);
    }
    eprintln!(
        "soak: {} instance(s) on {}, {TENANTS} tenants, {seconds} s of faults",
        n,
        if proxy.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let tenants = make_tenants(fleet[0].port, &relays).await;
    let faulty: HashSet<usize> = (0..TENANTS).filter(|t| tenants[*t].relay == 0).collect();
    let ports: Vec<u16> = fleet.iter().map(|i| i.port).collect();
    let load = Arc::new(Load::new(tenants.clone(), relays.clone(), ports.clone()));

    let pids: Arc<Mutex<Vec<Option<u32>>>> =
        Arc::new(Mutex::new(fleet.iter().map(Instance::pid).collect()));
    let rss: Arc<Mutex<Vec<Vec<RssSample>>>> = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let sampler = {
        let (pids, rss, load) = (pids.clone(), rss.clone(), load.clone());
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                load.index();
                tick += 1;
                if tick.is_multiple_of(4) {
                    let now = load.now();
                    let pids = pids.lock().unwrap().clone();
                    let mut rss = rss.lock().unwrap();
                    for (i, pid) in pids.iter().enumerate() {
                        if let Some(pid) = pid {
                            rss[i].push((now, *pid, fleet::rss_kib(*pid)));
                        }
                    }
                }
            }
        })
    };
    let workers: Vec<_> = (0..args.soak_workers)
        .map(|w| tokio::spawn(load.clone().worker(args.soak_seed * 1000 + w as u64)))
        .collect();

    // The faults.
    let mut rng = StdRng::seed_from_u64(args.soak_seed);
    let mut faults: Vec<Fault> = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut self_exits: Vec<String> = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        restart_exited(&mut fleet, &pids, &load, &mut self_exits).await;
        if Instant::now() >= end {
            break;
        }
        let start = load.now();
        let kind = match rng.gen_range(0..if proxy.is_some() { 7 } else { 6 }) {
            0 | 1 => {
                // SIGKILL; with several instances the first one stays up, so one
                // process lives the whole run (its memory is watched).
                let i = if n > 1 { rng.gen_range(1..n) } else { 0 };
                fleet[i].kill();
                pids.lock().unwrap()[i] = None;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
                fleet[i].start().await;
                pids.lock().unwrap()[i] = fleet[i].pid();
                format!("kill instance {i}")
            }
            2 => {
                let i = if n > 1 { rng.gen_range(1..n) } else { 0 };
                let clean = fleet[i].terminate(Duration::from_secs(10));
                pids.lock().unwrap()[i] = None;
                fleet[i].start().await;
                pids.lock().unwrap()[i] = fleet[i].pid();
                format!(
                    "term instance {i}{}",
                    if clean { "" } else { " (not ended in 10 s)" }
                )
            }
            3 => {
                let mode = [Mode::RejectRecipients, Mode::KeepAndStall][rng.gen_range(0..2)];
                relays[0].set_mode(mode);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..4000))).await;
                relays[0].set_mode(Mode::Normal);
                format!("relay {mode:?}")
            }
            4 => {
                relays[0].set_session_limit(Some(0));
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..4000))).await;
                relays[0].set_session_limit(None);
                "relay 421 at greeting".into()
            }
            5 => {
                relays[0].tempfail_next(rng.gen_range(5..30));
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
                relays[0].tempfail_next(0);
                "relay 451 to the next messages".into()
            }
            _ => {
                let proxy = proxy.as_ref().unwrap();
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
                proxy.restore();
                "cut database".into()
            }
        };
        eprintln!("  {start:6.1} s  {kind}");
        faults.push(Fault {
            kind,
            start,
            end: load.now(),
        });
    }
    restart_exited(&mut fleet, &pids, &load, &mut self_exits).await;
    relays[0].set_mode(Mode::Normal);
    relays[0].set_session_limit(None);
    relays[0].tempfail_next(0);
    let faults_over = load.now();
    load.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }
    eprintln!("soak: faults over at {faults_over:.1} s; waiting for queued messages to settle");

    // Settle: every code's delivery leaves queued/sending within the bound.
    let bound = TTL_SECONDS + 30;
    let settle_started = Instant::now();
    let minted = load.record.lock().unwrap().minted.clone();
    let mut finals: HashMap<String, check::Final> = HashMap::new();
    let mut open: Vec<usize> = (0..minted.len()).collect();
    let deadline = settle_started + Duration::from_secs(bound);
    let mut conn = None;
    let mut port = 0usize;
    loop {
        let mut still = Vec::new();
        for i in open {
            let m = &minted[i];
            let path = format!("/v1/otp/{}", m.key);
            let sk = &tenants[m.tenant].sk;
            let got = if Instant::now() < deadline {
                get(&ports, &mut conn, &mut port, &path, sk).await
            } else {
                None
            };
            let Some(got) = got else {
                still.push(i);
                continue;
            };
            if got.0 != 200 {
                still.push(i);
                continue;
            }
            let fin = check::Final::from_json(
                &serde_json::from_slice::<Value>(&got.1).unwrap_or(Value::Null),
            );
            let settled = !matches!(fin.delivery.as_str(), "queued" | "sending");
            finals.insert(m.key.clone(), fin);
            if !settled {
                still.push(i);
            }
        }
        open = still;
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_seconds = settle_started.elapsed().as_secs_f64();
    sampler.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let received = load.received();
    let record = std::mem::take(&mut *load.record.lock().unwrap());
    let max_attempts: Vec<u64> = tenants.iter().map(|t| t.max_attempts).collect();
    let mut findings = check::check(&record, &finals, &received, &faults, &max_attempts, &faulty);
    findings.violations.extend(self_exits);
    let memory = memory_verdicts(&rss.lock().unwrap(), seconds as f64);
    let mut fault_counts: HashMap<String, usize> = HashMap::new();
    for f in &faults {
        let family = f
            .kind
            .split(" instance")
            .next()
            .unwrap_or(&f.kind)
            .to_string();
        *fault_counts.entry(family).or_default() += 1;
    }
    let memory_ok = memory.iter().all(|m| !m.starts_with("GREW"));
    let report = Report {
        storage: if proxy.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
        .into(),
        instances: n,
        seconds,
        faults,
        fault_counts,
        settle_seconds,
        settle_bound_seconds: bound,
        memory,
        findings,
    };
    let pass = report.findings.violations.is_empty() && memory_ok;
    print_report(&report, pass);
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    drop(fleet);
    pass
}

/// Start again each instance that ended by itself (a crash: a violation, noted in `exits`).
async fn restart_exited(
    fleet: &mut [Instance],
    pids: &Mutex<Vec<Option<u32>>>,
    load: &Load,
    exits: &mut Vec<String>,
) {
    for (i, inst) in fleet.iter_mut().enumerate() {
        if let Some(status) = inst.exited() {
            exits.push(format!(
                "instance {i} ended by itself ({status}) before {:.1} s; see {}",
                load.now(),
                inst.dir.join("server.log").display()
            ));
            inst.start().await;
            pids.lock().unwrap()[i] = inst.pid();
        }
    }
}

/// A GET on any instance (10 s each, the next instance after a failure); `None` when none
/// answered.
async fn get(
    ports: &[u16],
    conn: &mut Option<Conn>,
    port: &mut usize,
    path: &str,
    sk: &str,
) -> Option<(u16, Vec<u8>)> {
    for _ in 0..ports.len() * 2 {
        if conn.is_none() {
            *conn = Conn::open(ports[*port % ports.len()]).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            if let Ok(Ok(answer)) =
                tokio::time::timeout(Duration::from_secs(10), c.request("GET", path, sk, b"")).await
            {
                return Some(answer);
            }
        }
        *conn = None;
        *port += 1;
    }
    None
}

/// The tenants, created through the admin API: half send through the relay that
/// misbehaves, half through the one that does not.
async fn make_tenants(port: u16, relays: &[Arc<SmtpServer>]) -> Vec<Tenant> {
    let mut c = Conn::open(port).await.unwrap();
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let relay = t % relays.len();
        let body = json!({"name": format!("soak {t}"), "smtp": {"host": "127.0.0.1", "port": relays[relay].port, "username": SMTP_USER, "password": SMTP_PASS, "from": format!("Soak <soak{t}@soak.example>")}});
        let (s, answer) = c
            .request("POST", "/v1/tenants", ADMIN, body.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&answer));
        let v: Value = serde_json::from_slice(&answer).unwrap();
        tenants.push(Tenant {
            sk: v["secret_key"].as_str().unwrap().to_string(),
            relay,
            max_attempts: MAX_ATTEMPTS,
        });
    }
    tenants
}

/// Each process that lived at least half the run: its RSS must not keep growing. After a
/// warm-up (the first quarter of its life), the last sample may exceed the warm-up's highest
/// by at most 25 % + 16 MiB.
fn memory_verdicts(rss: &[Vec<RssSample>], seconds: f64) -> Vec<String> {
    let mut out = Vec::new();
    for (i, samples) in rss.iter().enumerate() {
        let mut lives: HashMap<u32, Vec<(f64, u64)>> = HashMap::new();
        for (t, pid, kib) in samples {
            lives.entry(*pid).or_default().push((*t, *kib));
        }
        for life in lives.values() {
            let (Some(first), Some(last)) = (life.first(), life.last()) else {
                continue;
            };
            if last.0 - first.0 < seconds / 2.0 {
                continue;
            }
            let warm = first.0 + (last.0 - first.0) / 4.0;
            let base = life
                .iter()
                .filter(|s| s.0 <= warm)
                .map(|s| s.1)
                .max()
                .unwrap_or(first.1);
            let peak = life.iter().map(|s| s.1).max().unwrap_or(0);
            let limit = base + base / 4 + 16 * 1024;
            let verdict = if last.1 > limit { "GREW" } else { "flat" };
            out.push(format!(
                "{verdict}: instance {i} over {:.0} s: {} MiB after warm-up, {} MiB at the end, peak {} MiB",
                last.0 - first.0,
                base / 1024,
                last.1 / 1024,
                peak / 1024
            ));
        }
    }
    if out.is_empty() {
        out.push("not checked: no process lived half the run".into());
    }
    out
}

fn print_report(r: &Report, pass: bool) {
    let f = &r.findings;
    println!(
        "soak on {} ({} instance(s)), {} s of faults: {}",
        r.storage,
        r.instances,
        r.seconds,
        if pass { "PASSED" } else { "FAILED" }
    );
    let mut counts: Vec<_> = r.fault_counts.iter().collect();
    counts.sort();
    println!("  faults: {counts:?}");
    println!(
        "  codes minted (201/202): {}, verified: {}, messages received: {}, transport errors: {}",
        f.codes_minted, f.verified, f.messages_received, f.transport_errors
    );
    let mut st: Vec<_> = f.statuses.iter().collect();
    st.sort();
    println!("  answers: {st:?}");
    let mut cs: Vec<_> = f.code_states.iter().collect();
    cs.sort();
    let mut ds: Vec<_> = f.delivery_states.iter().collect();
    ds.sort();
    println!("  codes: {cs:?}; deliveries: {ds:?}");
    println!(
        "  settled {:.1} s after the faults stopped (bound {} s)",
        r.settle_seconds, r.settle_bound_seconds
    );
    for m in &r.memory {
        println!("  memory: {m}");
    }
    for v in f.violations.iter().take(30) {
        println!("  VIOLATION: {v}");
    }
    if f.violations.len() > 30 {
        println!("  … and {} more violations", f.violations.len() - 30);
    }
}
