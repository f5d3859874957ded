//! Request frames: whole frames into `protocol::decode_request`, frames built from a valid
//! header for every advertised (API key, version) and a fuzzed body, and byte streams through
//! `protocol::frame::FrameReader` (split at random points, reads dropped midway) whose frames
//! go where the connection and the peer link send them.

use arbitrary::Unstructured;
use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::{Gen, Target};
use crate::protocol::frame::{self, FrameReader};
use crate::protocol::versions::SUPPORTED;
use crate::protocol::{self, Body, legacy_produce};

pub const REQUEST: Target = Target {
    name: "request",
    about: "whole frames (without the length prefix) into protocol::decode_request",
    run: request,
    seeds: frames,
    max_len: 16 * 1024,
    weight: 20,
    memory_base: 256 * 1024,
    memory_per_byte: 192,
};

pub const REQUEST_BODY: Target = Target {
    name: "request-body",
    about: "a valid header for every advertised (api key, version), then a fuzzed body",
    run: request_body,
    seeds: body_seeds,
    max_len: 16 * 1024,
    weight: 20,
    memory_base: 256 * 1024,
    memory_per_byte: 192,
};

pub const FRAMES: Target = Target {
    name: "frames",
    about: "byte streams through FrameReader in random pieces; frames decoded as requests and as peer responses",
    run: frames_target,
    seeds: stream_seeds,
    max_len: 4096,
    weight: 10,
    memory_base: 1 << 20,
    memory_per_byte: 192,
};

// === request ===

fn request(data: &[u8]) {
    check_decoded(Bytes::copy_from_slice(data));
}

/// Decode a frame as the connection does; a decoded body must survive a round trip.
pub(super) fn check_decoded(frame: Bytes) {
    let Ok(req) = protocol::decode_request(frame.clone()) else { return };
    assert_eq!(protocol::peek_correlation_id(&frame), Some(req.header.correlation_id));
    match &req.body {
        // An old version is checked where the library reads it (`protocol::legacy`).
        Body::Kind(kind) => round_trip(
            kind,
            req.api_key,
            protocol::legacy::library_version(req.api_key, req.version),
        ),
        Body::LegacyProduce(p) => {
            let mut buf = BytesMut::new();
            p.encode(&mut buf);
            let again = legacy_produce::ProduceRequest::decode(&mut buf.freeze(), req.version)
                .expect("a re-encoded legacy produce request decodes");
            assert_eq!(&again, p);
        }
        Body::ApiVersionsTooNew => assert_eq!(req.api_key, ApiKey::ApiVersions),
    }
}

/// What the wire library decoded, it encodes, and that encoding is stable (bytes are compared,
/// not values: quota values are floats, and NaN is not equal to itself).
fn round_trip(kind: &RequestKind, key: ApiKey, version: i16) {
    let mut first = BytesMut::new();
    kind.encode(&mut first, version).expect("a decoded request encodes");
    let mut bytes = first.clone().freeze();
    let again =
        RequestKind::decode(key, &mut bytes, version).expect("a re-encoded request decodes");
    assert!(bytes.is_empty(), "{key:?} v{version}: re-decoding left bytes");
    let mut second = BytesMut::new();
    again.encode(&mut second, version).expect("encodes twice");
    assert_eq!(first, second, "{key:?} v{version}: encoding is not stable");
}

/// Header version kelp decodes a request's header with.
fn header_version(key: ApiKey, version: i16) -> i16 {
    if protocol::legacy::is_legacy(key, version) { 1 } else { key.request_header_version(version) }
}

/// A frame: a header for `key`/`version` (client id "fuzz") and `body`.
fn frame_of(key: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, header_version(key, version)).ok()?;
    buf.put_slice(body);
    Some(buf.to_vec())
}

