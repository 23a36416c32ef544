//! The Linux CPU scheduling policy of the server's threads (`server.scheduling`).
//!
//! Why batch: under a full CPU, every request wakes several threads (its HTTP worker, the
//! database writer, a hashing thread). With the default policy each wake-up preempts a
//! hashing thread at once, so each step of each request costs two thread switches and runs
//! with cold caches. Under `SCHED_BATCH` a woken thread waits for the next scheduler tick
//! instead, by which time the steps of many requests are ready and run together: measured
//! here on wrong verifies at c=64, about 14 → 5 thread switches per request and the hashing
//! threads' share of the CPU 0.81 → 0.85 (docs/benchmarks.md). A thread that wakes while a
//! core is free runs at once either way.

use crate::config::CpuScheduling;

/// Give the calling thread `policy`. Threads it starts afterwards inherit it, so call this
/// before the runtime and the server start theirs. Only Linux has these policies; elsewhere
/// this does nothing.
pub fn apply(policy: CpuScheduling) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let p = match policy {
            CpuScheduling::Batch => libc::SCHED_BATCH,
            CpuScheduling::Normal => libc::SCHED_OTHER,
        };
        // Already so (e.g. systemd's CPUSchedulingPolicy=batch): no call to make, which
        // matters where a system-call filter denies sched_setscheduler.
        // SAFETY: no arguments but pid 0, the calling thread.
        let current = unsafe { libc::sched_getscheduler(0) };
        if current >= 0 && (current & !libc::SCHED_RESET_ON_FORK) == p {
            return Ok(());
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that the call only reads; pid 0 names the
        // calling thread. Neither policy needs a privilege (both have priority 0).
        let r = unsafe { libc::sched_setscheduler(0, p, &param) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
    Ok(())
}
