//! The answer a cluster-wide request gets from a client that may not make it (`authz`
//! decides who may): each API's own error response, with Kafka's authorisation code at the
//! level Kafka sets it and the reason where the version carries a message.
//!
//! Owns: which response each refused API gets. Does not own: the rule (`authz`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::authz::{self, Authority};

/// The answer to a cluster-wide request (`key`, at `version`) that `authority` may not make;
/// `None` when the request may go ahead, or is not cluster-wide.
pub fn refusal(
    authority: Authority,
    key: ApiKey,
    version: i16,
    kind: &RequestKind,
) -> Option<ResponseKind> {
    let Err(why) = authority.check() else { return None };
    let topic = ResponseError::TopicAuthorizationFailed;
    let group = ResponseError::GroupAuthorizationFailed;
    let response = match kind {
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(super::create_topics::error(r, topic, why))
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(super::delete_topics::error(r, version, topic, why))
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(super::create_partitions::error(r, topic, why))
        }
        // Neither response has a message field.
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(super::delete_groups::error(r, group))
        }
        RequestKind::OffsetDelete(_) => {
            ResponseKind::OffsetDelete(super::offset_delete::error(group))
        }
        RequestKind::AlterClientQuotas(r) => ResponseKind::AlterClientQuotas(
            super::alter_client_quotas::error(r, ResponseError::ClusterAuthorizationFailed, why),
        ),
        _ => return None,
    };
    authz::refused(key, authority);
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::CLUSTER_WIDE;
    use crate::protocol::versions;
    use kafka_protocol::messages::alter_client_quotas_request::{self, OpData};
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use uuid::Uuid;

    fn s(x: &str) -> StrBytes {
        StrBytes::from_string(x.to_string())
    }

    /// One request of each cluster-wide API, naming two of its things (topics, groups, ...).
    fn requests() -> Vec<(ApiKey, i16, RequestKind)> {
        let topics = |names: [&str; 2]| names.map(|n| TopicName(s(n))).to_vec();
        let entry = |client: &str| {
            alter_client_quotas_request::EntryData::default()
                .with_entity(vec![
                    alter_client_quotas_request::EntityData::default()
                        .with_entity_type(s("client-id"))
                        .with_entity_name(Some(s(client))),
                ])
                .with_ops(vec![
                    OpData::default().with_key(s("producer_byte_rate")).with_value(1024.0),
                ])
        };
        vec![
            (
                ApiKey::CreateTopics,
                7,
                RequestKind::CreateTopics(
                    CreateTopicsRequest::default().with_topics(
                        topics(["a", "b"])
                            .into_iter()
                            .map(|n| CreatableTopic::default().with_name(n).with_num_partitions(3))
                            .collect(),
                    ),
                ),
            ),
            (
                ApiKey::DeleteTopics,
                5,
                RequestKind::DeleteTopics(
                    DeleteTopicsRequest::default().with_topic_names(topics(["a", "b"])),
                ),
            ),
            (
                ApiKey::CreatePartitions,
                3,
                RequestKind::CreatePartitions(
                    CreatePartitionsRequest::default().with_topics(
                        topics(["a", "b"])
                            .into_iter()
                            .map(|n| CreatePartitionsTopic::default().with_name(n).with_count(4))
                            .collect(),
                    ),
                ),
            ),
            (
                ApiKey::DeleteGroups,
                2,
                RequestKind::DeleteGroups(
                    DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(s("g1")), GroupId(s("g2"))]),
                ),
            ),
            (
                ApiKey::OffsetDelete,
                0,
                RequestKind::OffsetDelete(
                    OffsetDeleteRequest::default().with_group_id(GroupId(s("g1"))),
                ),
            ),
            (
                ApiKey::AlterClientQuotas,
                1,
                RequestKind::AlterClientQuotas(
                    AlterClientQuotasRequest::default()
                        .with_entries(vec![entry("c1"), entry("c2")]),
                ),
            ),
        ]
    }

    /// (name, code, message) of every part of a refusal.
    fn parts(r: &ResponseKind) -> Vec<(String, i16, Option<String>)> {
        let m = |m: &Option<StrBytes>| m.as_ref().map(|m| m.to_string());
        match r {
            ResponseKind::CreateTopics(r) => {
                { r.topics.iter().map(|t| (t.name.to_string(), t.error_code, m(&t.error_message))) }
                    .collect()
            }
            ResponseKind::DeleteTopics(r) => r
                .responses
                .iter()
                .map(|t| {
                    let name = t.name.as_ref().map_or(String::new(), |n| n.to_string());
                    (name, t.error_code, m(&t.error_message))
                })
                .collect(),
            ResponseKind::CreatePartitions(r) => {
                r.results.iter().map(|t| (t.name.to_string(), t.error_code, m(&t.error_message)))
            }
            .collect(),
            ResponseKind::DeleteGroups(r) => {
                r.results.iter().map(|g| (g.group_id.to_string(), g.error_code, None)).collect()
            }
            ResponseKind::OffsetDelete(r) => vec![(String::new(), r.error_code, None)],
            ResponseKind::AlterClientQuotas(r) => r
                .entries
                .iter()
                .map(|e| {
                    let name =
                        e.entity[0].entity_name.as_ref().map_or(String::new(), |n| n.to_string());
                    (name, e.error_code, m(&e.error_message))
                })
                .collect(),
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn every_cluster_wide_api_is_refused_part_by_part_with_kafkas_code() {
        let requests = requests();
        assert_eq!(
            requests.iter().map(|(k, ..)| *k).collect::<Vec<_>>(),
            CLUSTER_WIDE,
            "one request per cluster-wide api"
        );
        let topic = ResponseError::TopicAuthorizationFailed.code();
        let group = ResponseError::GroupAuthorizationFailed.code();
        let cluster = ResponseError::ClusterAuthorizationFailed.code();
        for authority in [Authority::Disabled, Authority::NotSuperUser] {
            let why = authority.check().unwrap_err().to_string();
            for (key, version, kind) in &requests {
                let r = refusal(authority, *key, *version, kind)
                    .unwrap_or_else(|| panic!("{key:?} not refused"));
                let got = parts(&r);
                let want: Vec<(String, i16, Option<String>)> = match key {
                    ApiKey::CreateTopics | ApiKey::DeleteTopics | ApiKey::CreatePartitions => {
                        ["a", "b"].map(|n| (n.to_string(), topic, Some(why.clone()))).to_vec()
                    }
                    ApiKey::DeleteGroups => {
                        ["g1", "g2"].map(|n| (n.to_string(), group, None)).to_vec()
                    }
                    ApiKey::OffsetDelete => vec![(String::new(), group, None)],
                    ApiKey::AlterClientQuotas => {
                        ["c1", "c2"].map(|n| (n.to_string(), cluster, Some(why.clone()))).to_vec()
                    }
                    _ => unreachable!(),
                };
                assert_eq!(got, want, "{key:?} refused to {authority:?}");
            }
        }
        for authority in [Authority::Granted, Authority::Forwarded] {
            for (key, version, kind) in &requests {
                assert!(refusal(authority, *key, *version, kind).is_none(), "{key:?}");
            }
        }
    }

    #[test]
    fn other_apis_are_never_refused() {
        let metadata = RequestKind::Metadata(MetadataRequest::default());
        assert!(refusal(Authority::Disabled, ApiKey::Metadata, 12, &metadata).is_none());
        let commit = RequestKind::OffsetCommit(OffsetCommitRequest::default());
        assert!(refusal(Authority::NotSuperUser, ApiKey::OffsetCommit, 8, &commit).is_none());
        let describe = RequestKind::DescribeClientQuotas(DescribeClientQuotasRequest::default());
        assert!(refusal(Authority::Disabled, ApiKey::DescribeClientQuotas, 1, &describe).is_none());
    }

    #[test]
    fn a_delete_by_topic_id_is_refused_without_looking_the_id_up() {
        let id = Uuid::new_v4();
        let req = DeleteTopicsRequest::default().with_topics(vec![
            DeleteTopicState::default().with_topic_id(id),
            DeleteTopicState::default().with_name(Some(TopicName(s("named")))),
        ]);
        let Some(ResponseKind::DeleteTopics(r)) = refusal(
            Authority::NotSuperUser,
            ApiKey::DeleteTopics,
            6,
            &RequestKind::DeleteTopics(req),
        ) else {
            panic!()
        };
        let got: Vec<_> = r
            .responses
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id, t.error_code))
            .collect();
        let code = ResponseError::TopicAuthorizationFailed.code();
        assert_eq!(got, vec![(None, id, code), (Some("named".into()), Uuid::nil(), code)]);
    }

    #[test]
    fn refusals_encode_at_every_advertised_version() {
        for (key, _, kind) in requests() {
            let row = versions::SUPPORTED.iter().find(|r| r.key == key).expect("advertised");
            for version in row.min..=row.max {
                let r = refusal(Authority::Disabled, key, version, &kind).expect("refused");
                crate::protocol::encode_response(key, version, 1, &r.into())
                    .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            }
        }
    }
}
