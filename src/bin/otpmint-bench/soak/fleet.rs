//! The soak's servers: otpmint processes that can be killed and started again on their own
//! port and configuration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::super::server::{healthy_within, status_kib, stop};

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
        if !healthy_within(self.port, Duration::from_secs(30)).await {
            panic!(
                "otpmint did not come up ({:?}); see {}",
                self.exited(),
                self.dir.join("server.log").display()
            );
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

    /// SIGTERM, then wait for the process to end (its shutdown grace, then SIGKILL):
    /// whether it ended in time.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        match self.child.take() {
            Some(mut c) => tokio::task::block_in_place(|| stop(&mut c, grace)),
            None => true,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, Duration::from_secs(10));
        }
    }
}

/// Resident set size of a process now, in KiB (0 if gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}
