//! CreateTopics: one SeaweedFS topic per Kafka topic. Replication and replica assignment
//! belong to SeaweedFS, so a replication factor is accepted and reported but not applied.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::{ApiKind, Error};
use crate::protocol::topic_name;
use crate::seaweed::layout;

/// Most partitions one topic may have: SeaweedFS's limit (every partition is a slice of its
/// partition ring), kept in `seaweed::layout`.
pub const MAX_PARTITIONS: i32 = layout::MAX_PARTITIONS as i32;

pub async fn handle(ctx: &Ctx, _version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let partitions =
            if t.num_partitions == -1 { ctx.config.default_partitions } else { t.num_partitions };
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
            create(ctx, &name, partitions as u32, req.validate_only).await
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
            // Kafka leaves the message null on success (the library's default is empty).
            Ok(()) => result.with_error_message(None),
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

async fn create(
    ctx: &Ctx,
    name: &str,
    partitions: u32,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if validate_only {
        let exists = ctx.topics.partitions(name).await.map_err(upstream)?;
        if exists.is_some() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        return Ok(());
    }
    // Creating looks the topic up afresh (not in this kelp's layout cache), so a topic just
    // deleted through another kelp can be created again at once.
    match ctx.seaweed.create_topic(name, partitions).await {
        Ok(()) => Ok(()),
        Err(Error::Kafka(ResponseError::TopicAlreadyExists)) => {
            Err((ResponseError::TopicAlreadyExists, format!("topic '{name}' already exists")))
        }
        Err(e) => Err(upstream(e)),
    }
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
