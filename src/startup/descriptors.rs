//! Open files: the soft limit raised to the hard one at start, and client connections kept
//! within it. Each worker takes up to `server.max_connections_per_worker` clients; with many
//! workers that can pass the process's limit (`LimitNOFILE=65536` in the unit: 16 workers ×
//! 4096), and then outbound SMTP and HTTP connections, database files and connections fail
//! with "too many open files" while clients hold every descriptor. So the clients of all
//! workers together leave a reserve for the rest: what the settings let the server open
//! outbound (relay sessions, webhook requests, database connections) and [`RESERVED`] more.

/// Descriptors kept beyond the settings' own bounds (files, listeners, DNS sockets, idle
/// pooled connections).
pub const RESERVED: u64 = 1024;
/// The fewest client connections a worker is given, whatever the limit.
const FLOOR: u64 = 64;

/// Raise the soft limit of open files to the hard one; the soft limit now (`None` when it
/// cannot be read).
pub fn raise_limit() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write and read only the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            l.rlim_cur = l.rlim_max;
        }
    }
    Some(l.rlim_cur)
}

/// The client connections a worker may hold: `wanted`, or less when `workers` of them would
/// leave fewer than `reserve` of `limit` descriptors (never under a floor of 64).
pub fn per_worker(limit: u64, reserve: u64, workers: usize, wanted: usize) -> usize {
    let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
    let room = limit.saturating_sub(reserve) / workers;
    let allowed = room.max(FLOOR);
    usize::try_from(allowed).map_or(wanted, |a| wanted.min(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_of_all_workers_leave_descriptors_for_the_rest() {
        // The unit's limit, 16 workers wanting 4096 each: 4032 each, 1024 left.
        let each = per_worker(65_536, RESERVED, 16, 4096);
        assert_eq!(each, 4032);
        assert!(16 * each as u64 + RESERVED <= 65_536);
        // The defaults' outbound bounds too (1024 sessions, 8 database connections, 64
        // webhook requests): 3963 each.
        let reserve = RESERVED + 1024 + 8 + 64;
        let each = per_worker(65_536, reserve, 16, 4096);
        assert!(
            16 * each as u64 + reserve <= 65_536 && each == 3963,
            "{each}"
        );
        // Room enough: as configured.
        assert_eq!(per_worker(65_536, RESERVED, 4, 4096), 4096);
        assert_eq!(per_worker(1_048_576, RESERVED, 64, 4096), 4096);
        // A small limit: never under the floor, and no worker count divides by zero.
        assert_eq!(per_worker(1024, RESERVED, 8, 4096), 64);
        assert_eq!(per_worker(4096, RESERVED, 0, 4096), 3072);
        assert_eq!(per_worker(0, RESERVED, 2, 100), 64);
    }

    fn limits() -> libc::rlimit {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
        l
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let before = limits();
        let soft = raise_limit().unwrap();
        let after = limits();
        // What it answers is the limit now, never lower than before, and the hard one when
        // the system let it be raised (it does for an unprivileged process, up to the hard
        // limit, unless the hard limit passes the kernel's nr_open).
        assert_eq!(soft, after.rlim_cur);
        assert!(after.rlim_cur >= before.rlim_cur);
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if nr_open.is_some_and(|n| after.rlim_max <= n) {
            assert_eq!(after.rlim_cur, after.rlim_max);
        }
    }
}
