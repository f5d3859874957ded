//! THE table of Kafka APIs kelp serves and the version range of each.
//!
//! This is the only place that says which APIs and versions exist. ApiVersions is built from
//! it, `protocol::decode_request` rejects what it does not list, and `api::dispatch` has one
//! arm per row (a test checks both directions).
//!
//! When adding an API: add the row here, add the `dispatch` arm and `api/<name>.rs`, cover
//! every version in the range with a test, and run `cargo test versions`.

use kafka_protocol::messages::ApiKey;

/// One advertised API and its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supported {
    pub key: ApiKey,
    /// The API's name as Kafka spells it: the `api` label of request metrics.
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
}

impl Supported {
    /// Whether `version` lies in the range.
    pub fn contains(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

const fn row(key: ApiKey, name: &'static str, min: i16, max: i16) -> Supported {
    Supported { key, name, min, max }
}

/// Every API kelp answers, with the versions it implements.
///
/// Every minimum is Kafka 3.9's, so clients written for it keep working (Kafka 4.0 dropped
/// these versions, KIP-896). The wire library decodes only 4.0's: Produce v0-v2 are decoded by
/// `protocol::legacy_produce`, the other old versions by `protocol::legacy`. Produce's minimum
/// must stay 0 in any case: librdkafka disables compression when a broker's Produce range does
/// not start at 0 (KAFKA-18659).
pub const SUPPORTED: &[Supported] = &[
    row(ApiKey::Produce, "Produce", 0, 13),
    row(ApiKey::Fetch, "Fetch", 0, 18),
    row(ApiKey::ListOffsets, "ListOffsets", 0, 10),
    row(ApiKey::Metadata, "Metadata", 0, 13),
    row(ApiKey::ApiVersions, "ApiVersions", 0, 4),
    row(ApiKey::CreateTopics, "CreateTopics", 0, 7),
    row(ApiKey::DeleteTopics, "DeleteTopics", 0, 6),
    row(ApiKey::CreatePartitions, "CreatePartitions", 0, 3),
    row(ApiKey::DescribeConfigs, "DescribeConfigs", 0, 4),
    row(ApiKey::DescribeCluster, "DescribeCluster", 0, 2),
    row(ApiKey::InitProducerId, "InitProducerId", 0, 5),
    row(ApiKey::FindCoordinator, "FindCoordinator", 0, 6),
    row(ApiKey::JoinGroup, "JoinGroup", 0, 9),
    row(ApiKey::SyncGroup, "SyncGroup", 0, 5),
    row(ApiKey::Heartbeat, "Heartbeat", 0, 4),
    row(ApiKey::LeaveGroup, "LeaveGroup", 0, 5),
    // v10 addresses topics by id; kafka-protocol 0.18 decodes OffsetCommit and OffsetFetch
    // requests only up to v9 (its response types go to v10).
    row(ApiKey::OffsetCommit, "OffsetCommit", 0, 9),
    row(ApiKey::OffsetFetch, "OffsetFetch", 0, 9),
    row(ApiKey::DescribeGroups, "DescribeGroups", 0, 6),
    row(ApiKey::ListGroups, "ListGroups", 0, 5),
    row(ApiKey::DeleteGroups, "DeleteGroups", 0, 2),
    row(ApiKey::OffsetDelete, "OffsetDelete", 0, 0),
    // v0 is followed by bare SASL tokens, v1 by SaslAuthenticate (see `session.rs`).
    row(ApiKey::SaslHandshake, "SaslHandshake", 0, 1),
    row(ApiKey::SaslAuthenticate, "SaslAuthenticate", 0, 2),
    row(ApiKey::DescribeClientQuotas, "DescribeClientQuotas", 0, 1),
    row(ApiKey::AlterClientQuotas, "AlterClientQuotas", 0, 1),
];

/// The range kelp serves for `key`, or `None` if kelp does not serve it.
pub fn supported(key: ApiKey) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// `key`'s name for a metrics label: an advertised API's, or "other" (a closed set).
pub fn name(key: ApiKey) -> &'static str {
    supported(key).map_or("other", |s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_api_keys_own() {
        for s in SUPPORTED {
            assert_eq!(s.name, format!("{:?}", s.key));
        }
        assert_eq!(name(ApiKey::CreateAcls), "other");
    }

    #[test]
    fn every_row_lies_within_what_the_wire_library_can_decode() {
        for s in SUPPORTED {
            let lib = s.key.valid_versions();
            assert!(s.min <= s.max, "{:?}", s.key);
            assert!(s.max <= lib.max, "{:?} max {} > library {}", s.key, s.max, lib.max);
            // Older versions are decoded by kelp itself (`protocol::legacy` checks that it
            // has a layout for each).
            let _ = lib.min;
        }
    }

    /// The library's `valid_versions` can claim more than its decoder accepts
    /// (InitProducerId v6 in 0.18): decode an empty-ish body at every advertised version and
    /// make sure failures are about the bytes, not the version.
    #[test]
    fn the_library_decodes_every_advertised_version() {
        use kafka_protocol::messages::RequestKind;
        for s in SUPPORTED {
            for v in s.min..=s.max {
                if crate::protocol::legacy::is_legacy(s.key, v) {
                    continue;
                }
                let mut junk = bytes::Bytes::from(vec![0u8; 64]);
                if let Err(e) = RequestKind::decode(s.key, &mut junk, v) {
                    assert!(
                        !e.to_string().contains("version not supported"),
                        "{:?} v{v}: {e}",
                        s.key
                    );
                }
            }
        }
    }

    #[test]
    fn no_api_is_listed_twice() {
        for (i, a) in SUPPORTED.iter().enumerate() {
            assert!(SUPPORTED[i + 1..].iter().all(|b| b.key != a.key), "{:?}", a.key);
        }
    }

    #[test]
    fn produce_range_starts_at_zero() {
        assert_eq!(supported(ApiKey::Produce).map(|s| s.min), Some(0));
    }

    #[test]
    fn docs_list_the_same_table() {
        let doc = include_str!("../../docs/protocol.md");
        for s in SUPPORTED {
            let row = format!("| {} | {} | {}–{} |", s.name, s.key as i16, s.min, s.max);
            assert!(doc.contains(&row), "docs/protocol.md lacks {row}");
        }
        let rows = doc
            .lines()
            .filter(|l| l.starts_with("| ") && l.ends_with(" |") && !l.starts_with("| API"))
            .count();
        assert_eq!(rows, SUPPORTED.len(), "docs/protocol.md lists other APIs too");
    }

    #[test]
    fn versions_outside_the_range_are_not_supported() {
        let is_supported = |k, v| supported(k).is_some_and(|s| s.contains(v));
        assert!(is_supported(ApiKey::Fetch, 0));
        assert!(!is_supported(ApiKey::Fetch, 19));
        assert!(!is_supported(ApiKey::SaslHandshake, 2));
        assert!(!is_supported(ApiKey::CreateAcls, 0));
    }
}
