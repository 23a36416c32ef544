//! The container image (API.md §18.2), built from `packaging/Containerfile` with Podman and
//! run as a user would: a code minted through it arrives at the test SMTP server and verifies
//! after the container is replaced by a new one on the same volume; it runs as UID 10001 on a
//! read-only root, listens on 0.0.0.0:8080 and its HEALTHCHECK passes.
//!
//! No registry is reachable from the machines the tests run on, so the test builds the image
//! the way docs/deployment.md describes for such machines: `OTPMINT_BINARY` is the binary
//! these tests run (stripped), and `BASE` is a local base made `FROM scratch` with the C
//! runtime that binary links (from `ldd`), the CA certificates and a passwd entry — what
//! distroless `cc` holds. Podman is installed with apt-get when it is missing; where it cannot
//! be, the test says so loudly and is skipped (`.ci/run` installs it first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};
use crate::tools::apt_tools;

const BIN: &str = env!("CARGO_BIN_EXE_otpmint");
const ADMIN: &str = "container-admin-token-0123456789abcdef";

/// Podman as PITFALLS.md's recipe runs it here: runc, cgroupfs, no default ulimits.
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf).args([
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ]);
        c
    }

    /// Run podman with `args` off the async workers (the SMTP server serves meanwhile).
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    /// Run podman and return its trimmed stdout; panics with stderr when it fails.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "podman {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// What `podman rm`s at the end, whatever happened.
struct Cleanup {
    conf: PathBuf,
    containers: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let podman = |args: Vec<&str>| {
            let _ = Command::new("podman")
                .env("CONTAINERS_CONF", &self.conf)
                .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
                .args(args)
                .output();
        };
        for c in &self.containers {
            podman(vec!["rm", "-f", "-t", "0", c]);
        }
        for v in &self.volumes {
            podman(vec!["volume", "rm", "-f", v]);
        }
        for i in &self.images {
            podman(vec!["rmi", "-f", i]);
        }
    }
}

