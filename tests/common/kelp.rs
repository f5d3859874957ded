//! Start kelp in-process in front of a test SeaweedFS, on a free loopback port; or as its own
//! process ([`KelpProcess`]) when a test must kill it without warning.
//!
//! A kelp with a peer listener gets the test peer secret ([`peer_secret_file`]) unless the
//! test passes its own `--peer-secret-file` or `--peer-allow-unauthenticated`: every kelp of a
//! test process shares it, as every kelp of a cluster shares the mounted Secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use kelp::config::Config;
use kelp::embedded::SeaweedFs;
use kelp::peer::handshake::Secret;

/// The peer secret of the test kelps.
pub const PEER_SECRET: &str = "test-peer-secret-6f1c3a52b0e94d7c";

/// A file holding [`PEER_SECRET`] (with a trailing newline, as a file written by hand has),
/// written once per test process under cargo's temporary directory for tests.
pub fn peer_secret_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("kelp-test-peer-secret");
        // Test processes run side by side: write aside and rename, so none reads a half file.
        let tmp = dir.join(format!("kelp-test-peer-secret.{}", std::process::id()));
        std::fs::write(&tmp, format!("{PEER_SECRET}\n")).expect("write the peer secret");
        std::fs::rename(&tmp, &path).expect("move the peer secret into place");
        path
    })
}

/// [`PEER_SECRET`] as kelp holds it, for raw peer connections.
pub fn peer_secret() -> Secret {
    Secret::new(PEER_SECRET.as_bytes()).expect("a valid secret")
}

/// Whether `args` already say how the peer link is authenticated.
fn chooses_peer_auth(args: &[&str]) -> bool {
    args.iter().any(|a| *a == "--peer-secret-file" || *a == "--peer-allow-unauthenticated")
}

pub struct Kelp {
    pub addr: SocketAddr,
    /// The peer listener's address, when `--peer-listen` was given.
    pub peer: Option<SocketAddr>,
    pub config: Config,
    running: Option<kelp::Running>,
}

impl Kelp {
    /// kelp on 127.0.0.1:0 with test defaults plus `extra` flags (e.g. `["--default-partitions", "3"]`).
    pub async fn start(seaweedfs: &SeaweedFs, extra: &[&str]) -> Kelp {
        let a = seaweedfs.addrs();
        let mut args = vec!["--listen", "127.0.0.1:0", "--master", &a.master, "--filer", &a.filer];
        if !extra.contains(&"--upstream-timeout-ms") {
            args.extend_from_slice(&["--upstream-timeout-ms", "5000"]);
        }
        // acks=all answered from the broker's memory unless a test asks otherwise: waiting for
        // the broker's flush and checkpoint costs about 2 s per request here, which tests of
        // other behaviours (quota rates, short leases, clients that send one record at a
        // time) do not budget for. tests/durable_acks.rs covers the default.
        if !extra.contains(&"--acks-all-flushed") {
            args.extend_from_slice(&["--acks-all-flushed", "false"]);
        }
        args.extend_from_slice(extra);
        let secret = peer_secret_file().to_str().expect("a UTF-8 temporary path");
        if extra.contains(&"--peer-listen") && !chooses_peer_auth(extra) {
            args.extend_from_slice(&["--peer-secret-file", secret]);
        }
        let config = Config::from_args(args).expect("test config parses");
        kelp::wait_for_seaweedfs(&config, Duration::from_secs(60))
            .await
            .expect("SeaweedFS answers kelp");
        let running = kelp::start(config.clone()).await.expect("kelp starts");
        Kelp { addr: running.kafka_addr, peer: running.peer_addr, config, running: Some(running) }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub async fn stop(mut self) -> bool {
        self.running.take().expect("running").shutdown().await
    }
}

/// `kelp serve` as a child process on free loopback ports, for tests that crash it
/// ([`KelpProcess::kill`] sends SIGKILL: no lease is released, no connection closed politely).
pub struct KelpProcess {
    pub addr: SocketAddr,
    /// The peer listener's address, when `--peer-listen` was among the flags.
    pub peer: Option<SocketAddr>,
    child: std::process::Child,
}

impl KelpProcess {
    /// Start the `kelp` binary (`bin`, from `env!("CARGO_BIN_EXE_kelp")` in the test) with
    /// test defaults plus `extra`; `peer_listen` binds a peer listener on a free port. Returns
    /// once its admin server reports ready.
    pub async fn start(
        bin: &str,
        seaweedfs: &SeaweedFs,
        peer_listen: bool,
        extra: &[&str],
    ) -> KelpProcess {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (addr, admin) = (free(), free());
        let peer = peer_listen.then(free);
        let a = seaweedfs.addrs();
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["serve", "--listen", &addr.to_string(), "--admin-listen", &admin.to_string()])
            .args(["--master", &a.master, "--filer", &a.filer, "--upstream-timeout-ms", "5000"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        if let Some(p) = peer {
            cmd.args(["--peer-listen", &p.to_string()]);
            if !chooses_peer_auth(extra) {
                cmd.arg("--peer-secret-file").arg(peer_secret_file());
            }
        }
        let child = cmd.spawn().expect("the kelp binary starts");
        let process = KelpProcess { addr, peer, child };
        super::eventually(|| async move {
            if http_status(admin, "/readyz").await == Some(200) {
                Ok(())
            } else {
                Err("kelp not ready")
            }
        })
        .await;
        process
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KelpProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status code of `GET path` on a local HTTP server; `None` when it does not answer.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: kelp\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.ok()?.ok()?;
    String::from_utf8_lossy(&out).split_whitespace().nth(1)?.parse().ok()
}
