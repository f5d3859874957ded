//! Consumer groups whose members talk to different kelps: the peer listener, where this kelp
//! answers group requests forwarded by other kelps, and the forwarding of this kelp's own
//! clients' requests to the kelp that owns their group (DESIGN.md, "Consumer groups across
//! sidecars"; docs/consumer-groups.md).
//!
//! The peer protocol is the Kafka protocol itself: a forwarding kelp re-encodes the client's
//! group request at the client's version (same client id, its own correlation id), sends it
//! over a pooled connection to the owner's peer address and relays the response unchanged.
//! The owner answers it with the same handlers as a client's request (`api::dispatch_forwarded`),
//! except that it never forwards it again: a request travels at most one hop, and a kelp
//! that does not own the group answers NOT_COORDINATOR, upon which the forwarder looks up the
//! owner again.
//!
//! Why the peer listener has its own connection loop instead of `connection::serve`: it is a
//! different door. It accepts only group APIs (anything else closes the connection, so the
//! data path is not exposed on the pod network where the Kafka listener stays on loopback),
//! and what applies to application connections (client quotas, authentication) was already
//! applied by the kelp the application talks to.
//!
//! Owns: binding the peer listener and choosing its advertised address, the peer connection
//! loop, and (in `client`, `forward`) the connection pool and the routing of group requests.
//! Does not own: who owns a group (`group::Coordinator::route`) or what a group request does.

mod client;
pub mod forward;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, debug_span, info_span, warn};

use crate::api;
use crate::config::{self, Config};
use crate::ctx::Ctx;
use crate::protocol;
use crate::shutdown::{CancellationToken, TaskTracker};
pub use client::PeerError;

/// The group APIs a peer may send; they are also the ones `forward` forwards.
pub const PEER_APIS: &[ApiKey] = &[
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
];

/// Longest a forwarding kelp waits to connect to an owner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept per owner. Connections in use are not limited here: each client
/// connection has at most one request in flight, so forwards never outnumber client
/// connections (`KELP_MAX_CONNECTIONS`).
pub const POOL_IDLE_PER_PEER: usize = 8;

/// A pooled connection idle longer than this is closed rather than reused (well below the
/// owner's idle timeout, so a reused connection is rarely one the owner already closed).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
            request_timeout: config.upstream_timeout() * 2 + Duration::from_secs(1),
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

/// Accept peer connections until `cancel` fires, at most `max_connections` at once.
pub async fn serve(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections as usize));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => p.expect("the peer connection semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        tracker.spawn(
            async move {
                if let Err(e) = serve_peer(&ctx, stream, &cancel).await {
                    debug!(error = %e, "peer connection closed");
                }
                drop(permit);
            }
            .instrument(info_span!("peer_conn", %peer)),
        );
    }
}

/// One peer connection: group requests answered in order, anything else closes it.
async fn serve_peer(
    ctx: &Ctx,
    mut stream: TcpStream,
    cancel: &CancellationToken,
) -> Result<(), PeerError> {
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(ctx.config.idle_timeout(), read_frame(&mut stream, ctx.config.max_frame_bytes)) => match r {
                Err(_) => return Ok(()),
                Ok(frame) => frame?,
            },
        };
        let Some(frame) = frame else { return Ok(()) };
        let request =
            protocol::decode_request(frame).map_err(|e| PeerError::Protocol(e.to_string()))?;
        if !PEER_APIS.contains(&request.api_key) {
            return Err(PeerError::Protocol(format!("{:?} is not a group API", request.api_key)));
        }
        let (key, version, correlation_id) =
            (request.api_key, request.version, request.header.correlation_id);
        let span = debug_span!("forwarded", api = ?key, version, correlation_id);
        if let Some(reply) = api::dispatch_forwarded(ctx, request).instrument(span).await {
            let out = protocol::encode_response(key, version, correlation_id, &reply)
                .map_err(|e| PeerError::Protocol(e.to_string()))?;
            stream.write_all(&out).await?;
        }
    }
}

/// Read one length-prefixed frame; `None` when the connection closed cleanly before it.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    max: u32,
) -> Result<Option<Bytes>, PeerError> {
    let mut len = [0u8; 4];
    if stream.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut len[1..]).await?;
    let n = i32::from_be_bytes(len);
    if n < 0 || n as u32 > max {
        return Err(PeerError::Protocol(format!("frame length {n} outside 0..={max}")));
    }
    // Grown as bytes arrive (as `connection` does): a huge length prefix alone costs nothing.
    let n = n as usize;
    let mut buf = BytesMut::with_capacity(n.min(READ_CHUNK));
    while buf.len() < n {
        buf.reserve((n - buf.len()).min(READ_CHUNK));
        let want = (n - buf.len()).min(buf.capacity() - buf.len());
        if (&mut *stream).take(want as u64).read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(buf.freeze()))
}

/// Read growth step of [`read_frame`].
const READ_CHUNK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions::SUPPORTED;

    #[test]
    fn every_peer_api_is_advertised() {
        for k in PEER_APIS {
            assert!(SUPPORTED.iter().any(|s| s.key == *k), "{k:?}");
        }
    }

    #[tokio::test]
    async fn frames_are_bounded() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 1, 2, 3, 0, 0, 1, 0]).await.unwrap();
        assert_eq!(read_frame(&mut b, 100).await.unwrap().unwrap(), Bytes::from_static(&[1, 2, 3]));
        assert!(
            matches!(read_frame(&mut b, 100).await, Err(PeerError::Protocol(_))),
            "256 bytes > 100"
        );
        drop(a);
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_frame(&mut b, 100).await.unwrap().is_none());
    }

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
