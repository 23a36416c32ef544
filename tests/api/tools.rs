//! Programs the tests need beyond Rust (a browser, Podman, Node, Python), installed with
//! apt-get where they can be.

/// Whether `bin --version` runs.
pub fn have(bin: &str) -> bool {
    std::process::Command::new(bin)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the programs `bins` are here, after installing Debian's `packages` with apt-get
/// (with their recommended packages when `recommends`) when one is missing and apt-get is
/// here. One install at a time (apt-get holds a lock).
pub fn apt_tools(bins: &[&str], packages: &[&str], recommends: bool) -> bool {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if bins.iter().all(|b| have(b)) {
        return true;
    }
    eprintln!(
        "installing {} with apt-get for the tests…",
        packages.join(" ")
    );
    let _ = std::process::Command::new("apt-get")
        .args(["update", "-qq"])
        .status();
    let _ = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args((!recommends).then_some("--no-install-recommends"))
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    bins.iter().all(|b| have(b))
}
