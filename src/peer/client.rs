//! Pooled TCP connections to other kelps' peer listeners, one request at a time per
//! connection; the caller (`Peers::call`) bounds each exchange in time. A new connection is
//! used only once the handshake (`handshake::connect`) has proved the listener knows the peer
//! secret; pooled connections have done so already.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::net::TcpStream;
use tracing::warn;

use super::handshake::{self, HandshakeError, Secret};
use super::{CONNECT_TIMEOUT, POOL_IDLE_PER_PEER, POOL_IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::protocol::frame::{self, FrameError, FrameReader};
use crate::protocol::{Reply, legacy_produce};

/// Why a forward (or a peer connection) failed. Every variant means "the owner did not
/// answer": the forwarder answers its client COORDINATOR_NOT_AVAILABLE and looks the owner
/// up again.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("kelp is shutting down")]
    ShuttingDown,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("a {0}-byte request is over the peer frame limit ({1} bytes)")]
    TooLarge(usize, u32),
}

impl From<FrameError> for PeerError {
    fn from(e: FrameError) -> PeerError {
        match e {
            FrameError::Io(e) => PeerError::Io(e),
            other => PeerError::Protocol(other.to_string()),
        }
    }
}

/// One connection to a peer listener, with what was read of its next frame.
struct Link {
    stream: TcpStream,
    frames: FrameReader,
}

/// Idle connections per owner address, and the numbering of forwarded requests.
pub(super) struct Pool {
    idle: Mutex<HashMap<String, Vec<(Link, Instant)>>>,
    /// Largest frame sent or read (`KELP_PEER_MAX_FRAME_BYTES`).
    max_frame: u32,
    /// What a new connection proves, and has proved to it, before it is used.
    secret: Option<Secret>,
    correlation: AtomicI32,
}

impl Pool {
    pub(super) fn new(max_frame: u32, secret: Option<Secret>) -> Pool {
        Pool { idle: Mutex::new(HashMap::new()), max_frame, secret, correlation: AtomicI32::new(0) }
    }

