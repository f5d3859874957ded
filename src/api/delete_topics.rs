//! DeleteTopics: by name (v0-v5) or by name or id (v6+).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::ctx::Ctx;
use crate::error::{ApiKind, Error};

pub async fn handle(ctx: &Ctx, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = match name {
            Some(n) => Some(n),
            None => ctx.topics.name_of(id).await.ok().flatten(),
        };
        // The id of the incarnation about to be deleted (a re-created topic gets another).
        let id = match name.as_deref() {
            Some(n) => ctx.topics.id(n).await,
            None => id,
        };
        let result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        let outcome = match &name {
            None => Err(ResponseError::UnknownTopicId),
            Some(n) => ctx.seaweed.delete_topic(n).await.map_err(|e| match e {
                Error::Kafka(code) => code,
                e => {
                    tracing::warn!(error = %e, "deleting a topic failed");
                    e.code(ApiKind::Data)
                }
            }),
        };
        if let (Some(n), Ok(incarnation)) = (&name, &outcome) {
            // Kafka drops a deleted topic's committed offsets in every group.
            ctx.groups.forget_topic(n, *incarnation).await;
        }
        responses.push(match outcome {
            Ok(_) => result,
            Err(code) => result.with_error_code(code.code()),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Every topic of the request failed with `code` and `message` (refused, say), each named
/// as the request named it (v6+: by name, by id or both), nothing looked up or deleted.
pub fn error(
    req: &DeleteTopicsRequest,
    version: i16,
    code: ResponseError,
    message: &str,
) -> DeleteTopicsResponse {
    let named: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics.iter().map(|t| (t.name.clone(), t.topic_id)).collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.clone()), Uuid::nil())).collect()
    };
    let responses = named
        .into_iter()
        .map(|(name, id)| {
            DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(id)
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string())))
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
