//! KIP-219 facts: which request versions' clients back off by themselves on
//! `throttle_time_ms`, and where that field sits in each response.
//!
//! A client at such a version gets its response at once and kelp stops reading the
//! connection until the throttle ends; an older one gets the response only after the throttle
//! (its only signal). The versions are those of Kafka's `AbstractResponse.shouldClientThrottle`.
//!
//! Owns: those per-API facts. Does not own: deciding a throttle (`quota::conn`) or holding the
//! connection (`connection`).
//!
//! When adding an API to `protocol::versions`: add its row to `CLIENT_THROTTLES_SINCE` and an
//! arm to `set_throttle_time` if its response has the field (a test checks the rows).

use kafka_protocol::messages::{ApiKey, ResponseKind};

use crate::protocol::Reply;

/// Per API, the first version whose client honours `throttle_time_ms`; `None`: no version
/// does (Kafka's default; it applies to DescribeCluster and the KIP-546 APIs too).
const CLIENT_THROTTLES_SINCE: &[(ApiKey, Option<i16>)] = &[
    (ApiKey::Produce, Some(6)),
    (ApiKey::Fetch, Some(8)),
    (ApiKey::ListOffsets, Some(3)),
    (ApiKey::Metadata, Some(6)),
    (ApiKey::ApiVersions, Some(2)),
    (ApiKey::CreateTopics, Some(3)),
    (ApiKey::DeleteTopics, Some(2)),
    (ApiKey::CreatePartitions, Some(1)),
    (ApiKey::DescribeConfigs, Some(2)),
    (ApiKey::AlterConfigs, Some(1)),
    (ApiKey::IncrementalAlterConfigs, Some(0)),
    (ApiKey::DescribeCluster, None),
    (ApiKey::InitProducerId, Some(1)),
    (ApiKey::FindCoordinator, Some(2)),
    (ApiKey::JoinGroup, Some(3)),
    (ApiKey::SyncGroup, Some(2)),
    (ApiKey::Heartbeat, Some(2)),
    (ApiKey::LeaveGroup, Some(2)),
    (ApiKey::OffsetCommit, Some(4)),
    (ApiKey::OffsetFetch, Some(4)),
    (ApiKey::DescribeGroups, Some(2)),
    (ApiKey::ListGroups, Some(2)),
    (ApiKey::DeleteGroups, Some(1)),
    (ApiKey::OffsetDelete, Some(0)),
    (ApiKey::DescribeClientQuotas, None),
    (ApiKey::AlterClientQuotas, None),
    (ApiKey::SaslHandshake, None),
    (ApiKey::SaslAuthenticate, None),
];

/// Whether a client sending `key` at `version` throttles itself (then kelp answers at once).
pub fn client_throttles(key: ApiKey, version: i16) -> bool {
    CLIENT_THROTTLES_SINCE
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, since)| *since)
        .is_some_and(|since| version >= since)
}

/// Set `throttle_time_ms` in a response (versions without the field leave it out on the wire).
pub fn set_throttle_time(reply: &mut Reply, ms: i32) {
    let kind = match reply {
        Reply::LegacyProduce(r) => {
            r.throttle_time_ms = ms;
            return;
        }
        Reply::Kind(kind) => kind,
    };
    match kind {
        ResponseKind::Produce(r) => r.throttle_time_ms = ms,
        ResponseKind::Fetch(r) => r.throttle_time_ms = ms,
        ResponseKind::ListOffsets(r) => r.throttle_time_ms = ms,
        ResponseKind::Metadata(r) => r.throttle_time_ms = ms,
        ResponseKind::ApiVersions(r) => r.throttle_time_ms = ms,
        ResponseKind::CreateTopics(r) => r.throttle_time_ms = ms,
        ResponseKind::DeleteTopics(r) => r.throttle_time_ms = ms,
        ResponseKind::CreatePartitions(r) => r.throttle_time_ms = ms,
        ResponseKind::DescribeConfigs(r) => r.throttle_time_ms = ms,
        ResponseKind::AlterConfigs(r) => r.throttle_time_ms = ms,
        ResponseKind::IncrementalAlterConfigs(r) => r.throttle_time_ms = ms,
        ResponseKind::DescribeCluster(r) => r.throttle_time_ms = ms,
        ResponseKind::InitProducerId(r) => r.throttle_time_ms = ms,
        ResponseKind::FindCoordinator(r) => r.throttle_time_ms = ms,
        ResponseKind::JoinGroup(r) => r.throttle_time_ms = ms,
        ResponseKind::SyncGroup(r) => r.throttle_time_ms = ms,
        ResponseKind::Heartbeat(r) => r.throttle_time_ms = ms,
        ResponseKind::LeaveGroup(r) => r.throttle_time_ms = ms,
        ResponseKind::OffsetCommit(r) => r.throttle_time_ms = ms,
        ResponseKind::OffsetFetch(r) => r.throttle_time_ms = ms,
        ResponseKind::DescribeGroups(r) => r.throttle_time_ms = ms,
        ResponseKind::ListGroups(r) => r.throttle_time_ms = ms,
        ResponseKind::DeleteGroups(r) => r.throttle_time_ms = ms,
        ResponseKind::OffsetDelete(r) => r.throttle_time_ms = ms,
        ResponseKind::DescribeClientQuotas(r) => r.throttle_time_ms = ms,
        ResponseKind::AlterClientQuotas(r) => r.throttle_time_ms = ms,
        // No throttle field: SaslHandshake, SaslAuthenticate (exempt from quotas anyway).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::versions::SUPPORTED;

    #[test]
    fn every_advertised_api_has_a_row() {
        for s in SUPPORTED {
            assert!(
                CLIENT_THROTTLES_SINCE.iter().any(|(k, _)| *k == s.key),
                "{:?} has no KIP-219 row",
                s.key
            );
        }
    }

    #[test]
    fn kip219_boundaries() {
        assert!(!client_throttles(ApiKey::Produce, 5));
        assert!(client_throttles(ApiKey::Produce, 6));
        assert!(!client_throttles(ApiKey::Fetch, 7));
        assert!(client_throttles(ApiKey::Fetch, 8));
        assert!(client_throttles(ApiKey::OffsetDelete, 0));
        assert!(!client_throttles(ApiKey::DescribeClientQuotas, 1));
    }

    #[test]
    fn throttle_time_lands_in_the_response() {
        let mut r = Reply::Kind(ResponseKind::Produce(Default::default()));
        set_throttle_time(&mut r, 42);
        let Reply::Kind(ResponseKind::Produce(p)) = r else { panic!() };
        assert_eq!(p.throttle_time_ms, 42);
    }
}