/// Every advertised (key, version) with a default body and, where one is built, a fuller one.
fn bodies() -> Vec<(usize, ApiKey, i16, Vec<u8>)> {
    let mut out = Vec::new();
    for (row, s) in SUPPORTED.iter().enumerate() {
        for version in s.min..=s.max {
            if s.key == ApiKey::Produce && version < 3 {
                out.push((row, s.key, version, legacy_produce_body()));
                continue;
            }
            if protocol::legacy::is_legacy(s.key, version) {
                out.push((row, s.key, version, super::legacy::legacy_body(s.key, version)));
                continue;
            }
            for kind in [default_body(s.key), full_body(s.key)].into_iter().flatten() {
                let mut buf = BytesMut::new();
                if kind.encode(&mut buf, version).is_ok() {
                    out.push((row, s.key, version, buf.to_vec()));
                }
            }
        }
    }
    out
}

fn frames() -> Vec<Vec<u8>> {
    bodies()
        .into_iter()
        .filter_map(|(_, key, version, body)| frame_of(key, version, 7, &body))
        .collect()
}

/// The default (empty) body of each advertised API.
fn default_body(key: ApiKey) -> Option<RequestKind> {
    use RequestKind as K;
    Some(match key {
        ApiKey::Produce => K::Produce(Default::default()),
        ApiKey::Fetch => K::Fetch(Default::default()),
        ApiKey::ListOffsets => K::ListOffsets(Default::default()),
        ApiKey::Metadata => K::Metadata(Default::default()),
        ApiKey::ApiVersions => K::ApiVersions(Default::default()),
        ApiKey::CreateTopics => K::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => K::DeleteTopics(Default::default()),
        ApiKey::CreatePartitions => K::CreatePartitions(Default::default()),
        ApiKey::DescribeConfigs => K::DescribeConfigs(Default::default()),
        ApiKey::DescribeCluster => K::DescribeCluster(Default::default()),
        ApiKey::InitProducerId => K::InitProducerId(Default::default()),
        ApiKey::FindCoordinator => K::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => K::JoinGroup(Default::default()),
        ApiKey::SyncGroup => K::SyncGroup(Default::default()),
        ApiKey::Heartbeat => K::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => K::LeaveGroup(Default::default()),
        ApiKey::OffsetCommit => K::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => K::OffsetFetch(Default::default()),
        ApiKey::DescribeGroups => K::DescribeGroups(Default::default()),
        ApiKey::ListGroups => K::ListGroups(Default::default()),
        ApiKey::DeleteGroups => K::DeleteGroups(Default::default()),
        ApiKey::OffsetDelete => K::OffsetDelete(Default::default()),
        ApiKey::SaslHandshake => K::SaslHandshake(Default::default()),
        ApiKey::SaslAuthenticate => K::SaslAuthenticate(Default::default()),
        ApiKey::DescribeClientQuotas => K::DescribeClientQuotas(Default::default()),
        ApiKey::AlterClientQuotas => K::AlterClientQuotas(Default::default()),
        _ => return None,
    })
}

/// Bodies with elements in them, for the APIs whose elements kelp reads most.
fn full_body(key: ApiKey) -> Option<RequestKind> {
    let s = StrBytes::from_static_str;
    Some(match key {
        ApiKey::Produce => RequestKind::Produce(
            m::ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
                m::produce_request::TopicProduceData::default()
                    .with_name(m::TopicName(s("t")))
                    .with_partition_data(vec![
                        m::produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(super::records::sample_batch())),
                    ]),
            ]),
        ),
        ApiKey::Metadata => {
            RequestKind::Metadata(m::MetadataRequest::default().with_topics(Some(vec![
                m::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(m::TopicName(s("t")))),
            ])))
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            m::JoinGroupRequest::default()
                .with_group_id(m::GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    m::join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 1, b't'])),
                ]),
        ),
        ApiKey::AlterClientQuotas => RequestKind::AlterClientQuotas(
            m::AlterClientQuotasRequest::default().with_entries(vec![
                m::alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![
                        m::alter_client_quotas_request::EntityData::default()
                            .with_entity_type(s("client-id"))
                            .with_entity_name(Some(s("c"))),
                    ])
                    .with_ops(vec![
                        m::alter_client_quotas_request::OpData::default()
                            .with_key(s("producer_byte_rate"))
                            .with_value(1024.0),
                    ]),
            ]),
        ),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(
            m::SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(
            m::ApiVersionsRequest::default()
                .with_client_software_name(s("kelp-fuzz"))
                .with_client_software_version(s("1"))
                .with_unknown_tagged_fields(
                    [(9, Bytes::from_static(b"tag"))].into_iter().collect(),
                ),
        ),
        _ => return None,
    })
}