    /// Send `body` (a request of `key` at `version`, with the client's `header` fields) to
    /// `addr` and return the decoded response. A pooled connection the owner closed meanwhile
    /// is noticed before any answer and replaced by a fresh one once.
    pub(super) async fn call(
        &self,
        addr: &str,
        header: &RequestHeader,
        key: ApiKey,
        version: i16,
        body: Outgoing<'_>,
    ) -> Result<Reply, PeerError> {
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame = encode(header, key, version, body, correlation_id)?;
        // The owner would close the connection on it; say why here instead.
        if frame.len() - frame::PREFIX > self.max_frame as usize {
            return Err(PeerError::TooLarge(frame.len() - frame::PREFIX, self.max_frame));
        }
        if let Some(conn) = self.take_idle(addr) {
            match self.exchange(conn, &frame, key, version, correlation_id).await {
                Ok((conn, resp)) => {
                    self.put_idle(addr, conn);
                    return Ok(resp);
                }
                // Closed or reset before answering: the owner had closed an idle connection.
                Err(PeerError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => return Err(PeerError::ConnectTimeout(addr.to_string())),
            Ok(c) => c?,
        };
        let _ = conn.set_nodelay(true);
        if let Some(secret) = &self.secret {
            handshake::connect(&mut conn, secret).await.inspect_err(|e| {
                // Not this kelp's doing and not retried away: a listener with another secret
                // (or none) fails every forward to it until someone fixes the configuration.
                if matches!(e, HandshakeError::Rejected | HandshakeError::Refused) {
                    warn!(owner = addr, error = %e, "peer handshake failed");
                }
            })?;
        }
        let conn = Link { stream: conn, frames: FrameReader::new(self.max_frame) };
        let (conn, resp) = self.exchange(conn, &frame, key, version, correlation_id).await?;
        self.put_idle(addr, conn);
        Ok(resp)
    }

    async fn exchange(
        &self,
        mut conn: Link,
        frame: &[u8],
        key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<(Link, Reply), PeerError> {
        frame::write(&mut conn.stream, frame, WRITE_TIMEOUT).await?;
        let resp = conn
            .frames
            .read(&mut conn.stream)
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        Ok((conn, decode(resp, key, version, correlation_id)?))
    }

    fn take_idle(&self, addr: &str) -> Option<Link> {
        let mut idle = self.idle.lock();
        let conns = idle.get_mut(addr)?;
        while let Some((conn, since)) = conns.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, addr: &str, conn: Link) {
        let mut idle = self.idle.lock();
        let conns = idle.entry(addr.to_string()).or_default();
        conns.retain(|(_, since)| since.elapsed() < POOL_IDLE_TIMEOUT);
        if conns.len() < POOL_IDLE_PER_PEER {
            conns.push((conn, Instant::now()));
        }
    }
}

/// What is sent to a peer: a request the wire library encodes, or Produce v0-v2.
#[derive(Clone, Copy)]
pub enum Outgoing<'a> {
    Kind(&'a RequestKind),
    LegacyProduce(&'a legacy_produce::ProduceRequest),
}

/// The request frame (length prefix, header, body) as the client sent it, renumbered.
fn encode(
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    body: Outgoing<'_>,
    correlation_id: i32,
) -> Result<BytesMut, PeerError> {
    let bad = |e: anyhow::Error| PeerError::Protocol(format!("encoding {key:?} v{version}: {e}"));
    let header = header
        .clone()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id);
    let mut buf = frame::start(256);
    match body {
        Outgoing::Kind(body) => {
            header.encode(&mut buf, key.request_header_version(version)).map_err(bad)?;
            body.encode(&mut buf, version).map_err(bad)?;
        }
        Outgoing::LegacyProduce(body) => {
            // Produce v0-v2 use request header v1 (`protocol::decode_request`).
            header.encode(&mut buf, 1).map_err(bad)?;
            body.encode(&mut buf);
        }
    }
    frame::finish(&mut buf)?;
    Ok(buf)
}

/// The response in `frame` (without its length prefix) to request `correlation_id`.
pub(crate) fn decode(
    mut frame: bytes::Bytes,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<Reply, PeerError> {
    let bad = |e: anyhow::Error| PeerError::Protocol(format!("{key:?} v{version} response: {e}"));
    let legacy = key == ApiKey::Produce && version < 3;
    let header_version = if legacy { 0 } else { key.response_header_version(version) };
    let h = ResponseHeader::decode(&mut frame, header_version).map_err(bad)?;
    if h.correlation_id != correlation_id {
        return Err(PeerError::Protocol(format!(
            "correlation id {} for request {correlation_id}",
            h.correlation_id
        )));
    }
    let body = if legacy {
        Reply::LegacyProduce(
            legacy_produce::ProduceResponse::decode(&mut frame, version).map_err(bad)?,
        )
    } else {
        Reply::Kind(ResponseKind::decode(key, &mut frame, version).map_err(bad)?)
    };
    if frame.has_remaining() {
        return Err(PeerError::Protocol(format!(
            "{key:?} v{version} response: {} trailing bytes",
            frame.remaining()
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions::supported;
    use crate::protocol::{Body, Reply, decode_request, encode_response};
    use crate::routing::FORWARDED;
    use kafka_protocol::messages::{GroupId, HeartbeatRequest};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn a_forwarded_request_is_the_clients_request_renumbered() {
        let header = RequestHeader::default()
            .with_client_id(Some(StrBytes::from_static_str("app")))
            .with_correlation_id(77);
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id(4)
            .with_member_id(StrBytes::from_static_str("m"));
        for version in [0, 4] {
            let frame = encode(
                &header,
                ApiKey::Heartbeat,
                version,
                Outgoing::Kind(&RequestKind::Heartbeat(hb.clone())),
                9,
            )
            .unwrap();
            let r = decode_request(frame.freeze().slice(4..)).unwrap();
            assert_eq!(
                (r.api_key, r.version, r.header.correlation_id),
                (ApiKey::Heartbeat, version, 9)
            );
            assert_eq!(r.header.client_id.as_deref(), Some("app"));
            let Body::Kind(RequestKind::Heartbeat(got)) = r.body else { panic!("{:?}", r.body) };
            assert_eq!(got, hb);
        }
    }

    /// Every forwarded API at every advertised version survives the trip: the request as
    /// the forwarder encodes it is what the owner decodes, and the owner's response is what
    /// the forwarder decodes.
    #[test]
    fn every_peer_api_round_trips_at_every_advertised_version() {
        let header =
            RequestHeader::default().with_client_id(Some(StrBytes::from_static_str("app")));
        for &key in FORWARDED {
            let range = supported(key).expect("advertised");
            for client_version in range.min..=range.max {
                // An old version travels as the library's oldest (`routing::call`).
                let version = crate::protocol::legacy::library_version(key, client_version);
                let request = default_request(key);
                let frame = encode(&header, key, version, Outgoing::Kind(&request), 5)
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                let r = decode_request(frame.freeze().slice(4..))
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                let Body::Kind(got) = r.body else { panic!("{key:?} v{version}") };
                assert_eq!(got, request, "{key:?} v{version} request");

                let response = default_response(key);
                let out = encode_response(key, version, 5, &Reply::Kind(response.clone()))
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                let Reply::Kind(back) = decode(out.freeze().slice(4..), key, version, 5)
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
                else {
                    panic!("{key:?} v{version}: not a library response")
                };
                assert_eq!(back, response, "{key:?} v{version} response");
            }
        }
    }

    /// Produce crosses the peer link at every advertised version: v0-v2 in kelp's own
    /// encoding, v3+ with the wire library.
    #[test]
    fn produce_round_trips_at_every_advertised_version() {
        use crate::protocol::legacy_produce as legacy;
        let header =
            RequestHeader::default().with_client_id(Some(StrBytes::from_static_str("app")));
        let range = supported(ApiKey::Produce).expect("advertised");
        for version in range.min..=range.max {
            let (frame, reply) = if version < 3 {
                let req = legacy::ProduceRequest {
                    acks: -1,
                    timeout_ms: 100,
                    topics: vec![legacy::TopicData {
                        name: "t".into(),
                        partitions: vec![(1, Some(bytes::Bytes::from_static(b"set")))],
                    }],
                };
                let frame =
                    encode(&header, ApiKey::Produce, version, Outgoing::LegacyProduce(&req), 3)
                        .unwrap();
                let r = decode_request(frame.clone().freeze().slice(4..)).unwrap();
                let Body::LegacyProduce(got) = r.body else { panic!("v{version}") };
                assert_eq!(got, req, "v{version} request");
                let resp = legacy::ProduceResponse {
                    topics: vec![legacy::TopicResponse {
                        name: "t".into(),
                        partitions: vec![legacy::PartitionResponse {
                            index: 1,
                            error_code: 0,
                            base_offset: 42,
                        }],
                    }],
                    throttle_time_ms: 0,
                };
                (frame, Reply::LegacyProduce(resp))
            } else {
                let req = RequestKind::Produce(Default::default());
                let frame =
                    encode(&header, ApiKey::Produce, version, Outgoing::Kind(&req), 3).unwrap();
                let r = decode_request(frame.clone().freeze().slice(4..)).unwrap();
                let Body::Kind(got) = r.body else { panic!("v{version}") };
                assert_eq!(got, req, "v{version} request");
                (frame, Reply::Kind(ResponseKind::Produce(Default::default())))
            };
            assert!(!frame.is_empty());
            let out = encode_response(ApiKey::Produce, version, 3, &reply).unwrap();
            let back = decode(out.freeze().slice(4..), ApiKey::Produce, version, 3)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
            match (back, reply) {
                (Reply::Kind(a), Reply::Kind(b)) => assert_eq!(a, b, "v{version}"),
                (Reply::LegacyProduce(a), Reply::LegacyProduce(b)) => {
                    assert_eq!(a, b, "v{version}")
                }
                _ => panic!("v{version}: answer of the wrong kind"),
            }
        }
    }

    fn default_request(key: ApiKey) -> RequestKind {
        match key {
            ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
            ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
            ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
            other => panic!("{other:?} is not a peer api"),
        }
    }

    fn default_response(key: ApiKey) -> ResponseKind {
        match key {
            ApiKey::JoinGroup => ResponseKind::JoinGroup(Default::default()),
            ApiKey::SyncGroup => ResponseKind::SyncGroup(Default::default()),
            ApiKey::Heartbeat => ResponseKind::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => ResponseKind::LeaveGroup(Default::default()),
            ApiKey::OffsetCommit => ResponseKind::OffsetCommit(Default::default()),
            ApiKey::DescribeGroups => ResponseKind::DescribeGroups(Default::default()),
            ApiKey::DeleteGroups => ResponseKind::DeleteGroups(Default::default()),
            ApiKey::OffsetDelete => ResponseKind::OffsetDelete(Default::default()),
            other => panic!("{other:?} is not a peer api"),
        }
    }
}
