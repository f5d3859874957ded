//! Versions Kafka 3.9 served that the wire library no longer knows (Kafka 4.0 removed them,
//! KIP-896), for every API but Produce (`legacy_produce`).
//!
//! An old request is decoded into the library's request type: the fields it has are set, the
//! others keep the defaults that give its old meaning. Handlers see the client's version and
//! answer with the library's response type, which is written here in the old layout. Where an
//! old layout equals the library's oldest version, the library reads or writes it at that
//! version ([`library_version`]); a request forwarded to another kelp travels at that version
//! too, since the library must encode it.
//!
//! Old layouts are non-flexible: request header v1, response header v0.
//!
//! When lowering an API's minimum in `versions`: add its arms to [`decode_request`] and
//! [`encode_response`], with a file here for any layout the library version does not share,
//! and a fuzz target in `fuzzing::legacy`.

mod create_topics;
mod delete_topics;
mod describe_configs;
mod fetch;
mod list_offsets;
mod offset_commit;
pub mod wire;

use anyhow::bail;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// Whether `version` of `key` is older than anything the wire library decodes.
pub fn is_legacy(key: ApiKey, version: i16) -> bool {
    version < key.valid_versions().min
}

/// The version at which the wire library reads and writes what `version` of `key` means: the
/// version itself, or for a legacy one the library's oldest.
pub fn library_version(key: ApiKey, version: i16) -> i16 {
    version.max(key.valid_versions().min)
}

/// Decode the body of a legacy request (`is_legacy(key, version)`; Produce is not served here).
pub fn decode_request(key: ApiKey, version: i16, buf: &mut Bytes) -> anyhow::Result<RequestKind> {
    let at_library = |buf: &mut Bytes| RequestKind::decode(key, buf, library_version(key, version));
    Ok(match (key, version) {
        (ApiKey::Fetch, 0..=3) => RequestKind::Fetch(fetch::decode(buf, version)?),
        (ApiKey::ListOffsets, 0) => RequestKind::ListOffsets(list_offsets::decode(buf)?),
        (ApiKey::OffsetCommit, 0..=1) => {
            RequestKind::OffsetCommit(offset_commit::decode(buf, version)?)
        }
        (ApiKey::DescribeConfigs, 0) => {
            RequestKind::DescribeConfigs(describe_configs::decode(buf)?)
        }
        (ApiKey::CreateTopics, 0) => RequestKind::CreateTopics(create_topics::decode_v0(buf)?),
        // v1 requests are v2's layout, DeleteTopics v0's and OffsetFetch v0's are v1's.
        (ApiKey::CreateTopics, 1) | (ApiKey::DeleteTopics, 0) | (ApiKey::OffsetFetch, 0) => {
            let kind = at_library(buf)?;
            wire::end(buf)?;
            kind
        }
        _ => bail!("{key:?} v{version} has no legacy layout"),
    })
}

/// Write the body of a response to a legacy request.
pub fn encode_response(
    response: &ResponseKind,
    key: ApiKey,
    version: i16,
    buf: &mut BytesMut,
) -> anyhow::Result<()> {
    match (response, version) {
        (ResponseKind::Fetch(r), 0..=3) => fetch::encode_response(r, version, buf),
        (ResponseKind::ListOffsets(r), 0) => list_offsets::encode_response(r, buf),
        (ResponseKind::DescribeConfigs(r), 0) => describe_configs::encode_response(r, buf),
        (ResponseKind::CreateTopics(r), 0..=1) => create_topics::encode_response(r, version, buf),
        (ResponseKind::DeleteTopics(r), 0) => delete_topics::encode_response(r, buf),
        // v0-v1 answers are v2's layout (OffsetCommit), v0's are v1's (OffsetFetch).
        (ResponseKind::OffsetCommit(r), 0..=1) => Ok(r.encode(buf, library_version(key, version))?),
        (ResponseKind::OffsetFetch(r), 0) => Ok(r.encode(buf, library_version(key, version))?),
        _ => bail!("no legacy layout for a {key:?} v{version} response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions::SUPPORTED;

    /// Every advertised version the library does not decode has a layout here, and no
    /// layout here is for a version the library decodes.
    #[test]
    fn every_advertised_legacy_version_has_a_decoder() {
        for s in SUPPORTED {
            if s.key == ApiKey::Produce {
                continue;
            }
            for v in s.min..=s.max {
                let r = decode_request(s.key, v, &mut Bytes::new());
                let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
                assert_eq!(
                    msg.contains("no legacy layout"),
                    !is_legacy(s.key, v),
                    "{:?} v{v}: {msg}",
                    s.key
                );
            }
        }
    }
}
