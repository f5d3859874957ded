//! Kafka frames ⇄ typed requests and responses.
//!
//! Owns the header-version rules and the decision of what a frame is (a request kelp serves,
//! an ApiVersions request at a version kelp does not know, or something to close the
//! connection over). The 4-byte length prefix is `frame`'s.

pub mod frame;
pub mod legacy;
pub mod legacy_produce;
pub mod topic_name;
pub mod versions;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A request kelp will answer.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub body: Body,
}

/// The decoded body of a request.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the large variant is the common one; one value per request, moved, never stored"
)]
pub enum Body {
    /// A request the wire library decoded.
    Kind(RequestKind),
    /// Produce v0-v2 (message sets v0/v1), decoded by kelp.
    LegacyProduce(legacy_produce::ProduceRequest),
    /// ApiVersions at a version kelp does not serve: answered in v0 format with
    /// UNSUPPORTED_VERSION and the supported ranges, so the client can retry lower (KIP-511).
    ApiVersionsTooNew,
}

/// Why a frame could not be turned into a request. The connection closes on any of these:
/// Kafka has no generic error frame.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame shorter than a request header")]
    Short,
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of {key:?}")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("undecodable {key:?} v{version}: {why}")]
    Malformed { key: ApiKey, version: i16, why: String },
}

/// Decode one frame (without its length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Short);
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let Some(range) = versions::supported(api_key) else {
        return Err(DecodeError::UnknownApiKey(raw_key));
    };
    if api_key == ApiKey::ApiVersions && version > range.max {
        // The body's layout is unknown; only the correlation id (bytes 4..8) is needed.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let header = RequestHeader::default()
            .with_request_api_key(raw_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id);
        // Answered at v0, the version every client can read.
        return Ok(Request { header, api_key, version: 0, body: Body::ApiVersionsTooNew });
    }
    if !range.contains(version) {
        return Err(DecodeError::UnsupportedVersion { key: api_key, version });
    }
    let malformed =
        |why: anyhow::Error| DecodeError::Malformed { key: api_key, version, why: why.to_string() };
    let legacy = legacy::is_legacy(api_key, version);
    let header_version = if legacy {
        // Every legacy version is non-flexible.
        1
    } else {
        api_key.request_header_version(version)
    };
    let header = RequestHeader::decode(&mut frame, header_version).map_err(malformed)?;
    let body = if api_key == ApiKey::Produce && legacy {
        Body::LegacyProduce(
            legacy_produce::ProduceRequest::decode(&mut frame, version).map_err(malformed)?,
        )
    } else if legacy {
        Body::Kind(legacy::decode_request(api_key, version, &mut frame).map_err(malformed)?)
    } else {
        Body::Kind(RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?)
    };
    Ok(Request { header, api_key, version, body })
}

/// A response ready to be written: either the library's type or kelp's legacy Produce.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the large variant is the common one; one value per response, moved, never stored"
)]
pub enum Reply {
    Kind(ResponseKind),
    LegacyProduce(legacy_produce::ProduceResponse),
}

impl From<ResponseKind> for Reply {
    fn from(kind: ResponseKind) -> Self {
        Reply::Kind(kind)
    }
}

/// Encode a response with its length prefix and header.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    reply: &Reply,
) -> anyhow::Result<BytesMut> {
    let mut buf = frame::start(256);
    // ApiVersions responses always use header v0 so that a client can read them whatever
    // version it asked for (KIP-511).
    let header_version = match (api_key, reply) {
        (ApiKey::ApiVersions, _) => 0,
        (_, Reply::LegacyProduce(_)) => 0,
        _ if legacy::is_legacy(api_key, version) => 0,
        _ => api_key.response_header_version(version),
    };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)?;
    match reply {
        Reply::Kind(kind) if legacy::is_legacy(api_key, version) => {
            legacy::encode_response(kind, api_key, version, &mut buf)?
        }
        Reply::Kind(kind) => kind.encode(&mut buf, version)?,
        Reply::LegacyProduce(r) => r.encode(&mut buf, version),
    }
    frame::finish(&mut buf)?;
    Ok(buf)
}