/// A Produce v0-v2 body: one topic, one partition holding one v1 message.
fn legacy_produce_body() -> Vec<u8> {
    let mut set = Vec::new();
    crate::records::legacy::encode_message(&mut set, 1, 5, Some(b"k"), Some(b"v"));
    let req = legacy_produce::ProduceRequest {
        acks: 1,
        timeout_ms: 1000,
        topics: vec![legacy_produce::TopicData {
            name: "t".into(),
            partitions: vec![(0, Some(set.into()))],
        }],
    };
    let mut buf = BytesMut::new();
    req.encode(&mut buf);
    buf.to_vec()
}

// === request-body ===

/// Input: byte 0 picks the row of `versions::SUPPORTED`, byte 1 the version within its range
/// (its top bit: one past either end instead), bytes 2..6 the correlation id; byte 6 the
/// client id's length (0xff: null); then the client id, then the body.
fn request_body(data: &[u8]) {
    let [row, v, c0, c1, c2, c3, id_len, rest @ ..] = data else { return };
    let s = &SUPPORTED[*row as usize % SUPPORTED.len()];
    let span = (s.max - s.min + 1) as u8;
    let version = if v & 0x80 == 0 {
        s.min + i16::from(v % span)
    } else if v & 1 == 0 {
        s.min - 1
    } else {
        s.max + 1
    };
    let correlation_id = i32::from_be_bytes([*c0, *c1, *c2, *c3]);
    let (client_id, body) = match *id_len {
        0xff => (None, rest),
        n => {
            let n = (n as usize).min(rest.len());
            let id = String::from_utf8_lossy(&rest[..n]).into_owned();
            (Some(StrBytes::from_string(id)), &rest[n..])
        }
    };
    let header = RequestHeader::default()
        .with_request_api_key(s.key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id);
    let mut buf = BytesMut::new();
    if header.encode(&mut buf, header_version(s.key, version)).is_err() {
        return;
    }
    buf.put_slice(body);
    check_decoded(buf.freeze());
}

fn body_seeds() -> Vec<Vec<u8>> {
    bodies()
        .into_iter()
        .map(|(row, _, version, body)| {
            let s = &SUPPORTED[row];
            let mut input = vec![row as u8, (version - s.min) as u8, 0, 0, 0, 7, 4];
            input.extend_from_slice(b"fuzz");
            input.extend_from_slice(&body);
            input
        })
        .collect()
}

// === frames ===

/// A stream that hands out its bytes in the given pieces, answering `Pending` (and waking
/// itself) before every other piece, as a socket does when data trickles in.
struct Pieces {
    data: Bytes,
    cuts: Vec<usize>,
    next: usize,
    pending: bool,
}

impl tokio::io::AsyncRead for Pieces {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let piece = self.cuts.get(self.next).copied().unwrap_or(usize::MAX).max(1);
        self.next += 1;
        self.pending = self.next.is_multiple_of(2);
        let n = piece.min(buf.remaining()).min(self.data.len());
        let chunk = self.data.split_to(n);
        buf.put_slice(&chunk);
        std::task::Poll::Ready(Ok(()))
    }
}

