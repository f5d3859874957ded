//! Who may change the cluster as a whole: the rule, the list of APIs it governs, and the
//! refusal each of them gets.
//!
//! The rule is Kafka's, with super-users as the only grant (kelp has no ACLs):
//!
//! 1. `KELP_ADMIN_APIS=false`: nobody, through this kelp, SASL or not, super-users included.
//! 2. Otherwise, SASL off: everyone, as on a Kafka broker without an authorizer.
//! 3. SASL on: the users marked `super-user: true` in the users file (Kafka's `super.users`).
//!
//! Cluster-wide are the APIs in [`CLUSTER_WIDE`], and Metadata's auto-creation of a missing
//! topic: Kafka grants auto-creation only with CREATE on the cluster or on the topic, the
//! right CreateTopics needs, so kelp grants it by the same rule (`api::metadata`). Everything
//! else (producing, fetching, the group protocol, committing and fetching offsets, the
//! describe and list APIs) is open to every client that is logged in.
//!
//! Refusals carry Kafka's code at the level Kafka sets it (`KafkaApis`):
//! TOPIC_AUTHORIZATION_FAILED per topic (CreateTopics, DeleteTopics, CreatePartitions, and
//! per topic Metadata would have created), GROUP_AUTHORIZATION_FAILED per group (DeleteGroups)
//! or for the request's one group (OffsetDelete, top-level), CLUSTER_AUTHORIZATION_FAILED per
//! entry (AlterClientQuotas); with a message where the version has the field. A refusal is
//! built from the request alone: nothing is read from or written to SeaweedFS. For
//! DeleteTopics by id (v6+) that means the topic's name is not looked up, and an unknown id
//! is refused too rather than answered UNKNOWN_TOPIC_ID.
//!
//! Where it is decided: `connection` asks the `Session` for each request's [`Authority`] and
//! passes it down. `api::dispatch` refuses before any handler runs, and `routing` refuses
//! before it forwards a group request to the group's owner, so the kelp the application talks
//! to decides, under its own settings. A request that arrives over the peer link carries
//! [`Authority::Forwarded`]: the kelp that forwarded it decided already.
//!
//! Owns: the rule, [`CLUSTER_WIDE`] and the refusals. Does not own: who the user is
//! (`session`, `sasl`), or what the APIs do (`api`).
//!
//! When adding a cluster-wide API: add its key to [`CLUSTER_WIDE`] and its arm to
//! [`refusal`] (a test checks that the two agree), and document it in docs/security.md.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::api;
use crate::protocol::versions;

/// The APIs that change the cluster as a whole, each refused by [`refusal`] to a client
/// without the right. Metadata is not among them: only its auto-creation is refused.
pub const CLUSTER_WIDE: &[ApiKey] = &[
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::AlterClientQuotas,
];

/// What the client behind one request may do to the cluster as a whole. Small and `Copy`:
/// the handlers get this, never the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// It may: SASL is off, or it logged in as a super-user.
    Granted,
    /// It came over the peer link: the kelp that forwarded it decided already.
    Forwarded,
    /// It may not: this kelp serves the cluster-wide APIs to no one (`KELP_ADMIN_APIS`).
    Disabled,
    /// It may not: SASL is on and its user is not a super-user.
    NotSuperUser,
}

/// Who is asking, as far as the rule cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// SASL is off: the client is not known, as to a Kafka broker without an authorizer.
    Anonymous,
    /// SASL is on; `super_user` as the users file says now (false before logging in).
    User { super_user: bool },
}

impl Authority {
    /// THE rule: `admin_apis` is `KELP_ADMIN_APIS`.
    pub fn decide(admin_apis: bool, caller: Caller) -> Authority {
        match (admin_apis, caller) {
            (false, _) => Authority::Disabled,
            (true, Caller::Anonymous | Caller::User { super_user: true }) => Authority::Granted,
            (true, Caller::User { super_user: false }) => Authority::NotSuperUser,
        }
    }

    /// `Ok` when the client may change the cluster; otherwise the reason, as told to it.
    pub fn check(self) -> Result<(), &'static str> {
        match self {
            Authority::Granted | Authority::Forwarded => Ok(()),
            Authority::Disabled => Err("cluster-wide APIs are turned off on this kelp"),
            Authority::NotSuperUser => Err("only super-users may change the cluster"),
        }
    }

    /// Whether the client may change the cluster.
    pub fn may_alter_cluster(self) -> bool {
        self.check().is_ok()
    }
}

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
    let response =
        match kind {
            RequestKind::CreateTopics(r) => {
                ResponseKind::CreateTopics(api::create_topics::error(r, topic, why))
            }
            RequestKind::DeleteTopics(r) => {
                ResponseKind::DeleteTopics(api::delete_topics::error(r, version, topic, why))
            }
            RequestKind::CreatePartitions(r) => {
                ResponseKind::CreatePartitions(api::create_partitions::error(r, topic, why))
            }
            // Neither response has a message field.
            RequestKind::DeleteGroups(r) => {
                ResponseKind::DeleteGroups(api::delete_groups::error(r, group))
            }
            RequestKind::OffsetDelete(_) => {
                ResponseKind::OffsetDelete(api::offset_delete::error(group))
            }
            RequestKind::AlterClientQuotas(r) => ResponseKind::AlterClientQuotas(
                alter_client_quotas(r, ResponseError::ClusterAuthorizationFailed, why),
            ),
            _ => return None,
        };
    refused(key, authority);
    Some(response)
}

/// Count and log one refused request (for Metadata: one that asked to create topics).
pub fn refused(key: ApiKey, authority: Authority) {
    let api = versions::name(key);
    tracing::debug!(api, ?authority, "refused: no right to change the cluster");
    crate::metrics::global().observe_refusal(api);
}

/// Every entry of an AlterClientQuotas request failed with `code`: each echoes its entity,
/// as Kafka's `AlterClientQuotasRequest::getErrorResponse` does.
fn alter_client_quotas(
    req: &AlterClientQuotasRequest,
    code: ResponseError,
    message: &str,
) -> AlterClientQuotasResponse {
    let entries = req
        .entries
        .iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|d| {
                    EntityData::default()
                        .with_entity_type(d.entity_type.clone())
                        .with_entity_name(d.entity_name.clone())
                })
                .collect();
            EntryData::default()
                .with_entity(entity)
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string())))
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::alter_client_quotas_request::{self, OpData};
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::*;
    use uuid::Uuid;

    fn s(x: &str) -> StrBytes {
        StrBytes::from_string(x.to_string())
    }

    #[test]
    fn only_super_users_may_and_the_switch_stops_everyone() {
        use Authority::*;
        use Caller::*;
        let table = [
            (true, Anonymous, Granted),
            (true, User { super_user: true }, Granted),
            (true, User { super_user: false }, NotSuperUser),
            (false, Anonymous, Disabled),
            (false, User { super_user: true }, Disabled),
            (false, User { super_user: false }, Disabled),
        ];
        for (admin_apis, caller, want) in table {
            let got = Authority::decide(admin_apis, caller);
            assert_eq!(got, want, "admin_apis={admin_apis} {caller:?}");
            assert_eq!(got.may_alter_cluster(), want == Granted);
        }
        assert!(Forwarded.may_alter_cluster(), "decided by the kelp that forwarded it");
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
                let mut buf = bytes::BytesMut::new();
                r.encode(&mut buf, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
            }
        }
    }
}
