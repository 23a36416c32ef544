//! The soak's servers and faults: otpmint processes that can be killed and started again on
//! their own port and configuration, and a TCP proxy in front of PostgreSQL that can cut
//! every connection to the database for a while.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use super::super::client::Conn;

/// One otpmint instance: a port and a configuration it keeps across its lives.
pub struct Instance {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    /// Lives so far.
    pub lives: u32,
}

impl Instance {
    pub fn new(bin: &Path, dir: PathBuf, port: u16, config: &str) -> Instance {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("soak.toml"), config).unwrap();
        Instance {
            port,
            dir,
            bin: bin.to_path_buf(),
            child: None,
            lives: 0,
        }
    }

    /// Start a new life and wait until it answers /healthz (at most 30 s).
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .current_dir(&self.dir)
            .arg("--config")
            .arg("soak.toml")
            .env_remove("OTPMINT_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.lives += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Conn::open(self.port).await {
                if let Ok((200, _)) = c.request("GET", "/healthz", "", b"").await {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "otpmint exited at start ({status}); see {}",
                    self.dir.join("server.log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "otpmint did not come up; see {}",
                self.dir.join("server.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process ended by itself (no fault of the soak's): how, if so.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status.to_string())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process ends at once, holding what it held.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the process to end (its shutdown grace, then SIGKILL).
    pub async fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident set size of a process now, in KiB (0 if gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP proxy to `upstream` that can cut: every open connection closed and new ones
/// closed as they arrive, for as long as the cut lasts.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = tokio::sync::watch::Sender::new(0u64);
        let (c, g) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let mut gen = g.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut down, mut up) = (down, up);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = gen.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            generation,
        }
    }

    /// Close every connection now and refuse new ones until [`Proxy::mend`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
