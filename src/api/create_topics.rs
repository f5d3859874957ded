//! CreateTopics: one SeaweedFS topic per Kafka topic. Replication and replica assignment
//! belong to SeaweedFS, so a replication factor is accepted and reported but not applied.
//! The topic's configs are checked (`topic_config`: INVALID_CONFIG for an unknown name or a
//! value kelp cannot honour) and stored in the filer once the topic exists; v5+ answers
//! report every config of the new topic, as DescribeConfigs would.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::{ApiKind, Error};
use crate::protocol::topic_name;
use crate::seaweed::layout;
use crate::topic_config::{self, Configs};

/// Most partitions one topic may have: SeaweedFS's limit (every partition is a slice of its
/// partition ring), kept in `seaweed::layout`.
pub const MAX_PARTITIONS: i32 = layout::MAX_PARTITIONS as i32;

pub async fn handle(ctx: &Ctx, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let partitions =
            if t.num_partitions == -1 { ctx.config.default_partitions } else { t.num_partitions };
        let configs = topic_config::check_all(
            t.configs.iter().map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
        );
        let outcome = if !topic_name::is_valid(&name) {
            Err((
                ResponseError::InvalidTopicException,
                format!("topic names are 1-{} characters of [a-zA-Z0-9._-]", topic_name::MAX_LEN),
            ))
        } else if let Err(refused) = partition_count(partitions) {
            Err(refused)
        } else if !t.assignments.is_empty() {
            Err((
                ResponseError::InvalidReplicaAssignment,
                "SeaweedFS places partitions itself".to_string(),
            ))
        } else {
            match configs {
                Err(refused) => Err((refused.code, refused.message)),
                Ok(configs) => {
                    create(ctx, &name, partitions as u32, &configs, req.validate_only).await
                }
            }
        };
        let result = CreatableTopicResult::default()
            .with_name(t.name)
            .with_topic_id(ctx.topics.id(&name).await)
            .with_num_partitions(partitions)
            .with_replication_factor(if t.replication_factor == -1 {
                1
            } else {
                t.replication_factor
            });
        results.push(match outcome {
            // Kafka leaves the message null on success (the library's default is empty); the
            // configs field exists from v5 on.
            Ok(configs) if version >= 5 => {
                result.with_error_message(None).with_configs(Some(reported(ctx, &configs)))
            }
            Ok(_) => result.with_error_message(None),
            Err((code, msg)) => result
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// A topic's partition count must be at least 1 and at most SeaweedFS's limit; Kafka answers
/// INVALID_PARTITIONS for a count it cannot create.
pub fn partition_count(partitions: i32) -> Result<(), (ResponseError, String)> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        return Ok(());
    }
    Err((
        ResponseError::InvalidPartitions,
        format!(
            "partitions must be between 1 and {MAX_PARTITIONS}, the most a SeaweedFS topic can have"
        ),
    ))
}

/// Every topic of the request failed with `code` and `message` (refused, say), nothing
/// created.
pub fn error(
    req: &CreateTopicsRequest,
    code: ResponseError,
    message: &str,
) -> CreateTopicsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string())))
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The configs of a new topic as the v5+ answer reports them.
fn reported(ctx: &Ctx, configs: &Configs) -> Vec<CreatableTopicConfigs> {
    topic_config::describe(configs, ctx.config.max_message_bytes)
        .into_iter()
        .map(|d| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(d.def.name))
                .with_value(Some(StrBytes::from_string(d.value)))
                .with_read_only(false)
                .with_config_source(d.source)
        })
        .collect()
}

/// Create the topic, then store its configs (also when it has none: that clears what a
/// deleted topic of the same name may have left). A topic whose configs could not be stored
/// is deleted again, so a topic never exists without the configs it was created with.
async fn create(
    ctx: &Ctx,
    name: &str,
    partitions: u32,
    configs: &Configs,
    validate_only: bool,
) -> Result<Configs, (ResponseError, String)> {
    if validate_only {
        let exists = ctx.topics.partitions(name).await.map_err(upstream)?;
        if exists.is_some() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        return Ok(configs.clone());
    }
    // Creating looks the topic up afresh (not in this kelp's layout cache), so a topic just
    // deleted through another kelp can be created again at once.
    match ctx.seaweed.create_topic(name, partitions).await {
        Ok(()) => {}
        Err(Error::Kafka(ResponseError::TopicAlreadyExists)) => {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        Err(e) => return Err(upstream(e)),
    }
    if let Err(e) = ctx.topic_configs.write(name, configs).await {
        if let Err(undo) = ctx.seaweed.delete_topic(name).await {
            tracing::warn!(error = %undo, topic = name, "deleting a topic whose configs could not be stored failed");
        }
        return Err(upstream(e));
    }
    Ok(configs.clone())
}

fn upstream(e: Error) -> (ResponseError, String) {
    tracing::warn!(error = %e, "creating a topic failed");
    (e.code(ApiKind::Data), "SeaweedFS did not answer; retry".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_count_above_seaweedfs_limit_is_invalid_partitions() {
        assert_eq!(MAX_PARTITIONS, 2520);
        assert!(partition_count(1).is_ok());
        assert!(partition_count(MAX_PARTITIONS).is_ok());
        for n in [0, -2, MAX_PARTITIONS + 1, 4096] {
            let (code, msg) = partition_count(n).unwrap_err();
            assert_eq!(code, ResponseError::InvalidPartitions, "{n}");
            assert!(msg.contains("2520") && msg.contains("SeaweedFS"), "{msg}");
        }
    }
}
