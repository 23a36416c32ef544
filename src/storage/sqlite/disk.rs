//! The free space of the disk holding the database's files, and whether it takes writes at
//! all, for readiness (API.md §6.24).

use std::path::Path;

/// The bytes an unprivileged process may still write on the filesystem holding `dir`, or
/// `None` where that cannot be asked or is not told (a filesystem that reports no blocks at
/// all: ramfs, some FUSE ones). The blocks kept for root are not counted, even for root: a
/// root in a user namespace (a rootless container) cannot use them.
#[cfg(target_os = "linux")]
// The field types are u64 on some targets, narrower on others.
#[allow(clippy::useless_conversion)]
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is plain data the
    // call fills, read only when it succeeded.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    if st.f_blocks == 0 {
        return None;
    }
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// Whether the filesystem holding `dir` is mounted read-only now — as ext4 remounts itself
/// after an error (`errors=remount-ro`): every write fails while a lock taken and rolled
/// back (the write probe) still succeeds. False where that cannot be asked.
#[cfg(target_os = "linux")]
// The field type is u64 on some targets, narrower on others.
#[allow(clippy::useless_conversion)]
pub(super) fn read_only(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: as in `free_bytes`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    u64::from(st.f_flag) & u64::from(libc::ST_RDONLY) != 0
}

#[cfg(not(target_os = "linux"))]
pub(super) fn read_only(_dir: &Path) -> bool {
    false
}
