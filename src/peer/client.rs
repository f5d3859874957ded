//! Pooled TCP connections to other kelps' peer listeners, one request at a time per
//! connection; the caller (`Peers::call`) bounds each exchange in time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{CONNECT_TIMEOUT, POOL_IDLE_PER_PEER, POOL_IDLE_TIMEOUT};
use crate::protocol::frame::{self, FrameError, FrameReader};

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
    max_frame: u32,
    correlation: AtomicI32,
}

impl Pool {
    pub(super) fn new(max_frame: u32) -> Pool {
        Pool { idle: Mutex::new(HashMap::new()), max_frame, correlation: AtomicI32::new(0) }
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
        body: &RequestKind,
    ) -> Result<ResponseKind, PeerError> {
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame = encode(header, key, version, body, correlation_id)?;
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
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => return Err(PeerError::ConnectTimeout(addr.to_string())),
            Ok(c) => c?,
        };
        let _ = conn.set_nodelay(true);
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
    ) -> Result<(Link, ResponseKind), PeerError> {
        conn.stream.write_all(frame).await?;
        let resp = conn
            .frames
            .read(&mut conn.stream)
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        Ok((conn, decode(resp, key, version, correlation_id)?))
    }

    fn take_idle(&self, addr: &str) -> Option<Link> {
        let mut idle = self.idle.lock().expect("pool lock");
        let conns = idle.get_mut(addr)?;
        while let Some((conn, since)) = conns.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, addr: &str, conn: Link) {
        let mut idle = self.idle.lock().expect("pool lock");
        let conns = idle.entry(addr.to_string()).or_default();
        conns.retain(|(_, since)| since.elapsed() < POOL_IDLE_TIMEOUT);
        if conns.len() < POOL_IDLE_PER_PEER {
            conns.push((conn, Instant::now()));
        }
    }
}

/// The request frame (length prefix, header, body) as the client sent it, renumbered.
fn encode(
    header: &RequestHeader,
    key: ApiKey,
    version: i16,
    body: &RequestKind,
    correlation_id: i32,
) -> Result<BytesMut, PeerError> {
    let bad = |e: anyhow::Error| PeerError::Protocol(format!("encoding {key:?} v{version}: {e}"));
    let header = header
        .clone()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id);
    let mut buf = frame::start(256);
    header.encode(&mut buf, key.request_header_version(version)).map_err(bad)?;
    body.encode(&mut buf, version).map_err(bad)?;
    frame::finish(&mut buf)?;
    Ok(buf)
}

/// The response in `frame` (without its length prefix) to request `correlation_id`.
pub(crate) fn decode(
    mut frame: bytes::Bytes,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<ResponseKind, PeerError> {
    let bad = |e: anyhow::Error| PeerError::Protocol(format!("{key:?} v{version} response: {e}"));
    let h =
        ResponseHeader::decode(&mut frame, key.response_header_version(version)).map_err(bad)?;
    if h.correlation_id != correlation_id {
        return Err(PeerError::Protocol(format!(
            "correlation id {} for request {correlation_id}",
            h.correlation_id
        )));
    }
    let body = ResponseKind::decode(key, &mut frame, version).map_err(bad)?;
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
            let frame =
                encode(&header, ApiKey::Heartbeat, version, &RequestKind::Heartbeat(hb.clone()), 9)
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
            for version in range.min..=range.max {
                let request = default_request(key);
                let frame = encode(&header, key, version, &request, 5)
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                let r = decode_request(frame.freeze().slice(4..))
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                let Body::Kind(got) = r.body else { panic!("{key:?} v{version}") };
                assert_eq!(got, request, "{key:?} v{version} request");

                let response = default_response(key);
                let out = encode_response(key, version, 5, &Reply::Kind(response.clone()))
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                let back = decode(out.freeze().slice(4..), key, version, 5)
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
                assert_eq!(back, response, "{key:?} v{version} response");
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
