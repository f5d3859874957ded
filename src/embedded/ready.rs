//! Readiness: what "the server is up" and "the broker is up" mean for a throw-away instance,
//! and polling until they hold, a child exits, or the deadline passes.
//!
//! Owns the probes (TCP accepts plus the master listing the filer or the broker), their
//! timing, and noticing a child that exited meanwhile. Does not own the master call itself
//! (`master`) nor what happens after a failed attempt (retrying, in the parent module). It
//! needs no kelp client: "the first topic call succeeds" is for callers to check.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::master::list_cluster_nodes;
use super::ports::HOST;
use super::{SeaweedFs, Startup};

/// Pause between readiness probes: startup takes seconds, so ten probes a second see it
/// promptly without keeping a core busy.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Upper bound for one readiness probe (a TCP connect or one gRPC call). On loopback an
/// answer takes milliseconds; a probe that hangs longer is counted as a failed one.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`SeaweedFs::wait_for`] waits for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage {
    /// `weed server`: master, volume server and filer.
    Server,
    /// `weed mq.broker`.
    Broker,
}

impl SeaweedFs {
    /// Polls the readiness probe of `stage` until it succeeds; fails early if a child exits,
    /// or at `deadline`, with the last probe error and both log tails.
    pub(super) async fn wait_for(
        &mut self,
        deadline: Instant,
        stage: Stage,
    ) -> Result<(), Startup> {
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

    /// The master answers gRPC and lists the filer, and the filer accepts TCP on both ports.
    async fn server_ready(&self) -> anyhow::Result<()> {
        tcp_accepts(self.ports.master_http).await?;
        tcp_accepts(self.ports.filer_http).await?;
        tcp_accepts(self.ports.filer_grpc).await?;
        let filers = list_cluster_nodes(self.ports.master_grpc, "filer", self.tls.as_ref()).await?;
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

async fn tcp_accepts(port: u16) -> anyhow::Result<()> {
    tokio::net::TcpStream::connect((HOST, port))
        .await
        .with_context(|| format!("connecting to {HOST}:{port}"))?;
    Ok(())
}