/// Input (through `Unstructured`): the reader's maximum frame length, whether to wrap the
/// payload in well-formed frames, the piece sizes, which peer response each frame is also
/// decoded as, then the payload.
fn frames_target(data: &[u8]) {
    let _ = frames_gen(&mut Unstructured::new(data));
}

fn frames_gen(u: &mut Unstructured) -> Gen<()> {
    let max = match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=64u32)?,
        1 => u.int_in_range(0..=4096u32)?,
        2 => u32::MAX,
        _ => 1 << 20,
    };
    let framed = u.arbitrary::<bool>()?;
    let n_cuts = u.int_in_range(0..=16usize)?;
    let mut cuts = Vec::with_capacity(n_cuts);
    for _ in 0..n_cuts {
        cuts.push(u.int_in_range(1..=64usize)?);
    }
    let drop_reads = u.arbitrary::<bool>()?;
    let peer_row = u.arbitrary::<u8>()?;
    let peer_version = u.arbitrary::<u8>()?;
    let payload = u.bytes(u.len())?;
    // Well-formed: the payload cut into frames of the sizes its own bytes name.
    let (stream, expected) = if framed {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut rest = payload;
        while let Some((&n, tail)) = rest.split_first() {
            let n = (n as usize).min(tail.len());
            stream.extend_from_slice(&(n as i32).to_be_bytes());
            stream.extend_from_slice(&tail[..n]);
            expected.push(Bytes::copy_from_slice(&tail[..n]));
            rest = &tail[n..];
        }
        (stream, Some(expected))
    } else {
        (payload.to_vec(), None)
    };
    let stream_len = stream.len();
    let mut pieces = Pieces { data: stream.into(), cuts, next: 0, pending: false };
    let mut reader = FrameReader::new(max);
    let mut got = Vec::new();
    let end = loop {
        // Dropping a read that is waiting for bytes must lose nothing (the connection's
        // `select!` does that on shutdown and idle timeouts).
        let r = if drop_reads {
            match reader.read(&mut pieces).now_or_never() {
                Some(r) => r,
                None => continue,
            }
        } else {
            futures::executor::block_on(reader.read(&mut pieces))
        };
        match r {
            Ok(Some(frame)) => {
                assert!(frame.len() <= max as usize);
                decode_as_peer_response(frame.clone(), peer_row, peer_version);
                check_decoded(frame.clone());
                got.push(frame);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let consumed: usize = got.iter().map(|f| f.len() + frame::PREFIX).sum();
    assert!(consumed <= stream_len);
    if end.is_ok() {
        assert_eq!(consumed, stream_len, "a clean end leaves nothing unread");
    }
    if let Some(expected) = expected
        && expected.iter().all(|f| f.len() <= max as usize)
    {
        assert!(end.is_ok(), "well-formed frames within the limit: {end:?}");
        assert_eq!(got, expected);
    }
    Ok(())
}

/// A frame as the answer of a peer kelp to a forwarded request (the peer link decodes those).
fn decode_as_peer_response(frame: Bytes, row: u8, version: u8) {
    let forwarded = crate::routing::FORWARDED;
    let key = forwarded[row as usize % forwarded.len()];
    let Some(s) = crate::protocol::versions::supported(key) else { return };
    let version = s.min + (i16::from(version) % (s.max - s.min + 1));
    let correlation_id = protocol::peek_correlation_id(&frame).unwrap_or(0);
    let _ = crate::peer::client::decode(frame, key, version, correlation_id);
}

fn stream_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in frames().into_iter().step_by(7) {
        // max 1 MiB, raw stream, one cut, no dropped reads, first forwarded API.
        let mut input = vec![3, 0, 1, 7, 0, 0, 0];
        input.extend_from_slice(&(f.len() as u32).to_be_bytes());
        input.extend_from_slice(&f);
        out.push(input);
    }
    out.push(vec![2, 1, 3, 1, 2, 3, 1, 0, 0, 3, b'a', b'b', b'c', 0, 5, 1, 2, 3, 4, 5]);
    out
}
