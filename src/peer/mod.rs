//! The peer link, forwarding side: this kelp's connections to other kelps' peer listeners,
//! and the peer listener's address and secret (DESIGN.md, "Consumer groups across sidecars";
//! docs/consumer-groups.md, "Peer link security").
//!
//! Owns: binding the peer listener and choosing the address other kelps are told, loading the
//! peer secret, the pool of connections to other kelps, the deadline of one forward and the
//! limits of the link in both directions (frame size: `KELP_PEER_MAX_FRAME_BYTES`; write
//! time: [`WRITE_TIMEOUT`]). Does not own which requests are forwarded or to whom
//! (`routing`), serving what peers send (`connection::peer`), or the handshake's protocol
//! (`handshake`).

pub(crate) mod client;
pub mod handshake;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use tokio::net::TcpListener;

use crate::config::{self, Config};
use crate::protocol::{Reply, legacy_produce};
use crate::shutdown::CancellationToken;
use client::Outgoing;
pub use client::PeerError;
use handshake::Secret;

/// Longest a forwarding kelp waits to connect to an owner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept per owner. Connections in use are not limited here: each client
/// connection has at most one request in flight, so forwards never outnumber client
/// connections (`KELP_MAX_CONNECTIONS`).
const POOL_IDLE_PER_PEER: usize = 8;

/// A pooled connection idle longer than this is closed rather than reused (well below the
/// owner's idle timeout, so a reused connection is rarely one the owner already closed).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest the write of one frame on the peer link may take, in either direction (a forwarded
/// request, an owner's answer). The other end is a kelp that reads at once; one that has not
/// taken a group-sized frame in this long is stuck, and the connection is given up rather
/// than holding its task and buffers for the connection's idle timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Added to two upstream timeouts for an owner's answer: the forward's own network time.
const REQUEST_SLACK: Duration = Duration::from_secs(1);

/// Forwarding to other kelps; one per process, shared by every client connection.
pub struct Peers {
    pool: client::Pool,
    /// The shared secret both sides of every peer connection prove they know; `None` only
    /// when `KELP_PEER_ALLOW_UNAUTHENTICATED` said the network is trusted (or there is no
    /// peer listener, and so nothing is forwarded).
    secret: Option<Secret>,
    /// Cancelled on shutdown: forwards in flight answer COORDINATOR_NOT_AVAILABLE at once.
    cancel: CancellationToken,
    /// Deadline of a forwarded request that does not wait for a rebalance: the owner may read
    /// the group and write offsets, each filer call bounded by the upstream timeout.
    request_timeout: Duration,
}

impl Peers {
    pub fn new(config: &Config, secret: Option<Secret>, cancel: CancellationToken) -> Peers {
        Peers {
            pool: client::Pool::new(config.peer_frame_limit(), secret.clone()),
            secret,
            cancel,
            request_timeout: config.upstream_timeout() * 2 + REQUEST_SLACK,
        }
    }

    /// The peer secret, which the peer listener checks on every connection it accepts.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
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
        match self.send(owner, header, key, version, Outgoing::Kind(body), timeout).await? {
            Reply::Kind(r) => Ok(r),
            Reply::LegacyProduce(_) => Err(PeerError::Protocol("a Produce v0-v2 answer".into())),
        }
    }

    /// [`Peers::call`] for a Produce v0-v2 request (message sets v0/v1), which the wire
    /// library does not encode.
    pub async fn call_legacy_produce(
        &self,
        writer: &str,
        header: &RequestHeader,
        version: i16,
        body: &legacy_produce::ProduceRequest,
        timeout: Duration,
    ) -> Result<legacy_produce::ProduceResponse, PeerError> {
        let body = Outgoing::LegacyProduce(body);
        match self.send(writer, header, ApiKey::Produce, version, body, timeout).await? {
            Reply::LegacyProduce(r) => Ok(r),
            Reply::Kind(_) => Err(PeerError::Protocol("not a Produce v0-v2 answer".into())),
        }
    }

    async fn send(
        &self,
        owner: &str,
        header: &RequestHeader,
        key: ApiKey,
        version: i16,
        body: Outgoing<'_>,
        timeout: Duration,
    ) -> Result<Reply, PeerError> {
        let call = self.pool.call(owner, header, key, version, body);
        tokio::select! {
            _ = self.cancel.cancelled() => Err(PeerError::ShuttingDown),
            r = tokio::time::timeout(timeout, call) => r.unwrap_or(Err(PeerError::Timeout(timeout))),
        }
    }
}

/// The peer secret, read from `KELP_PEER_SECRET_FILE` when a peer listener is configured,
/// after `Config::validate` (which refuses a peer listener with neither the secret nor
/// `KELP_PEER_ALLOW_UNAUTHENTICATED`, or with both). `None` without a peer listener, or with
/// the opt-out. Errors are `ConfigError`s naming the variable.
pub fn load_secret(config: &Config) -> Result<Option<Secret>, config::ConfigError> {
    config.validate()?;
    match (&config.peer_listen, &config.peer_secret_file) {
        (Some(_), Some(path)) => Secret::from_file(path).map(Some),
        _ => Ok(None),
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
pub(crate) async fn local_ip_towards(server: &str) -> anyhow::Result<IpAddr> {
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