/// The correlation id of a frame, when it has one (for logging a frame that failed to decode).
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    let mut b = frame.get(4..8)?;
    Some(b.get_i32())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(key: ApiKey, version: i16, body: &[u8]) -> Bytes {
        let mut f = BytesMut::new();
        f.put_i16(key as i16);
        f.put_i16(version);
        f.put_i32(7);
        f.put_i16(-1); // null client id (header v1)
        f.put_slice(body);
        f.freeze()
    }

    #[test]
    fn a_huge_claimed_array_is_an_error_not_an_abort() {
        // Metadata v1: topics array claiming i32::MAX elements, with nothing behind it.
        let r = decode_request(frame(ApiKey::Metadata, 1, &i32::MAX.to_be_bytes()));
        assert!(matches!(r, Err(DecodeError::Malformed { .. })), "{r:?}");
        // Produce v3: transactional id null, acks, timeout, topics claiming i32::MAX.
        let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88];
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        let r = decode_request(frame(ApiKey::Produce, 3, &body));
        assert!(matches!(r, Err(DecodeError::Malformed { .. })), "{r:?}");
    }

    /// An array claiming one element per byte left used to reserve `size_of` its element
    /// (88 bytes for a JoinGroup protocol) per byte of the frame before decoding any.
    #[test]
    fn a_claimed_array_count_reserves_no_more_than_the_bytes_behind_it() {
        crate::fuzzing::tests::run_alone("protocol::tests::claimed_count_within_the_frame");
    }

    #[test]
    #[ignore = "run alone (it caps memory) by a_claimed_array_count_reserves_no_more_than_the_bytes_behind_it"]
    fn claimed_count_within_the_frame() {
        const N: usize = 1 << 16;
        let mut f = BytesMut::new();
        f.put_i16(ApiKey::JoinGroup as i16);
        f.put_i16(6);
        f.put_i32(7);
        f.put_i16(-1); // null client id
        f.put_u8(0); // header tagged fields
        // group id, session and rebalance timeouts, member id, null instance id, protocol type
        f.put_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
        f.put_slice(&[0x81, 0x80, 0x04]); // protocols: N elements (N + 1 as a varint)
        f.put_slice(&[0xff; N]); // and no valid one
        let frame = f.freeze();
        let alloc = &crate::TEST_ALLOC;
        alloc.set_limit(alloc.allocated() + 4 * N).unwrap();
        let r = decode_request(frame);
        alloc.set_limit(usize::MAX).unwrap();
        assert!(matches!(r, Err(DecodeError::Malformed { .. })), "{r:?}");
    }

    /// Tags are unsigned varints: one of 2^31 or more used to be decoded but left out when
    /// the request was encoded again (as a forward to the group's owner does), while the
    /// field count still counted it, so the owner could not decode the forward.
    #[test]
    fn a_request_with_a_tag_above_i32_max_encodes_as_it_decoded() {
        use kafka_protocol::messages::JoinGroupRequest;
        let mut body = BytesMut::new();
        let join = JoinGroupRequest::default().with_protocol_type("consumer".into());
        join.encode(&mut body, 6).unwrap();
        body.truncate(body.len() - 1); // the tagged fields: one, tag 2^32 - 1, value "x"
        body.put_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, b'x']);
        let mut f = BytesMut::new();
        f.put_i16(ApiKey::JoinGroup as i16);
        f.put_i16(6);
        f.put_i32(7);
        f.put_i16(-1); // null client id
        f.put_u8(0); // header tagged fields (header v2)
        f.put_slice(&body);
        let r = decode_request(f.freeze()).unwrap();
        let Body::Kind(kind) = r.body else { panic!("{:?}", r.body) };
        let mut again = BytesMut::new();
        kind.encode(&mut again, 6).unwrap();
        assert_eq!(&again[..], &body[..]);
        let decoded = RequestKind::decode(ApiKey::JoinGroup, &mut again.freeze(), 6).unwrap();
        assert_eq!(decoded, kind);
    }

    #[test]
    fn unknown_keys_and_versions_are_refused_and_too_new_api_versions_answered_at_v0() {
        assert!(matches!(
            decode_request(frame(ApiKey::Fetch, 19, &[])),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let mut f = BytesMut::new();
        f.put_i16(999);
        f.put_i16(0);
        f.put_i32(1);
        assert!(matches!(decode_request(f.freeze()), Err(DecodeError::UnknownApiKey(999))));
        assert!(matches!(decode_request(Bytes::from_static(&[0, 18, 0])), Err(DecodeError::Short)));
        let r = decode_request(frame(ApiKey::ApiVersions, 42, &[])).unwrap();
        assert_eq!(r.version, 0);
        assert!(matches!(r.body, Body::ApiVersionsTooNew));
        assert_eq!(r.header.correlation_id, 7);
    }
}
