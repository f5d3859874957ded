//! Metadata: kelp is the only broker and leads every partition; topics come from SeaweedFS.
//! A missing topic is created when the request allows it, kelp is configured to, and the
//! client may change the cluster (`authz`); a client that may not gets
//! TOPIC_AUTHORIZATION_FAILED for that topic, as from Kafka (auto-creation needs CREATE).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::describe_cluster::AUTHORIZED_OPERATIONS_OMITTED;
use crate::authz::{self, Authority};
use crate::ctx::Ctx;
use crate::protocol::topic_name;
use crate::session::Session;

/// The answer; `None` (and the session set to close the connection) when the list of all
/// topics could not be read.
///
/// A Kafka broker answers from its in-memory metadata and never fails this. kelp reads
/// SeaweedFS, which can be unreachable, and Metadata v0–v12 has no field for "the list
/// failed": a response with no topics reads as "there are no topics", and a regex subscriber
/// would revoke every partition it has. So kelp sends nothing and closes the connection; the
/// client treats that as a failed request, reconnects and asks again (librdkafka and the Java
/// client both retry Metadata after a disconnect), keeping what it knew meanwhile.
pub async fn handle(
    ctx: &Ctx,
    session: &mut Session,
    version: i16,
    authority: Authority,
    req: MetadataRequest,
) -> Option<MetadataResponse> {
    let me = BrokerId(ctx.config.node_id);
    // v0: an empty list means "all topics"; v1+: null means all, empty means none.
    let wanted: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => {
            Some(t.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect())
        }
    };
    // Before v4 a Metadata request always allowed auto-creation.
    let allow_create =
        ctx.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let create = allow_create && authority.may_alter_cluster();
    let mut refused = false;
    let default = ctx.config.default_partitions as u32;

    let mut topics = Vec::new();
    match wanted {
        None => match ctx.topics.list().await {
            Ok(all) => {
                for (name, n) in all {
                    topics.push(topic(ctx, me, &name, Ok(n)).await);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing topics failed; closing the connection");
                session.close_after_reply("a failed topic listing");
                return None;
            }
        },
        Some(list) => {
            for (name, id) in list {
                let name = match name {
                    Some(n) => n,
                    None => match ctx.topics.name_of(id).await {
                        Ok(Some(n)) => n,
                        Ok(None) => {
                            topics.push(error_topic(None, id, ResponseError::UnknownTopicId));
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "resolving a topic id failed");
                            topics.push(error_topic(None, id, ResponseError::LeaderNotAvailable));
                            continue;
                        }
                    },
                };
                if !topic_name::is_valid(&name) {
                    topics.push(error_topic(
                        Some(&name),
                        Uuid::nil(),
                        ResponseError::InvalidTopicException,
                    ));
                    continue;
                }
                let r = match ctx.topics.ensure(&name, create, default).await {
                    Ok(Some(n)) => Ok(n),
                    // Missing, and this client may not create it: Kafka's answer when CREATE
                    // on the cluster and on the topic is denied.
                    Ok(None) if allow_create && !create => {
                        refused = true;
                        Err(ResponseError::TopicAuthorizationFailed)
                    }
                    Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
                    Err(e) => {
                        tracing::warn!(error = %e, "topic lookup failed");
                        Err(ResponseError::LeaderNotAvailable)
                    }
                };
                topics.push(topic(ctx, me, &name, r).await);
            }
        }
    }
    if refused {
        authz::refused(ApiKey::Metadata, authority);
    }
    Some(base(ctx, me).with_topics(topics))
}

fn base(ctx: &Ctx, me: BrokerId) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(me)
                .with_host(ctx.host())
                .with_port(ctx.advertised_port),
        ])
        .with_cluster_id(Some(StrBytes::from_string(ctx.cluster_id.clone())))
        .with_controller_id(me)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn error_topic(name: Option<&str>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

async fn topic(
    ctx: &Ctx,
    me: BrokerId,
    name: &str,
    partitions: Result<u32, ResponseError>,
) -> MetadataResponseTopic {
    let n = match partitions {
        Ok(n) => n,
        Err(code) => return error_topic(Some(name), Uuid::nil(), code),
    };
    let partitions = (0..n as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(me)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(ctx.topics.id(name).await)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
