//! The peer link, forwarding side: this kelp's connections to other kelps' peer listeners,
//! and the peer listener's address (DESIGN.md, "Consumer groups across sidecars").
//!
//! Owns: binding the peer listener and choosing the address other kelps are told, the pool of
//! connections to other kelps, and the deadline of one forward. Does not own which requests
//! are forwarded or to whom (`routing`), nor serving what peers send (`connection::peer`).

pub(crate) mod client;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use tokio::net::TcpListener;

use crate::config::{self, Config};
use crate::shutdown::CancellationToken;
pub use client::PeerError;

/// Longest a forwarding kelp waits to connect to an owner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept per owner. Connections in use are not limited here: each client
/// connection has at most one request in flight, so forwards never outnumber client
/// connections (`KELP_MAX_CONNECTIONS`).
const POOL_IDLE_PER_PEER: usize = 8;

/// A pooled connection idle longer than this is closed rather than reused (well below the
/// owner's idle timeout, so a reused connection is rarely one the owner already closed).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Added to two upstream timeouts for an owner's answer: the forward's own network time.
const REQUEST_SLACK: Duration = Duration::from_secs(1);

/// Forwarding to other kelps; one per process, shared by every client connection.
pub struct Peers {
    pool: client::Pool,
    /// Cancelled on shutdown: forwards in flight answer COORDINATOR_NOT_AVAILABLE at once.
    cancel: CancellationToken,
    /// Deadline of a forwarded request that does not wait for a rebalance: the owner may read
    /// the group and write offsets, each filer call bounded by the upstream timeout.
    request_timeout: Duration,
}

impl Peers {
    pub fn new(config: &Config, cancel: CancellationToken) -> Peers {
        Peers {
            pool: client::Pool::new(config.max_frame_bytes),
            cancel,
            request_timeout: config.upstream_timeout() * 2 + REQUEST_SLACK,
        }
    }

    /// How long an owner may take to answer a request it does not park.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Send `body` (a request of `key` at `version`, with the client's `header` fields) to the
    /// peer listener at `owner` and return its answer, within `timeout`. Shutdown ends a
    /// forward in flight at once.
    pub async fn call(
        &self,
        owner: &str,
        header: &RequestHeader,
        key: ApiKey,
        version: i16,
        body: &RequestKind,
        timeout: Duration,
    ) -> Result<ResponseKind, PeerError> {
        let call = self.pool.call(owner, header, key, version, body);
        tokio::select! {
            _ = self.cancel.cancelled() => Err(PeerError::ShuttingDown),
            r = tokio::time::timeout(timeout, call) => r.unwrap_or(Err(PeerError::Timeout(timeout))),
        }
    }
}

/// Bind the peer listener when one is configured; returns it with the address other kelps
/// are told to use.
pub async fn bind(config: &Config) -> anyhow::Result<Option<(TcpListener, String)>> {
    let Some(addr) = config.peer_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ({})", config::ENV_PEER_LISTEN))?;
    let bound = listener.local_addr()?;
    let advertised = match &config.peer_advertised {
        Some(a) => {
            let port = a.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
            port.parse::<u16>().with_context(|| {
                format!("{}: expected host:port, got {a:?}", config::ENV_PEER_ADVERTISED)
            })?;
            a.clone()
        }
        None if bound.ip().is_unspecified() => {
            let ip = local_ip_towards(&config.master).await.with_context(|| {
                format!(
                    "{} binds {bound}; set {} to the address other kelps reach it at",
                    config::ENV_PEER_LISTEN,
                    config::ENV_PEER_ADVERTISED
                )
            })?;
            SocketAddr::new(ip, bound.port()).to_string()
        }
        None => bound.to_string(),
    };
    Ok(Some((listener, advertised)))
}

/// The local address this host uses to reach `server` (SeaweedFS's `host:port[.grpcPort]`):
/// in a pod, the pod IP. A UDP "connect" picks the route without sending anything.
async fn local_ip_towards(server: &str) -> anyhow::Result<IpAddr> {
    let (host, port) = server.rsplit_once(':').context("no port in the master address")?;
    let port: u16 = port
        .split('.')
        .next()
        .unwrap_or_default()
        .parse()
        .context("bad port in the master address")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .context("the master's host does not resolve")?;
    let any: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wildcard_bind_advertises_the_address_that_reaches_the_master() {
        let config =
            Config::from_args(["--peer-listen", "0.0.0.0:0", "--master", "127.0.0.1:9333"])
                .unwrap();
        let (listener, advertised) = bind(&config).await.unwrap().unwrap();
        assert_eq!(advertised, format!("127.0.0.1:{}", listener.local_addr().unwrap().port()));
        let config = Config::from_args([
            "--peer-listen",
            "127.0.0.1:0",
            "--peer-advertised",
            "kelp-0.pods:9093",
        ])
        .unwrap();
        assert_eq!(bind(&config).await.unwrap().unwrap().1, "kelp-0.pods:9093");
        let config =
            Config::from_args(["--peer-listen", "127.0.0.1:0", "--peer-advertised", "no-port"])
                .unwrap();
        assert!(bind(&config).await.unwrap_err().to_string().contains(config::ENV_PEER_ADVERTISED));
        assert!(bind(&Config::from_args(Vec::<String>::new()).unwrap()).await.unwrap().is_none());
    }
}