/// The files of the C runtime `binary` links, as `ldd` names them.
fn linked_libraries(binary: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    assert!(out.status.success(), "ldd {binary} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, right)) => right.trim().split(' ').next()?,
                None => l.trim().split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A base like distroless `cc`, made `FROM scratch` from this machine's files.
fn write_base_context(dir: &Path) {
    let root = dir.join("rootfs");
    for lib in linked_libraries(BIN) {
        let dest = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // `cp -L`: the library itself, not the symlink ldd names.
        std::fs::copy(std::fs::canonicalize(&lib).unwrap(), &dest).unwrap();
    }
    let certs = root.join("etc/ssl/certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        certs.join("ca-certificates.crt"),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\notpmint:x:10001:10001:otpmint:/data:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\notpmint:x:10001:\n").unwrap();
    std::fs::write(dir.join("Containerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
}

/// A free loopback port (for the container on the host's network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_read_only_as_10001_and_keeps_its_state_on_the_volume() {
    if !apt_tools(&["podman", "runc"], &["podman", "runc"], true) {
        eprintln!(
            "\n*** CONTAINER TEST SKIPPED: podman and runc are missing and could not be \
             installed with apt-get (`apt-get install podman runc`) ***\n"
        );
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let podman = Podman { conf: conf.clone() };
    let tag = format!("{}-{}", std::process::id(), rand_suffix());
    let (base_image, image) = (
        format!("localhost/otpmint-test-base:{tag}"),
        format!("localhost/otpmint-test:{tag}"),
    );
    let volume = format!("otpmint-test-{tag}");
    let mut cleanup = Cleanup {
        conf,
        containers: Vec::new(),
        volumes: vec![volume.clone()],
        images: vec![image.clone(), base_image.clone()],
    };

    // The images of the build's stages, removed at the end: those that were not there before.
    let dangling_before = podman
        .ok(&["images", "-q", "--filter", "dangling=true"])
        .await;
    // The base, then the image from packaging/Containerfile as published.
    let base_dir = dir.path().join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    write_base_context(&base_dir);
    podman
        .ok(&[
            "build",
            "-q",
            "--layers=false",
            "-t",
            &base_image,
            base_dir.to_str().unwrap(),
        ])
        .await;
    let ctx = dir.path().join("context");
    std::fs::create_dir_all(&ctx).unwrap();
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(ctx.join("otpmint"))
        .arg(BIN)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(BIN, ctx.join("otpmint")).unwrap();
    }
    let containerfile = repo.join("packaging/Containerfile");
    podman
        .ok(&[
            "build",
            "-q",
            "--format",
            "docker",
            "--build-arg",
            "OTPMINT_BINARY=otpmint",
            "--build-arg",
            &format!("BASE={base_image}"),
            "-f",
            containerfile.to_str().unwrap(),
            "-t",
            &image,
            ctx.to_str().unwrap(),
        ])
        .await;

    // What the image declares.
    let config: Value = serde_json::from_str(
        &podman
            .ok(&["image", "inspect", &image, "--format", "{{json .Config}}"])
            .await,
    )
    .unwrap();
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(
        config["Entrypoint"],
        json!(["/usr/bin/otpmint"]),
        "{config}"
    );
    assert_eq!(config["Cmd"], json!(["serve"]), "{config}");
    assert!(config["Volumes"]["/data"].is_object(), "{config}");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object(), "{config}");
    let health: Value = serde_json::from_str(
        &podman
            .ok(&[
                "image",
                "inspect",
                &image,
                "--format",
                "{{json .HealthCheck}}",
            ])
            .await,
    )
    .unwrap();
    assert_eq!(
        health["Test"],
        json!(["CMD", "/usr/bin/otpmint", "healthcheck"]),
        "{health}"
    );
    let env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap();
    assert!(
        env.iter()
            .any(|e| e == "OTPMINT__SERVER__BIND=0.0.0.0:8080"),
        "{env:?}"
    );
    // No shell, no package manager: only the binary and the runtime's files.
    let dangling_after = podman
        .ok(&["images", "-q", "--filter", "dangling=true"])
        .await;
    cleanup.images.extend(
        dangling_after
            .lines()
            .filter(|id| !dangling_before.lines().any(|b| b == *id))
            .map(str::to_string),
    );
    let shell = podman
        .run(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "true",
        ])
        .await;
    let why = String::from_utf8_lossy(&shell.stderr);
    assert!(
        !shell.status.success() && why.contains("/bin/sh"),
        "the image has a shell (or podman failed otherwise): {why}"
    );

    // As published: 0.0.0.0:8080 behind a published port, read-only, healthy.
    let name = format!("otpmint-test-default-{tag}");
    cleanup.containers.push(name.clone());
    podman
        .ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--read-only",
            "-v",
            &format!("{volume}:/data"),
            "-p",
            "127.0.0.1::8080",
            &image,
        ])
        .await;
    let published = podman.ok(&["port", &name, "8080"]).await;
    let port = published.rsplit(':').next().unwrap().to_string();
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    let health = podman.run(&["healthcheck", "run", &name]).await;
    assert!(
        health.status.success(),
        "the HEALTHCHECK failed: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    // The server's process runs as UID 10001 (on the host too: no user namespace here).
    let top = podman.ok(&["top", &name, "huser"]).await;
    let uids: Vec<&str> = top.lines().skip(1).map(str::trim).collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|u| *u == "10001"),
        "{top}"
    );
    podman.ok(&["stop", "-t", "20", &name]).await;
    podman.ok(&["rm", &name]).await;
    // The volume holds the database and the master key, owned by the service's user.
    let mount = podman
        .ok(&["volume", "inspect", &volume, "--format", "{{.Mountpoint}}"])
        .await;
    {
        use std::os::unix::fs::MetadataExt;
        for f in ["otpmint.db", "master.key"] {
            let meta = std::fs::metadata(Path::new(&mount).join(f)).unwrap();
            assert_eq!(meta.uid(), 10001, "{f}");
        }
        let key = std::fs::metadata(Path::new(&mount).join("master.key")).unwrap();
        assert_eq!(key.mode() & 0o777, 0o600);
    }

    // A master key from the environment (a secret store) works with the image as it is: no
    // variable of the image names a key file that would clash with it, and none is written.
    let keyed_volume = format!("{volume}-key");
    cleanup.volumes.push(keyed_volume.clone());
    let keyed = format!("otpmint-test-key-{tag}");
    cleanup.containers.push(keyed.clone());
    let master_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    podman
        .ok(&[
            "run",
            "-d",
            "--name",
            &keyed,
            "--read-only",
            "-v",
            &format!("{keyed_volume}:/data"),
            "-e",
            &format!("OTPMINT__CRYPTO__MASTER_KEY={master_key}"),
            "-p",
            "127.0.0.1::8080",
            &image,
        ])
        .await;
    let published = podman.ok(&["port", &keyed, "8080"]).await;
    let port = published.rsplit(':').next().unwrap().to_string();
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    podman.ok(&["stop", "-t", "20", &keyed]).await;
    let mount = podman
        .ok(&[
            "volume",
            "inspect",
            &keyed_volume,
            "--format",
            "{{.Mountpoint}}",
        ])
        .await;
    assert!(Path::new(&mount).join("otpmint.db").exists());
    assert!(!Path::new(&mount).join("master.key").exists());

    // Mail through the test SMTP server: the container on the host's network (the relay
    // listens on loopback), its CA given as a file.
    let smtp = SmtpServer::start().await;
    let ca = dir.path().join("ca.pem");
    std::fs::copy(&smtp.ca_path, &ca).unwrap();
    let http_port = free_port();
    let base = format!("http://127.0.0.1:{http_port}");
    let run_on_volume = |n: u32| {
        let name = format!("otpmint-test-{n}-{tag}");
        let args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--read-only",
            "--network",
            "host",
            "-v",
            &format!("{volume}:/data"),
            "-v",
            &format!("{}:/run/otpmint/ca.pem:ro", ca.display()),
            "-e",
            &format!("OTPMINT__SERVER__BIND=127.0.0.1:{http_port}"),
            "-e",
            &format!("OTPMINT__ADMIN__TOKEN={ADMIN}"),
            "-e",
            "OTPMINT__SMTP__ALLOW_PRIVATE_HOSTS=true",
            "-e",
            &format!("OTPMINT__SMTP__ALLOWED_PORTS={}", smtp.port),
            "-e",
            "OTPMINT__SMTP__EXTRA_ROOT_CERTIFICATES=/run/otpmint/ca.pem",
            &image,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        (name, args)
    };
    let (first, args) = run_on_volume(1);
    cleanup.containers.push(first.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.ok(&args).await;
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Acme", "smtp": {
            "host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER,
            "password": SMTP_PASS, "from": "Acme <no-reply@acme.example>", "tls": "starttls",
        }}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let tenant: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let sk = tenant["secret_key"].as_str().unwrap().to_string();
    let r = client
        .post(format!("{base}/v1/otp"))
        .bearer_auth(&sk)
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let minted: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let key = minted["shareable_key"].as_str().unwrap().to_string();
    let code = smtp.wait_for("ada@example.com", 1).await.code();

    // A new container on the same volume: the tenant, the pending code and the master key
    // that seals them survived.
    podman.ok(&["stop", "-t", "20", &first]).await;
    let exit = podman
        .ok(&["inspect", &first, "--format", "{{.State.ExitCode}}"])
        .await;
    assert_eq!(exit, "0", "SIGTERM ends the server cleanly");
    podman.ok(&["rm", &first]).await;
    let (second, args) = run_on_volume(2);
    cleanup.containers.push(second.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.ok(&args).await;
    wait_ready(&base).await;
    let r = client
        .post(format!("{base}/v1/otp/verify"))
        .bearer_auth(&sk)
        .json(&json!({"shareable_key": key, "otp": code}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let verified: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["email"], "ada@example.com");
    podman.ok(&["stop", "-t", "20", &second]).await;
}

/// A short random suffix, so that parallel runs do not share image or volume names.
fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:08x}")
}
